"""The one list of metrics: a metric registered in one place reaches metrics.json (fold rows,
summary, pooled scores), the experiment notebook's per-fold table and the report's runs table.

Tiny hand-made fold results (no model is trained), saved by the real writer and read back by
the real reader.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from fusionlib import report
from fusionlib.params import validate
from fusionlib.results import (METRICS, ExperimentResult, FoldResult, Metric,
                               classification_scores, load_runs, metrics_in, per_fold_columns,
                               register, share_columns, summarised_metrics)

REPO = Path(__file__).resolve().parents[1]


def _cohort(n: int):
    cases = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)],
                          "patient": [f"p{i // 2}" for i in range(n)]})
    return SimpleNamespace(n_cases=n, meta={}, cases=cases,
                           has_modality=lambda m: np.ones(n, bool))


def _result(n_folds: int = 3, per_fold: int = 12) -> ExperimentResult:
    """A fixed-seed result with ``n_folds`` folds of ``per_fold`` test cases each, scored by the
    registry as :func:`fusionlib.experiment.run_fold` scores a fold."""
    rng = np.random.default_rng(0)
    params = validate({"name": "toy_100"})
    folds = []
    for k in range(n_folds):
        rows = np.arange(k * per_fold, (k + 1) * per_fold)
        y = np.tile([0, 1, 2], per_fold // 3)
        proba = rng.dirichlet([1, 1, 1], per_fold)
        pred = proba.argmax(axis=1)
        folds.append(FoldResult(
            k, 0, rows, y, proba, {"metadata": proba, "thermal_map": proba}, {},
            classification_scores(y, proba, pred), {"stage1_val_qwk": 0.5},
            {"rf_share": 0.7, "rf_share_per_class": [0.7, 0.7, 0.7], "toy_weight": 0.1 * k},
            preds={"fused": {params.decision.rule: pred}}))
    return ExperimentResult(params, _cohort(n_folds * per_fold), folds,
                            {"trainable_fusion_params": 0})


@pytest.fixture
def toy_metrics():
    """Two new metrics, each added in one place (and removed again after the test): one scored
    from the test cases, one read from the fold's weight analysis."""
    before = dict(METRICS)
    scored = register(Metric(
        "balanced_accuracy", "balanced accuracy", "mean recall over the phases",
        compute=lambda y, p, d: float(balanced_accuracy_score(y, d)), tables=("folds", "runs")))
    read = register(Metric(
        "toy_weight", "toy weight", "a number from the weight analysis", higher_is_better=None,
        read=lambda w: w.get("toy_weight"), tables=("fold_shares", "shares")))
    yield scored, read
    METRICS.clear()
    METRICS.update(before)


def test_a_metric_added_in_one_place_reaches_metrics_json_notebook_and_report(toy_metrics, tmp_path):
    result = _result()
    run = tmp_path / "runs" / "toy_100"
    result.save(run)
    (run / "done.json").write_text("{}")

    metrics = json.loads((run / "metrics.json").read_text())
    expected = [balanced_accuracy_score(f.y_true, f.proba.argmax(axis=1)) for f in result.folds]
    assert [row["balanced_accuracy"] for row in metrics["folds"]] == pytest.approx(expected)
    assert metrics["summary"]["balanced_accuracy"]["mean"] == pytest.approx(np.mean(expected))
    assert "balanced_accuracy" in metrics["summary"]["pooled"]
    assert [row["toy_weight"] for row in metrics["folds"]] == pytest.approx([0.0, 0.1, 0.2])
    assert metrics["summary"]["toy_weight"]["mean"] == pytest.approx(0.1)

    # The experiment notebook's tables take their columns from these functions.
    folds = result.fold_table()
    assert "balanced_accuracy" in per_fold_columns(folds)
    assert "toy_weight" in share_columns(folds)
    cells = "".join("".join(c["source"]) for c in
                    json.loads((REPO / "notebooks" / "experiment.ipynb").read_text())["cells"])
    assert "per_fold_columns(folds)" in cells and "share_columns(folds)" in cells

    # The report: the runs table (and the columns the report notebook shows), the weights table.
    runs = load_runs(tmp_path / "runs")
    table = report.runs_table(runs)
    assert table["balanced accuracy"].tolist() == pytest.approx([np.mean(expected)])
    assert "balanced accuracy" in report.runs_table_columns()
    html = report.html_table(table[report.runs_table_columns()], "kappa-table")
    assert "<th>balanced accuracy</th>" in html
    assert report.rf_share_table(runs)["toy weight"].tolist() == pytest.approx([0.1])
    from fusionlib.report.page import runs_section

    assert "<th>balanced accuracy</th>" in runs_section(runs).body


def test_the_built_in_list_reproduces_the_metrics_json_layout():
    """The summary keys and the fold columns in the order metrics.json has (``seed`` first
    since several seeds run inside one run)."""
    shares = [f"{p}{k}{s}" for p in ("", "converged_", "start_")
              for k in ("rf_share", "influence_rf_share") for s in ("", "_I", "_P", "_R")]
    assert summarised_metrics() == ["qwk", "accuracy", "macro_f1", "f1_I", "f1_P", "f1_R",
                                    "log_loss", "brier", "ece", *shares, "train_objective_gap",
                                    "moved_from_start"]
    assert list(classification_scores([0, 1, 2], np.eye(3))) == [
        "qwk", "accuracy", "macro_f1", "f1_I", "f1_P", "f1_R", "log_loss", "brier", "ece", "n"]
    table = _result().fold_table()
    assert list(table.columns[:13]) == ["seed", "repeat", "fold", "qwk", "accuracy", "macro_f1",
                                        "f1_I", "f1_P", "f1_R", "log_loss", "brier", "ece", "n"]
    assert list(table.columns[13:16]) == ["stage1_val_qwk", "decision", "rf_share"]
    assert [m.name for m in metrics_in("calibration")] == ["brier", "ece"]


def test_a_metric_is_declared_once_and_completely():
    with pytest.raises(ValueError, match="exactly one of compute= or read="):
        Metric("x", "x", "neither")
    with pytest.raises(ValueError, match="unknown table"):
        Metric("x", "x", "bad table", compute=lambda y, p, d: 0.0, tables=("nowhere",))
    with pytest.raises(ValueError, match="already registered"):
        register(Metric("qwk", "QWK", "again", compute=lambda y, p, d: 0.0))
