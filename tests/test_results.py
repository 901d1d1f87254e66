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
from fusionlib.results import (METRICS, ExperimentResult, FoldResult, Metric, by_seed_table,
                               classification_scores, load_runs, metrics_in, per_fold_columns,
                               raw_weight_table, register, share_columns, summarised_metrics,
                               summary_table, weight_metrics)

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
            {"clinical_share": 0.7, "clinical_share_per_class": [0.7, 0.7, 0.7],
             "toy_weight": 0.1 * k},
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
    assert report.clinical_share_table(runs)["toy weight"].tolist() == pytest.approx([0.1])
    from fusionlib.report.page import runs_section

    assert "<th>balanced accuracy</th>" in runs_section(runs).body


def test_the_built_in_list_reproduces_the_metrics_json_layout():
    """The summary keys and the fold columns in the order metrics.json has (``seed`` first
    since several seeds run inside one run)."""
    shares = [f"{p}{k}{s}" for p in ("", "converged_", "start_")
              for k in ("clinical_share", "influence_clinical_share")
              for s in ("", "_I", "_P", "_R")]
    assert summarised_metrics() == ["qwk", "accuracy", "macro_f1", "f1_I", "f1_P", "f1_R",
                                    "log_loss", "brier", "ece", *shares, "train_objective_gap",
                                    "moved_from_start"]
    assert list(classification_scores([0, 1, 2], np.eye(3))) == [
        "qwk", "accuracy", "macro_f1", "f1_I", "f1_P", "f1_R", "log_loss", "brier", "ece", "n"]
    table = _result().fold_table()
    assert list(table.columns[:13]) == ["seed", "repeat", "fold", "qwk", "accuracy", "macro_f1",
                                        "f1_I", "f1_P", "f1_R", "log_loss", "brier", "ece", "n"]
    assert list(table.columns[13:16]) == ["stage1_val_qwk", "decision", "clinical_share"]
    assert [m.name for m in metrics_in("calibration")] == ["brier", "ece"]


def test_a_metric_is_declared_once_and_completely():
    with pytest.raises(ValueError, match="exactly one of compute= or read="):
        Metric("x", "x", "neither")
    with pytest.raises(ValueError, match="unknown table"):
        Metric("x", "x", "bad table", compute=lambda y, p, d: 0.0, tables=("nowhere",))
    with pytest.raises(ValueError, match="already registered"):
        register(Metric("qwk", "QWK", "again", compute=lambda y, p, d: 0.0))


# --------------------------------------------------------------------------- notebook tables


def _two_seed_result() -> ExperimentResult:
    """:func:`_result`'s folds as two seeds' replicates (folds 0, 1 of seed 0; fold 2 of seed 5)."""
    result = _result()
    for f, seed in zip(result.folds, (0, 0, 5)):
        f.seed = seed
    return result


def _old_raw_table(weights):
    """The experiment notebook's raw-weights cell before the table moved into the library."""
    def _numeric(v):
        try:
            return np.round(np.asarray(v, dtype=float), 3).tolist()
        except (TypeError, ValueError):
            return None

    return pd.DataFrame([{"seed": w["seed"], "repeat": w["repeat"], "fold": w["fold"],
                          **{k: _numeric(v) for k, v in (w.get("raw") or {}).items()
                             if _numeric(v) is not None}} for w in weights])


def test_raw_weight_table_keeps_the_numeric_raw_weights_rounded():
    weights = [{"seed": 0, "repeat": 0, "fold": k, "fusion": "trainable",
                "raw": {"fusion": "trainable", "kernel": [[0.12345, -1.0], [2.0, 0.33333]],
                        "bias": np.array([0.5 + k, 1 / 3, 0.0]), "ragged": [[1.0], [1.0, 2.0]],
                        "a": 0.70004}}
               for k in range(2)] + [{"seed": 0, "repeat": 0, "fold": 2, "raw": None}]
    table = raw_weight_table(weights)
    pd.testing.assert_frame_equal(table, _old_raw_table(weights))
    assert list(table.columns) == ["seed", "repeat", "fold", "kernel", "bias", "a"]
    assert table.loc[0, "kernel"] == [[0.123, -1.0], [2.0, 0.333]]
    assert table.loc[1, "bias"] == [1.5, 0.333, 0.0] and table.loc[0, "a"] == 0.7
    assert table.loc[2, ["seed", "fold"]].tolist() == [0, 2] and pd.isna(table.loc[2, "kernel"])
    assert raw_weight_table(weights, decimals=1).loc[0, "kernel"] == [[0.1, -1.0], [2.0, 0.3]]
    # What a result gives (its weights carry seed, repeat and fold).
    result = _result()
    pd.testing.assert_frame_equal(raw_weight_table(result.weights()), _old_raw_table(result.weights()))


def test_summary_table_has_one_row_per_summarised_metric():
    summary = _result().summary()
    table = summary_table(summary)
    summarised = [m for m in summarised_metrics() if isinstance(summary.get(m), dict)]
    assert list(table.index) == summarised and "qwk" in summarised and "n" not in table.index
    assert list(table.columns) == ["mean", "sd", "ci95_low", "ci95_high"]
    for metric in summarised:
        expected = [summary[metric]["mean"], summary[metric]["sd"], *summary[metric]["ci95"]]
        assert table.loc[metric].tolist() == pytest.approx(np.round(expected, 3), nan_ok=True)
    # Not summaries: the pooled scores, the counts, the per-seed spread.
    assert not {"pooled", "by_seed", "modality_counts", "n_cases"} & set(table.index)
    assert summary_table({"name": "x"}).empty


def test_by_seed_table_spreads_the_per_seed_means_and_is_none_for_one_seed():
    assert by_seed_table(_result().summary()) is None
    summary = _two_seed_result().summary()
    assert summary["seeds"] == [0, 5]
    table = by_seed_table(summary)
    by_seed = summary["by_seed"]["metrics"]
    # The experiment notebook's by-seed cell before the table moved into the library.
    old = pd.DataFrame({m: {**{f"seed {s}": v for s, v in zip(summary["seeds"], d["per_seed"])},
                            "mean over seeds": d["mean"], "sd over seeds": d["sd"]}
                        for m, d in by_seed.items()}).T.round(3)
    pd.testing.assert_frame_equal(table, old)
    assert list(table.columns) == ["seed 0", "seed 5", "mean over seeds", "sd over seeds"]
    folds = _two_seed_result().fold_table()
    qwk = [folds.loc[folds["seed"] == s, "qwk"].mean() for s in (0, 5)]
    assert table.loc["qwk", ["seed 0", "seed 5"]].tolist() == pytest.approx(np.round(qwk, 3))
    assert table.loc["qwk", "sd over seeds"] == pytest.approx(round(float(np.std(qwk, ddof=1)), 3))


def test_weight_metrics_are_the_fold_tables_weight_columns():
    result = _result()
    row = weight_metrics(result.folds[1].weights)
    assert list(row) == [m.name for m in METRICS.values() if not m.scored]
    assert row["clinical_share"] == 0.7 and row["clinical_share_P"] == 0.7
    assert row["influence_clinical_share"] is None and row["influence_clinical_share_I"] is None
    table = result.fold_table()
    assert list(table.columns[-len(row):]) == list(row)
    assert table.loc[1, "clinical_share_P"] == 0.7


def test_the_experiment_notebook_builds_no_table_itself():
    """Its raw-weights and summary tables come from the library (no helper defined in a cell)."""
    cells = [c for c in json.loads((REPO / "notebooks" / "experiment.ipynb").read_text())["cells"]
             if c["cell_type"] == "code"]
    source = "".join("".join(c["source"]) for c in cells)
    assert "def " not in source
    for call in ("raw_weight_table(result.weights())", "summary_table(summary)",
                 "by_seed_table(summary)"):
        assert call in source, call


# --------------------------------------------------------------------------- run folders before the rename


def _two_sweeps(tmp_path):
    """The same toy run saved twice: ``old/`` rewritten as runs were written before the
    clinical share's keys were renamed (``rf_share...``), ``new/`` as written now."""
    result = _result()
    for side in ("old", "new"):
        result.save(tmp_path / side / "toy_100")
        (tmp_path / side / "toy_100" / "done.json").write_text("{}")
    for name in ("metrics.json", "weights.json"):
        path = tmp_path / "old" / "toy_100" / name
        path.write_text(path.read_text().replace("clinical_share", "rf_share"))
    return tmp_path / "old", tmp_path / "new"


def test_a_run_folder_written_before_the_rename_is_read_under_the_new_keys(tmp_path):
    old, new = _two_sweeps(tmp_path)
    written = json.loads((old / "toy_100" / "metrics.json").read_text())
    assert "rf_share_P" in written["folds"][0] and "rf_share" in written["summary"]
    (legacy,), (current,) = load_runs(old), load_runs(new)
    assert legacy.metrics == current.metrics and legacy.weights == current.weights
    assert legacy.folds["clinical_share_P"].tolist() == pytest.approx([0.7] * 3)
    assert legacy.weights[0]["clinical_share_per_class"] == [0.7, 0.7, 0.7]
    assert not [c for c in legacy.folds if "rf_share" in c]
    # what the report reads from it: the default model's labels, as before
    assert report.runs_table([legacy])["RF share"].tolist() == pytest.approx([0.7])
    assert report.clinical_share_table([legacy]).equals(report.clinical_share_table([current]))


def test_upgrade_legacy_keys_renames_keys_only_at_any_depth():
    from fusionlib.results import upgrade_legacy_keys

    old = {"summary": {"influence_rf_share": {"mean": 0.5}, "note": "rf_share"},
           "folds": [{"converged_rf_share_per_class": [1, 2, 3], "qwk": 0.4}]}
    assert upgrade_legacy_keys(old) == {
        "summary": {"influence_clinical_share": {"mean": 0.5}, "note": "rf_share"},
        "folds": [{"converged_clinical_share_per_class": [1, 2, 3], "qwk": 0.4}]}
    assert list(upgrade_legacy_keys({"b": 1, "rf_share": 2, "a": 3})) == ["b", "clinical_share", "a"]


def _diff_runs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("diff_runs", REPO / "scripts" / "diff_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_diff_runs_compares_an_old_sweep_after_the_readers_upgrade(tmp_path, capsys):
    old, new = _two_sweeps(tmp_path)
    diff_runs = _diff_runs()
    assert diff_runs.main([str(old), str(new)]) == 1
    assert "toy_100/metrics.json: DIFFERS" in capsys.readouterr().out

    assert diff_runs.main([str(old), str(new), "--legacy-keys"]) == 0
    out = capsys.readouterr().out
    assert f"{old}: legacy keys upgraded before comparing" in out
    assert "toy_100/metrics.json: identical after upgrading legacy keys" in out
    assert "toy_100/weights.json: identical after upgrading legacy keys" in out
    assert "toy_100/predictions.csv: identical" in out

    # A value that differs besides the rename is still listed, under its new name.
    path = old / "toy_100" / "metrics.json"
    changed = json.loads(path.read_text())
    changed["folds"][1]["rf_share"] = 0.5
    path.write_text(json.dumps(changed, indent=2))
    assert diff_runs.main([str(old), str(new), "--legacy-keys"]) == 1
    assert "$.folds[1].clinical_share: 0.5 -> 0.7" in capsys.readouterr().out


def test_every_clinical_model_has_its_own_names():
    from fusionlib.branches.clinical import CLINICAL_MODELS
    from fusionlib.results import clinical_names

    names = {m: clinical_names(m) for m in CLINICAL_MODELS}
    assert (names["random_forest"].short, names["random_forest"].long) == ("RF", "random forest")
    assert (names["hist_gradient_boosting"].short,
            names["hist_gradient_boosting"].long) == ("GB", "gradient boosting")
    assert len({n.short for n in names.values()}) == len(names)
    assert all(n.short != "clinical" and n.long != "clinical model" for n in names.values())
    assert clinical_names(None) == names["random_forest"]          # runs saved before the section
    assert clinical_names("my_model").long == "my model"             # one this version lacks
