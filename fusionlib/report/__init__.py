"""The cross-run report: finished runs tabulated, compared with ``fixed`` and rendered as HTML.

- :mod:`fusionlib.results` reads the run folders (:func:`load_runs`, :class:`Run`);
- :mod:`.tables`: the runs, paired-comparison, calibration, learned-weight and provenance
  tables (their metric columns from :data:`fusionlib.results.METRICS`; the bootstrap
  statistics from :mod:`fusionlib.metrics`);
- :mod:`.verdict`, :mod:`.conclusions`, :mod:`.planner`: the verdict table (each variant
  minus fixed over seeds: power, equivalence, decision agreement), its answers in words, and
  the planner of a study that would make them conclusive;
- :mod:`.page`: the report's sections in a reader's order (the answers and their figure
  first), the page that holds them, and their display in a notebook;
- :mod:`.html`: HTML tables, heatmaps and banners;
- :mod:`.build`: :func:`build_report` / :func:`write_report`, which write the page and one
  page per run.

The names below are what the report notebook, the command line and the tests use.
"""

from ..metrics import verdict_text
from ..results import (FIXED, PROBA_COLUMNS, Run, dropped_images_count, dropped_images_line,
                       load_runs)
from .build import BuiltReport, build_report, html_exporter, notebook_to_html, write_report
from .html import (REPORT_CSS, REPORT_NOTEBOOK, figure_html, head_warning_banner, html_table,
                   left_out_html, run_links, synthetic_banner)
from .tables import (PAIRED_COLUMNS, SHARE_NOT_BETTER, calibration_table, clinical_share_table,
                     fmt, paired_comparisons, paired_side_by_side, provenance_table, runs_table,
                     runs_table_columns)
from .conclusions import AGREEMENT_NOTE, ConclusionSettings
from .verdict import (VERDICT_COLUMNS, plan_display, verdict_compact, verdict_display,
                      verdict_sentences, verdict_table, weighting_sentences)
from .page import ReportContent, Section, render_page, report_content, report_sections, show_sections

__all__ = ["verdict_text", "FIXED", "PROBA_COLUMNS", "Run", "dropped_images_count",
           "dropped_images_line", "load_runs", "REPORT_CSS", "REPORT_NOTEBOOK", "build_report",
           "figure_html", "head_warning_banner", "html_exporter", "html_table", "left_out_html",
           "notebook_to_html", "run_links", "synthetic_banner", "PAIRED_COLUMNS",
           "SHARE_NOT_BETTER", "calibration_table", "clinical_share_table", "fmt",
           "paired_comparisons", "paired_side_by_side", "provenance_table", "runs_table",
           "runs_table_columns", "VERDICT_COLUMNS", "verdict_sentences", "verdict_table",
           "verdict_display", "plan_display", "AGREEMENT_NOTE", "ConclusionSettings",
           "BuiltReport", "write_report", "verdict_compact", "weighting_sentences",
           "ReportContent", "Section", "render_page", "report_content", "report_sections",
           "show_sections"]
