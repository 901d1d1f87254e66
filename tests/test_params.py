"""Parameter files: one clear line per problem, nothing executed; the shipped params/ validate."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fusionlib.running import runner
from fusionlib.errors import ParamsError
from fusionlib.params import ExperimentParams, load_params
from helpers import cli_here

REPO = Path(__file__).resolve().parents[1]
FUSIONLIB = str(Path(sys.executable).parent / "fusionlib")
SHIPPED = {"fixed_100", "trainable_100", "fixed_50", "trainable_50", "trainable_rf_biased_100",
           "mlp_100", "convex_100", "per_class_convex_100", "gated_100"}

BAD = {
    "typo_key": ("fusoin: {variant: fixed}\n", ["key 'fusoin'", "unknown parameter",
                                                "did you mean 'fusion'"]),
    "typo_section_key": ("head: {patiense: 3}\n", ["key 'head.patiense'", "unknown parameter",
                                                   "did you mean 'patience'"]),
    "wrong_type": ("protocol: {folds: two}\n", ["key 'protocol.folds'", "expected int", "'two'"]),
    "section_not_a_mapping": ("protocol: 3\n", ["key 'protocol'", "expected mapping"]),
    "percentage_0": ("protocol: {data_percentage: 0}\n", ["key 'protocol.data_percentage'",
                                                          "(0, 100]", "got 0"]),
    "percentage_150": ("protocol: {data_percentage: 150}\n", ["key 'protocol.data_percentage'",
                                                              "(0, 100]", "got 150"]),
    "one_fold": ("protocol: {folds: 1}\n", ["key 'protocol.folds'", "at least 2", "got 1"]),
    "unknown_fusion": ("fusion: {variant: trainible}\n", ["key 'fusion.variant'",
                                                          "unknown value 'trainible'",
                                                          "did you mean 'trainable'"]),
    "unknown_sampling": ("protocol: {sampling: smote_plus}\n", ["key 'protocol.sampling'",
                                                               "unknown value 'smote_plus'"]),
    "infinite_rate": ("head: {learning_rate: .inf}\n", ["key 'head.learning_rate'", "finite"]),
    "unknown_clinical_model": ("clinical: {model: random_forst}\n", [
        "key 'clinical.model'", "unknown value 'random_forst'", "did you mean 'random_forest'"]),
    "unknown_clinical_option": ("clinical: {options: {n_estimator: 10}}\n", [
        "key 'clinical.options.n_estimator'", "no option of RandomForestClassifier",
        "did you mean 'n_estimators'"]),
    "bad_clinical_option": ("clinical: {options: {n_estimators: 0}}\n", [
        "key 'clinical.options.n_estimators'", "must be an int in the range [1, inf)"]),
    "option_of_another_model": ("clinical: {model: logistic_regression, options: {n_estimators: 5}}\n",
                                ["key 'clinical.options.n_estimators'", "LogisticRegression"]),
    "flat_rf_trees": ("rf_trees: 100\n", ["key 'rf_trees'", "moved", "clinical.options.n_estimators",
                                          "clinical: {options: {n_estimators: 100}}"]),
    "flat_fusion": ("fusion: trainable\n", ["key 'fusion'", "moved", "fusion.variant",
                                            "fusion: {variant: trainable}"]),
    "flat_head_loss": ("head_loss: focal\n", ["key 'head_loss'", "moved", "head.loss"]),
    "flat_stage2": ("stage2: true\n", ["key 'stage2'", "moved", "stage2: {enabled: true}"]),
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
    good.write_text("name: good\nfusion: {variant: fixed}\nprotocol: {folds: 2}\n")
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
def test_bad_file_one_line_and_nothing_runs(case, workspace, capsys):
    text, expected = BAD[case]
    bad = workspace["dir"] / f"{case}.yaml"
    bad.write_text(text)

    with pytest.raises(ParamsError) as err:
        load_params(bad)
    for part in expected:
        assert part in str(err.value)

    # `fusionlib validate` and `fusionlib run` (fusionlib.cli.main in this process; the console
    # script itself: test_bad_file_from_the_console_script below).
    validate = cli_here(capsys, "validate", bad)
    line = _single_error_line(validate, bad)
    for part in expected:
        assert part in line, line
    assert validate.stdout == ""

    cache = workspace["dir"] / "cache"
    run = cli_here(capsys, "run", workspace["good"], bad, "--runs-dir", workspace["runs"],
                   "--cache-dir", cache)
    assert run.returncode == 2
    assert _single_error_line(run, bad) == line
    assert _tree_state(workspace["runs"]) == workspace["state"]      # earlier run untouched
    assert sorted(p.name for p in workspace["runs"].iterdir()) == ["earlier"]
    assert not cache.exists()


@pytest.mark.parametrize("case", ["typo_key", "invalid_yaml"])
def test_bad_file_from_the_console_script(case, workspace):
    """The installed `fusionlib` command, in a process of its own: one line, exit status 2,
    nothing run, as from fusionlib.cli.main above."""
    text, expected = BAD[case]
    bad = workspace["dir"] / f"{case}.yaml"
    bad.write_text(text)
    validate = subprocess.run([FUSIONLIB, "validate", str(bad)], capture_output=True, text=True,
                              cwd=REPO)
    assert validate.returncode == 2
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
    assert _tree_state(workspace["runs"]) == workspace["state"]
    assert not cache.exists()


def test_duplicate_run_names_are_rejected(workspace, capsys):
    other = workspace["dir"] / "other.yaml"
    other.write_text("name: good\nfusion: {variant: convex}\n")
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
        assert set(raw) == {"name", "description", "fusion", "protocol"}, path
        assert set(raw["protocol"]) == {"data_percentage", "seeds"} and set(raw["fusion"]) == {"variant"}
        params = load_params(path)
        assert params.name == path.stem
        assert params.description.strip()
        assert params.protocol.data_percentage == (50 if path.stem.endswith("_50") else 100)
        assert path.stem.startswith(params.fusion.variant + "_")
        # Three seeds inside every run: the verdict must hold beyond one seed's training.
        assert params.protocol.seed_list() == [0, 1, 2]
        assert params.protocol == defaults.protocol.model_copy(
            update={"data_percentage": params.protocol.data_percentage, "seeds": [0, 1, 2]})
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
def test_unusable_run_names_fail_validate_and_run_alike(case, workspace, capsys):
    """One name rule (fusionlib.params.RUN_NAME_RE) for `validate` and `run`, checked before
    anything runs: a 250-character name used to crash the sweep with "File name too long"."""
    bad = workspace["dir"] / f"{case}.yaml"
    bad.write_text(yaml.safe_dump({"name": BAD_NAMES[case], "fusion": {"variant": "fixed"}}))
    validate = cli_here(capsys, "validate", bad)
    line = _single_error_line(validate, bad)
    assert "key 'name'" in line and "not a usable run name" in line
    run = cli_here(capsys, "run", bad, "--runs-dir", workspace["runs"],
                   "--cache-dir", workspace["dir"] / "cache")
    assert run.returncode == 2 and _single_error_line(run, bad) == line
    assert _tree_state(workspace["runs"]) == workspace["state"]


def test_longest_usable_run_name_is_accepted(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({"name": "a" * 100}))
    assert load_params(path).name == "a" * 100
    path.write_text(yaml.safe_dump({"name": "a" * 101}))
    with pytest.raises(ParamsError, match="not a usable run name"):
        load_params(path)


def test_every_section_is_declared_by_its_component():
    from fusionlib.params import SECTIONS

    owners = {name: model.__module__ for name, model in SECTIONS.items()}
    assert owners == {"data": "fusionlib.datasets", "clinical": "fusionlib.branches.clinical",
                      "image": "fusionlib.branches.image", "fusion": "fusionlib.fusion.settings",
                      "head": "fusionlib.head.settings", "protocol": "fusionlib.splits",
                      "decision": "fusionlib.decision", "stage2": "fusionlib.stage2"}


def test_every_flat_key_gets_the_migration_line():
    """Each key of the flat schema names its new place, as a key and as the YAML to write."""
    from fusionlib.params import LEGACY_KEYS, validate

    samples = {"fusion": "trainable", "decision": "tuned", "stage2": True}
    for key, place in LEGACY_KEYS.items():
        with pytest.raises(ParamsError) as err:
            validate({key: samples.get(key, 1)}, "old.yaml")
        line = str(err.value)
        assert "\n" not in line and line.startswith(f"old.yaml: key {key!r}: moved: write {place} ")
        assert f"`{place.split('.')[0]}: {{" in line


def test_validated_settings_reach_each_component():
    from fusionlib.params import validate

    params = validate({"clinical": {"model": "extra_trees", "options": {"n_estimators": 7}},
                       "head": {"penalty_rule": "min"}, "protocol": {"data_percentage": 50}})
    assert params.protocol.data_percentage == 50.0 and isinstance(params.protocol.data_percentage, float)
    assert params.head.penalty_rule == "min" and params.head.patience == 300   # others: defaults
    assert params.clinical.options == {"n_estimators": 7}


VALIDATE_WITHOUT_TF = """
import sys
from fusionlib.cli import main
assert main(["validate", *sys.argv[1:]]) == 0
print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""


def test_validate_imports_no_tensorflow():
    files = sorted(map(str, (REPO / "params").rglob("*.yaml")))
    proc = subprocess.run([sys.executable, "-c", VALIDATE_WITHOUT_TF, *files], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_settings_modules_import_no_tensorflow():
    """Every module declaring a section validates without TensorFlow."""
    code = ("import sys\n"
            "import fusionlib.datasets, fusionlib.branches.clinical, fusionlib.branches.image, "
            "fusionlib.head, fusionlib.splits, fusionlib.decision, fusionlib.stage2\n"
            "from fusionlib.branches.clinical import ClinicalSettings\n"
            "from fusionlib.head import HeadSettings\n"
            "ClinicalSettings(model='hist_gradient_boosting', options={'max_iter': 5})\n"
            "HeadSettings(loss='focal')\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"




@pytest.mark.parametrize("data, problem", [
    ({"n_patients": 10}, "data.n_patients"),
    ({"n_patients": 1000}, "data.n_patients"),
    ({"dataset": "real", "n_patients": 200}, "applies to the `synthetic` dataset only"),
])
def test_n_patients_is_checked(data, problem):
    from fusionlib.params import validate

    with pytest.raises(Exception, match=re.escape(problem)):
        validate({"data": data})
    assert validate({"data": {"n_patients": 999}}).data.n_patients == 999
