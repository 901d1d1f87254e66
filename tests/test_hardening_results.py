"""Hardening II (issue 20), the run folders' reader: a truncated ``predictions.csv`` and a run
read while another process swaps a new version of its folder in.

- A ``predictions.csv`` cut at a line break, or a row cut in its later columns, or a missing
  or invalid value in a later column, leaves the run out with a line naming the file and the
  problem (as for the other broken run folders), instead of being read without a word.
- The reader's consistency rule: all files of a run are read through one handle on its folder
  and the folder must still be the one at the run's path when the reading ends (else it is read
  again, a bounded number of times); the files must agree where they record the same thing
  (``predictions.csv`` reproduces ``metrics.json``'s counts and pooled scores, ``done.json``'s
  ``qwk_mean`` is ``metrics.json``'s mean QWK); a folder set aside by a swap is waited for.

The swaps are made deterministically, inside the reader's own reading function (or its pause
between tries): no timing.

Tiny hand-made fold results (no model is trained), saved by the real writer.
"""

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fusionlib._io import swap_into_place
from fusionlib.errors import DataError
from fusionlib.params import validate
from fusionlib.results import ExperimentResult, FoldResult, Run, classification_scores, load_runs
from fusionlib.results import reader
from fusionlib.running.folders import qwk_mean

N_CASES = 158          # as in the issue: a run of 158 cases cut to 79 rows


def _cohort(n: int):
    cases = pd.DataFrame({"case_id": [f"c{i:03d}" for i in range(n)],
                          "patient": [i // 2 for i in range(n)]})
    return SimpleNamespace(n_cases=n, meta={}, cases=cases,
                           has_modality=lambda m: np.ones(n, bool))


def _result(seed: int) -> ExperimentResult:
    """A 2-fold run of 158 cases (one version per ``seed``): fused, branch (the thermal map
    missing for every fifth case) and stacking-baseline probabilities, two decision rules."""
    rng = np.random.default_rng(seed)
    params = validate({"name": "toy_100"})
    rule = params.decision.rule
    folds = []
    for k, rows in enumerate(np.array_split(np.arange(N_CASES), 2)):
        n = len(rows)
        y = rows % 3
        proba = rng.dirichlet([1, 1, 1], n)
        thermal = rng.dirichlet([1, 1, 1], n)
        thermal[rows % 5 == 0] = np.nan
        stacking = rng.dirichlet([1, 1, 1], n)
        pred = proba.argmax(axis=1)
        preds = {"fused": {rule: pred, "balanced": (pred + 1) % 3},
                 "stacking": {rule: stacking.argmax(axis=1)}}
        folds.append(FoldResult(
            k, 0, rows, y, proba, {"metadata": rng.dirichlet([1, 1, 1], n), "thermal_map": thermal},
            {"stacking": stacking}, classification_scores(y, proba, pred),
            {"stage1_val_qwk": 0.5},
            {"clinical_share": 0.7, "clinical_share_per_class": [0.7, 0.7, 0.7]},
            preds=preds))
    return ExperimentResult(params, _cohort(N_CASES), folds, {"trainable_fusion_params": 0})


def _save(folder: Path, version: str, seed: int) -> Path:
    """A finished run folder as the runner leaves it: the writer's files, then done.json."""
    _result(seed).save(folder)
    (folder / "done.json").write_text(json.dumps(
        {"status": "ok", "version": version, "qwk_mean": qwk_mean(folder)}))
    return folder


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """Two versions, A and B, of the run ``toy_100`` (kept outside any runs folder)."""
    root = tmp_path_factory.mktemp("versions")
    return {v: _save(root / v, v, seed) for v, seed in (("A", 1), ("B", 2))}


@pytest.fixture
def runs(tmp_path, versions):
    """A runs folder holding version A of ``toy_100``."""
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(versions["A"], runs / "toy_100")
    return runs


def _left_out(runs_dir, caplog):
    left_out = []
    with caplog.at_level("WARNING", logger="fusionlib"):
        loaded = load_runs(runs_dir, left_out=left_out)
    return loaded, dict(left_out)


def _assert_left_out(runs_dir, caplog, problem: str, name: str = "toy_100"):
    loaded, reasons = _left_out(runs_dir, caplog)
    assert name not in [r.name for r in loaded]
    assert problem in reasons.get(name, ""), reasons
    line = next(r.getMessage() for r in caplog.records if f"/{name}" in r.getMessage())
    assert problem in line and "left out" in line and "\n" not in line
    return reasons[name]


def _lines(folder: Path) -> list[str]:
    return (folder / "predictions.csv").read_text().splitlines(keepends=True)


# --------------------------------------------------------------------------- 1. truncated files


def test_the_runs_as_written_are_read(runs, versions, caplog):
    """Both versions, a branch missing for some cases, read back whole and without a word."""
    loaded, reasons = _left_out(runs, caplog)
    assert [r.name for r in loaded] == ["toy_100"] and not reasons
    frame = loaded[0].predictions
    assert len(frame) == N_CASES and frame["thermal_map_p_I"].isna().sum() == 32
    pd.testing.assert_frame_equal(
        frame, pd.read_csv(versions["A"] / "predictions.csv", dtype={"case_id": str}))


def test_predictions_cut_at_a_line_break_are_left_out(runs, caplog):
    """79 of 158 rows kept, cut at a line break: the file parses, but is not the run's."""
    folder = runs / "toy_100"
    (folder / "predictions.csv").write_text("".join(_lines(folder)[:1 + 79]))
    _assert_left_out(runs, caplog, "predictions.csv: 79 rows where metrics.json records 158")
    with pytest.raises(DataError, match=r"toy_100: predictions.csv: 79 rows where metrics.json"):
        Run("toy_100", folder, json.loads((folder / "metrics.json").read_text())).predictions


def test_an_older_run_cut_at_a_line_break_is_checked_against_its_case_count(runs, caplog):
    """A run written before the pooled case count was kept: 158 cases x 1 repeat x 1 seed."""
    folder = runs / "toy_100"
    metrics = json.loads((folder / "metrics.json").read_text())
    del metrics["summary"]["pooled"]
    for fold in metrics["folds"]:
        del fold["n"]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    assert [r.name for r in load_runs(runs)] == ["toy_100"]        # whole: still read
    (folder / "predictions.csv").write_text("".join(_lines(folder)[:1 + 79]))
    _assert_left_out(runs, caplog, "predictions.csv: 79 rows where metrics.json records 158 "
                                   "cases tested")


def test_rows_of_one_fold_cut_out_are_left_out(runs, caplog):
    """As many rows in all, but fold 1's last row replaced by a copy of a fold 0 row."""
    folder = runs / "toy_100"
    lines = _lines(folder)
    (folder / "predictions.csv").write_text("".join(lines[:-1] + [lines[1]]))
    _assert_left_out(runs, caplog, "rows for seed 0, repeat 0, fold 0 where metrics.json records 79")


@pytest.mark.parametrize("line_break", [True, False], ids=["line-break", "file-end"])
def test_a_row_cut_in_its_later_columns_is_left_out(runs, caplog, line_break):
    """The last row cut after its 12th column (the 9 columns checked before are whole)."""
    folder = runs / "toy_100"
    lines = _lines(folder)
    width = lines[0].count(",") + 1
    cut = ",".join(lines[-1].split(",")[:12]) + ("\n" if line_break else "")
    (folder / "predictions.csv").write_text("".join(lines[:-1]) + cut)
    _assert_left_out(runs, caplog, f"predictions.csv: row {N_CASES + 1} has 12 of {width} columns")


def test_a_file_cut_before_its_last_value_is_left_out(runs, caplog):
    """Cut after the last row's last comma: every column is there, the last one empty."""
    folder = runs / "toy_100"
    text = (folder / "predictions.csv").read_text()
    assert text.endswith("\n") and text[-3] == ","
    (folder / "predictions.csv").write_text(text[:-2])
    _assert_left_out(runs, caplog, f"predictions.csv: row {N_CASES + 1} is cut short")


@pytest.mark.parametrize("column, value, problem", [
    ("stacking_p_P", "", "stacking's probabilities are partly missing"),
    ("thermal_map_p_R", "", "thermal_map's probabilities are partly missing"),
    ("metadata_p_I", "abc", "metadata_p_I is not a probability"),
    ("p_R", "1.7", "p_R is not a probability"),
    ("p_I", "", "p_I is not a probability"),
    ("pred_balanced", "", "pred_balanced is not a class (0-2)"),
    ("stacking_pred_argmax", "3", "stacking_pred_argmax is not a class (0-2)"),
    ("label", "1.5", "label is not a class (0-2)"),
    ("seed", "", "seed is not a whole number"),
])
def test_a_missing_or_invalid_value_in_any_column_is_left_out(runs, caplog, column, value, problem):
    """Row 43 (a case with every branch) has every column, one of them emptied or wrong."""
    folder = runs / "toy_100"
    lines = _lines(folder)
    header = lines[0].rstrip("\n").split(",")
    fields = lines[42].rstrip("\n").split(",")
    assert fields[header.index("thermal_map_p_I")] != ""
    fields[header.index(column)] = value
    lines[42] = ",".join(fields) + "\n"
    (folder / "predictions.csv").write_text("".join(lines))
    _assert_left_out(runs, caplog, f"predictions.csv: row 43 is incomplete or not valid: {problem}")


# --------------------------------------------------------------------------- 2. one version


def _mixed(runs, versions, **files):
    """``toy_100`` as version A with the given files (name -> version) taken from another."""
    for name, version in files.items():
        shutil.copy(versions[version] / name, runs / "toy_100" / name)


def test_predictions_of_another_version_are_left_out(runs, versions, caplog):
    """metrics.json (and done.json) from version A, predictions.csv from version B: same rows,
    same folds, other probabilities and predictions."""
    _mixed(runs, versions, **{"predictions.csv": "B"})
    reason = _assert_left_out(runs, caplog, "predictions.csv: its pooled ")
    assert "where metrics.json records" in reason and "two versions" in reason


def test_a_done_json_of_another_version_is_left_out(runs, versions, caplog):
    _mixed(runs, versions, **{"done.json": "B"})
    _assert_left_out(runs, caplog, "done.json: qwk_mean")


def _version_of(run: Run, versions: dict) -> str:
    """The one version every file of ``run`` comes from (AssertionError when they differ)."""
    version = run.done["version"]
    folder = versions[version]
    assert run.metrics == json.loads((folder / "metrics.json").read_text()), \
        "metrics.json is not from the version of done.json"
    assert run.weights == json.loads((folder / "weights.json").read_text())
    assert run.provenance == json.loads((folder / "provenance.json").read_text())
    pd.testing.assert_frame_equal(run.predictions, pd.read_csv(folder / "predictions.csv",
                                                               dtype={"case_id": str}))
    return version


class _Swapper:
    """Swaps a fresh copy of a version into ``runs/toy_100`` the way the runner does (built in
    ``runs/.tmp-toy_100-*``, then :func:`swap_into_place`: renamed aside, renamed in, old one
    deleted); with ``keep_old`` the old folder is only renamed aside, not deleted."""

    def __init__(self, runs: Path, versions: dict, keep_old: bool = False):
        self.runs, self.versions, self.keep_old, self.count = runs, versions, keep_old, 0

    def swap(self, version: str) -> None:
        self.count += 1
        tmp = self.runs / f".tmp-toy_100-{self.count:08x}"
        shutil.copytree(self.versions[version], tmp)
        final = self.runs / "toy_100"
        if self.keep_old:
            os.rename(final, self.runs / f".old-toy_100-{self.count:08x}")
            os.rename(tmp, final)
        else:
            swap_into_place(tmp, final)


@pytest.mark.parametrize("keep_old", [False, True], ids=["old-deleted", "old-kept"])
@pytest.mark.parametrize("after", [1, 2, 3, 4], ids=["metrics", "weights", "provenance", "done"])
def test_a_swap_between_two_files_is_read_again_as_one_version(runs, versions, monkeypatch,
                                                               caplog, after, keep_old):
    """Version B swapped in right after the reader read the ``after``-th JSON file of version A
    (metrics.json, weights.json, provenance.json, done.json; predictions.csv is read last): the
    run is read again and every file is B's."""
    swapper = _Swapper(runs, versions, keep_old)
    original = reader._read_json
    calls = []

    def read_then_swap(*args, **kwargs):
        value = original(*args, **kwargs)
        calls.append(args)
        if len(calls) == after:
            swapper.swap("B")
        return value

    monkeypatch.setattr(reader, "_read_json", read_then_swap)
    loaded, reasons = _left_out(runs, caplog)
    assert swapper.count == 1 and not reasons
    run, = loaded
    assert _version_of(run, versions) == "B"
    assert len(calls) >= after + 4             # the run was read again after the swap


def test_a_folder_swapped_on_every_try_is_left_out_with_one_line(runs, versions, monkeypatch,
                                                                 caplog):
    """A folder replaced while each try reads it: after a bounded number of tries the run is
    left out, saying so, rather than read as a mix."""
    swapper = _Swapper(runs, versions)
    original = reader._read_json
    monkeypatch.setattr(reader, "_pause", lambda attempt: None, raising=False)

    def read_then_swap(*args, **kwargs):
        value = original(*args, **kwargs)
        swapper.swap("B" if swapper.count % 2 == 0 else "A")
        return value

    monkeypatch.setattr(reader, "_read_json", read_then_swap)
    reason = _assert_left_out(runs, caplog, "the folder was replaced while it was read")
    assert f"on each of {reader._ATTEMPTS} tries" in reason
    assert 1 < swapper.count < 10 * reader._ATTEMPTS


def test_a_run_set_aside_by_a_swap_is_not_missed(runs, versions, monkeypatch, caplog):
    """The folder list read between the swap's two renames: ``toy_100`` is missing and
    ``.old-toy_100-*`` is there. The reader waits, and the run it then finds is read."""
    os.rename(runs / "toy_100", runs / ".old-toy_100-1a2b3c4d")
    tmp = runs / ".tmp-toy_100-00000001"
    shutil.copytree(versions["B"], tmp)
    pauses = []

    def finish_swap(attempt):
        pauses.append(attempt)
        if len(pauses) == 1:                   # the swap's second rename, then its clean-up
            os.rename(tmp, runs / "toy_100")
            shutil.rmtree(runs / ".old-toy_100-1a2b3c4d")

    monkeypatch.setattr(reader, "_pause", finish_swap, raising=False)
    loaded, reasons = _left_out(runs, caplog)
    assert [r.name for r in loaded] == ["toy_100"] and not reasons
    assert _version_of(loaded[0], versions) == "B"


def test_a_run_folder_gone_for_a_moment_when_opened_is_read_again(runs, versions, monkeypatch):
    """The folder listed, then gone when it is opened (between the swap's two renames)."""
    os.rename(runs / "toy_100", runs / ".old-toy_100-1a2b3c4d")
    tmp = runs / ".tmp-toy_100-00000001"
    shutil.copytree(versions["B"], tmp)

    def finish_swap(attempt):
        if (runs / ".old-toy_100-1a2b3c4d").exists():
            os.rename(tmp, runs / "toy_100")
            shutil.rmtree(runs / ".old-toy_100-1a2b3c4d")

    monkeypatch.setattr(reader, "_pause", finish_swap)
    run = reader._load_run(runs / "toy_100")
    assert isinstance(run, Run) and _version_of(run, versions) == "B"


def test_a_run_folder_removed_for_good_is_said_not_silently_dropped(runs, monkeypatch):
    monkeypatch.setattr(reader, "_pause", lambda attempt: None)
    shutil.rmtree(runs / "toy_100")
    reason = reader._load_run(runs / "toy_100")
    assert isinstance(reason, str) and reason.startswith("the folder vanished while it was read")
