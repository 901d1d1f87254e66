"""The cross-run report: finished runs tabulated, compared with ``fixed`` and rendered as HTML.

- :mod:`fusionlib.results` reads the run folders (:func:`load_runs`, :class:`Run`);
- :mod:`.tables`: the runs, paired-comparison, calibration, learned-weight and provenance
  tables (their metric columns from :data:`fusionlib.results.METRICS`; the bootstrap
  statistics from :mod:`fusionlib.metrics`);
- :mod:`.verdict`, :mod:`.conclusions`, :mod:`.planner`: the verdict table (each variant
  minus fixed over seeds: power, equivalence, decision agreement), its answers in words, and
  the planner of a study that would make them conclusive;
- :mod:`.html`: HTML tables, figures and banners, and :func:`build_report`, which executes
  ``notebooks/report.ipynb`` and converts it to one self-contained page.

The names below are what the report notebook, the command line and the tests use.
"""

from ..metrics import verdict_text
from ..results import (FIXED, PROBA_COLUMNS, Run, dropped_images_count, dropped_images_line,
                       load_runs)
from .html import (REPORT_CSS, REPORT_NOTEBOOK, build_report, figure_html, head_warning_banner,
                   html_exporter, html_table, left_out_html, notebook_to_html, run_links,
                   synthetic_banner)
from .tables import (PAIRED_COLUMNS, SHARE_NOT_BETTER, calibration_table, fmt,
                     paired_comparisons, paired_side_by_side, provenance_table, rf_share_table,
                     runs_table, runs_table_columns)
from .conclusions import AGREEMENT_NOTE, ConclusionSettings
from .verdict import (VERDICT_COLUMNS, plan_display, verdict_display, verdict_sentences,
                      verdict_table)

__all__ = ["verdict_text", "FIXED", "PROBA_COLUMNS", "Run", "dropped_images_count",
           "dropped_images_line", "load_runs", "REPORT_CSS", "REPORT_NOTEBOOK", "build_report",
           "figure_html", "head_warning_banner", "html_exporter", "html_table", "left_out_html",
           "notebook_to_html", "run_links", "synthetic_banner", "PAIRED_COLUMNS",
           "SHARE_NOT_BETTER", "calibration_table", "fmt", "paired_comparisons",
           "paired_side_by_side", "provenance_table", "rf_share_table", "runs_table",
           "runs_table_columns", "VERDICT_COLUMNS", "verdict_sentences", "verdict_table",
           "verdict_display", "plan_display", "AGREEMENT_NOTE", "ConclusionSettings"]
