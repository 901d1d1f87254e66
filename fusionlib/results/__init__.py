"""A run's results: THE list of metrics, the writer of a run folder and its reader.

- :mod:`.registry`: :data:`METRICS`, one entry per per-fold metric (how it is computed or
  where it is read from, its label, direction and the tables that show it); adding a metric
  is one :func:`register` call and it reaches ``metrics.json``, the notebooks and the report.
- :mod:`.writer`: :class:`FoldResult`, :class:`ExperimentResult` and its atomic ``save``; the
  experiment notebook's tables (:func:`per_fold_columns`, :func:`share_columns`,
  :func:`raw_weight_table`, :func:`summary_table`, :func:`by_seed_table`).
- :mod:`.reader`: :class:`Run` and :func:`load_runs`, what the report reads back.
- :mod:`.files`: the file names and ``predictions.csv`` columns both sides share.
"""

from .._io import jsonable
from .files import (DONE_FILE, EXECUTED_NOTEBOOK, METRICS_FILE, PREDICTION_COLUMNS,
                    PREDICTIONS_FILE, PROBA_COLUMNS, PROVENANCE_FILE, RESULT_FILES, WEIGHTS_FILE)
from .reader import FIXED, Run, dropped_images_count, dropped_images_line, load_runs
from .registry import (HEADLINE, METRICS, TABLES, Metric, classification_scores, metrics_in,
                       register, summarised_metrics)
from .writer import (ExperimentResult, FoldResult, by_seed_table, per_fold_columns,
                     raw_weight_table, share_columns, summary_table, weight_metrics)

__all__ = ["DONE_FILE", "EXECUTED_NOTEBOOK", "METRICS_FILE", "PREDICTION_COLUMNS",
           "PREDICTIONS_FILE", "PROBA_COLUMNS", "PROVENANCE_FILE", "RESULT_FILES", "WEIGHTS_FILE",
           "FIXED", "Run", "dropped_images_count", "dropped_images_line", "load_runs", "HEADLINE",
           "METRICS", "TABLES", "Metric", "classification_scores", "metrics_in", "register",
           "summarised_metrics", "ExperimentResult", "FoldResult", "by_seed_table", "jsonable",
           "per_fold_columns", "raw_weight_table", "share_columns", "summary_table",
           "weight_metrics"]
