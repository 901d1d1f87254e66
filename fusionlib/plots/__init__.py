"""Matplotlib figures for the notebooks and the report; every one is importable from here.

- :mod:`.evaluation`: evaluation and data figures (confusion matrices, QWK, paired
  differences, verdict intervals, reliability, class mix, sample images).
- :mod:`.weights`: what the fusion head learned (weight heatmaps, RF share, influence,
  training curve).
- :mod:`.heat`: heatmaps as coloured HTML tables (per-fold weights, no figure).
- :mod:`.figures`: what every figure shares: pyplot-free figures, colours, PNG, ``<img>``
  with alt text, notebook display.
"""

from .evaluation import (class_mix, confusion_matrices, confusion_matrix, paired_differences,
                         qwk_comparison, reliability_diagram, sample_thermal_maps,
                         verdict_intervals)
from .figures import figure_html, show_figure, to_base64_png
from .heat import NOTEBOOK_LAYOUT, heatmap_html, weight_tables_html
from .weights import (FIXED_CLINICAL_SHARE, clinical_share, fusion_weight_heatmaps,
                      influence_summary, training_curve)

__all__ = ["confusion_matrix", "confusion_matrices", "qwk_comparison", "paired_differences",
           "verdict_intervals", "influence_summary",
           "reliability_diagram", "class_mix", "sample_thermal_maps", "fusion_weight_heatmaps",
           "clinical_share", "training_curve", "FIXED_CLINICAL_SHARE", "to_base64_png", "figure_html",
           "show_figure", "heatmap_html", "weight_tables_html", "NOTEBOOK_LAYOUT"]
