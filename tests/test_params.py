"""Parameter files: one clear line per problem, nothing executed; the shipped params/ validate."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fusionlib import runner
from fusionlib.errors import ParamsError
from fusionlib.params import ExperimentParams, load_params

REPO = Path(__file__).resolve().parents[1]
FUSIONLIB = str(Path(sys.executable).parent / "fusionlib")
SHIPPED = {"fixed_100", "trainable_100", "fixed_50", "trainable_50", "trainable_rf_biased_100",
           "mlp_100", "convex_100", "per_class_convex_100", "gated_100"}

BAD = {
    "typo_key": ("fusoin: fixed\n", ["key 'fusoin'", "unknown parameter", "did you mean 'fusion'"]),
    "wrong_type": ("folds: two\n", ["key 'folds'", "expected int", "'two'"]),
    "percentage_0": ("data_percentage: 0\n", ["key 'data_percentage'", "(0, 100]", "got 0"]),
    "percentage_150": ("data_percentage: 150\n", ["key 'data_percentage'", "(0, 100]", "got 150"]),
    "one_fold": ("folds: 1\n", ["key 'folds'", "at least 2", "got 1"]),
    "unknown_fusion": ("fusion: trainible\n", ["key 'fusion'", "unknown value 'trainible'",
                                               "did you mean 'trainable'"]),
    "unknown_sampling": ("sampling: smote_plus\n", ["key 'sampling'", "unknown value 'smote_plus'"]),
    "invalid_yaml": ("fusion: [fixed\nfolds: 2\n", ["not valid YAML", "line"]),
    "empty": ("", ["empty"]),
    "not_a_mapping": ("- fusion\n- fixed\n", ["expected a mapping"]),
}


def _tree_state(folder: Path) -> dict:
    """Every file under ``folder``: (content hash, mtime)."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tmp_path):
    """A good parameter file and an earlier, complete run folder that must stay untouched."""
    good = tmp_path / "good.yaml"
    good.write_text("name: good\nfusion: fixed\nfolds: 2\n")
    runs = tmp_path / "runs"
    earlier = runs / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "metrics.json").write_text(json.dumps({"summary": {"qwk": {"mean": 0.5}}}))
    (earlier / "done.json").write_text(json.dumps({"status": "ok", "key": "0" * 64}))
    return {"dir": tmp_path, "good": good, "runs": runs, "state": _tree_state(runs)}


def _single_error_line(proc, path: Path) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(f"fusionlib: error: {path}: "), line
    return line


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_file_one_line_and_nothing_runs(case, workspace):
    text, expected = BAD[case]
    bad = workspace["dir"] / f"{case}.yaml"
    bad.write_text(text)

    with pytest.raises(ParamsError) as err:
        load_params(bad)
    for part in expected:
        assert part in str(err.value)

    validate = subprocess.run([FUSIONLIB, "validate", str(bad)], capture_output=True, text=True,
                              cwd=REPO)
    line = _single_error_line(validate, bad)
    for part in expected:
        assert part in line, line
    assert validate.stdout == ""

    cache = workspace["dir"] / "cache"
    run = subprocess.run([FUSIONLIB, "run", str(workspace["good"]), str(bad), "--runs-dir",
                          str(workspace["runs"]), "--cache-dir", str(cache)],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2
    assert _single_error_line(run, bad) == line
    assert _tree_state(workspace["runs"]) == workspace["state"]      # earlier run untouched
    assert sorted(p.name for p in workspace["runs"].iterdir()) == ["earlier"]
    assert not cache.exists()


def test_duplicate_run_names_are_rejected(workspace, capsys):
    other = workspace["dir"] / "other.yaml"
    other.write_text("name: good\nfusion: convex\n")
    rc = runner.run_all([workspace["good"], other], runs_dir=workspace["runs"],
                        cache_dir=workspace["dir"] / "cache")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1
    assert err[0].startswith(f"fusionlib: error: {other}: key 'name': ")
    assert "good" in err[0] and str(workspace["good"]) in err[0]
    assert _tree_state(workspace["runs"]) == workspace["state"]


def test_unusable_run_name_is_rejected(workspace, capsys):
    bad = workspace["dir"] / "slash.yaml"
    bad.write_text("name: ../escape\n")
    assert runner.run_all([bad], runs_dir=workspace["runs"]) == 2
    assert "key 'name'" in capsys.readouterr().err
    assert _tree_state(workspace["runs"]) == workspace["state"]


def test_shipped_params_validate():
    files = sorted((REPO / "params").glob("*.yaml"))
    assert {f.stem for f in files} == SHIPPED
    defaults = ExperimentParams()
    for path in files:
        raw = yaml.safe_load(path.read_text())
        assert set(raw) == {"name", "description", "fusion", "data_percentage"}, path
        params = load_params(path)
        assert params.name == path.stem
        assert params.description.strip()
        assert params.data_percentage == (50 if path.stem.endswith("_50") else 100)
        assert path.stem.startswith(params.fusion + "_")
        assert params.folds == defaults.folds and params.seed == defaults.seed
    assert len(runner.load_all(files)) == len(SHIPPED)
    proc = subprocess.run([FUSIONLIB, "validate", *map(str, files)], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok  ") == len(SHIPPED)


def test_every_params_file_in_subfolders_validates():
    """params/real/ and params/variants/ are not in the default sweep but must stay valid."""
    files = sorted(p for p in (REPO / "params").rglob("*.yaml") if p.parent != REPO / "params")
    assert {p.parent.name for p in files} >= {"real", "variants"}
    for path in files:
        assert load_params(path).name == path.stem


BAD_NAMES = {"long": "n" * 250, "slash": "a/b", "dotdot": "..", "dot": ".", "hidden": ".x",
             "tmp": "tmp-run", "failed": "x.failed-1", "space": "a b", "empty": ""}


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_unusable_run_names_fail_validate_and_run_alike(case, workspace):
    """One name rule (fusionlib.params.RUN_NAME_RE) for `validate` and `run`, checked before
    anything runs: a 250-character name used to crash the sweep with "File name too long"."""
    bad = workspace["dir"] / f"{case}.yaml"
    bad.write_text(yaml.safe_dump({"name": BAD_NAMES[case], "fusion": "fixed"}))
    validate = subprocess.run([FUSIONLIB, "validate", str(bad)], capture_output=True, text=True,
                              cwd=REPO)
    line = _single_error_line(validate, bad)
    assert "key 'name'" in line and "not a usable run name" in line
    run = subprocess.run([FUSIONLIB, "run", str(bad), "--runs-dir", str(workspace["runs"]),
                          "--cache-dir", str(workspace["dir"] / "cache")],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and _single_error_line(run, bad) == line
    assert _tree_state(workspace["runs"]) == workspace["state"]


def test_longest_usable_run_name_is_accepted(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({"name": "a" * 100}))
    assert load_params(path).name == "a" * 100
    path.write_text(yaml.safe_dump({"name": "a" * 101}))
    with pytest.raises(ParamsError, match="not a usable run name"):
        load_params(path)
