"""The files of a run folder, shared by the writer and the reader so both name them alike."""

from __future__ import annotations

from ..data import LABELS

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
WEIGHTS_FILE = "weights.json"
PROVENANCE_FILE = "provenance.json"
DONE_FILE = "done.json"             # written last by fusionlib.running: the run is finished
EXECUTED_NOTEBOOK = "executed.ipynb"
RESULT_FILES = (METRICS_FILE, PREDICTIONS_FILE, WEIGHTS_FILE, PROVENANCE_FILE)
"""What :meth:`fusionlib.results.ExperimentResult.save` writes."""

PROBA_COLUMNS = [f"p_{label}" for label in LABELS]
"""The fused probabilities in ``predictions.csv``."""

PREDICTION_COLUMNS = ["repeat", "fold", "case_id", "patient", "label", "pred", *PROBA_COLUMNS]
"""The ``predictions.csv`` columns every run has (the reader checks them); branch and
baseline columns (``<source>_p_<label>``, ``<source>_pred_<rule>``) and the fused prediction
under every rule (``pred_<rule>``) follow."""
