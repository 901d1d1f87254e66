"""A run's results: THE list of metrics, the writer of a run folder and its reader.

- :mod:`.registry`: :data:`METRICS`, one entry per per-fold metric (how it is computed or
  where it is read from, its label, direction and the tables that show it); adding a metric
  is one :func:`register` call and it reaches ``metrics.json``, the notebooks and the report
  (a headline one also the verdict and the paired tables).
- :mod:`.writer`: :class:`FoldResult`, :class:`ExperimentResult` and its atomic ``save``; the
  experiment notebook's tables (:func:`per_fold_columns`, :func:`share_columns`,
  :func:`raw_weight_table`, :func:`summary_table`, :func:`by_seed_table`).
- :mod:`.reader`: :class:`Run` and :func:`load_runs`, what the report reads back (keys of
  older runs upgraded, :func:`upgrade_legacy_keys`); :func:`clinical_names`, what reports call
  a run's clinical model.
- :mod:`.files`: the file names and ``predictions.csv`` columns both sides share.
"""

from .._io import jsonable
from .files import (DONE_FILE, EXECUTED_NOTEBOOK, METRICS_FILE, PREDICTION_COLUMNS,
                    PREDICTIONS_FILE, PROBA_COLUMNS, PROVENANCE_FILE, RESULT_FILES, WEIGHTS_FILE)
from .reader import (DEFAULT_CLINICAL_MODEL, FIXED, ClinicalNames, Run, clinical_names,
                     common_clinical_names, dropped_images_count, dropped_images_line, load_runs,
                     upgrade_legacy_keys)
from .registry import (HEADLINE, METRICS, TABLES, Metric, classification_scores,
                       headline_metrics, metrics_in, register, summarised_metrics)
from .writer import (ExperimentResult, FoldResult, by_seed_table, per_fold_columns,
                     raw_weight_table, share_columns, summary_table, weight_metrics)

__all__ = ["DONE_FILE", "EXECUTED_NOTEBOOK", "METRICS_FILE", "PREDICTION_COLUMNS",
           "PREDICTIONS_FILE", "PROBA_COLUMNS", "PROVENANCE_FILE", "RESULT_FILES", "WEIGHTS_FILE",
           "DEFAULT_CLINICAL_MODEL", "FIXED", "ClinicalNames", "Run", "clinical_names",
           "common_clinical_names", "dropped_images_count", "dropped_images_line", "load_runs",
           "upgrade_legacy_keys", "HEADLINE",
           "METRICS", "TABLES", "Metric", "classification_scores", "headline_metrics",
           "metrics_in", "register",
           "summarised_metrics", "ExperimentResult", "FoldResult", "by_seed_table", "jsonable",
           "per_fold_columns", "raw_weight_table", "share_columns", "summary_table",
           "weight_metrics"]
