"""`fusionlib run` / fusionlib.running.run_all: run folders, up-to-date skipping, failures,
interruption, and the local-process and Dask execution paths (tiny experiments).

The tests that start `fusionlib run` processes of their own (killed, Ctrl-C, concurrent runs,
a read-only folder, a quiet run) are in tests/test_runner_processes.py, so that the two
pytest-xdist workers of `make test` share the runner's tests."""

import json
import os
import pickle
import sys
from pathlib import Path

import pytest
import yaml

from fusionlib.running import Outcome, Task, runner
from fusionlib.running.scheduling import waves

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FUSIONLIB = str(Path(sys.executable).parent / "fusionlib")
TINY = {"protocol": {"data_percentage": 30, "folds": 2}, "image": {"epochs": 2, "inner_folds": 2},
        "clinical": {"options": {"n_estimators": 20}}, "head": {"max_epochs": 50, "patience": 20}}
RUN_FILES = ("executed.ipynb", "params.yaml", "metrics.json", "predictions.csv", "weights.json",
             "provenance.json", "done.json")


def write_params(folder: Path, name: str, fusion: str = "trainable", **sections) -> Path:
    """A tiny run's file; ``sections`` change some keys of TINY's sections."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    merged = {**TINY, **{k: {**TINY.get(k, {}), **v} for k, v in sections.items()}}
    path.write_text(yaml.safe_dump({"name": name, "description": f"test run {name}",
                                    "fusion": {"variant": fusion}, **merged}))
    return path


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def fold_qwks(run_dir: Path) -> list:
    return [row["qwk"] for row in metrics_of(run_dir)["folds"]]


class Spy:
    """Wraps runner.execute_run, recording which runs were executed."""

    def __init__(self, real):
        self.real, self.names = real, []

    def __call__(self, task):
        self.names.append(task.name)
        return self.real(task)


_REAL_CODE_VERSION = runner.code_version


@pytest.fixture(scope="module", autouse=True)
def stable_code_version():
    """Others may edit fusionlib/*.py while this module runs; pin the code version it sees."""
    version = runner.code_version()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "code_version", lambda notebook=runner.DEFAULT_NOTEBOOK: version)
        yield version


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory, cache_dir):
    """Two experiments differing only in fusion, run once on the local path."""
    params_dir = tmp_path_factory.mktemp("params")
    paths = [write_params(params_dir, "tiny_trainable", fusion="trainable"),
             write_params(params_dir, "tiny_fixed", fusion="fixed")]
    runs_dir = tmp_path_factory.mktemp("runs")
    rc = runner.run_all(paths, runs_dir=runs_dir, cache_dir=cache_dir)
    return {"rc": rc, "paths": paths, "runs_dir": runs_dir}


def test_runs_write_complete_folders(local_runs):
    assert local_runs["rc"] == 0
    runs_dir = local_runs["runs_dir"]
    for name in ("tiny_trainable", "tiny_fixed"):
        run_dir = runs_dir / name
        for f in RUN_FILES:
            assert (run_dir / f).is_file(), f"{name}: {f} missing"
        done = json.loads((run_dir / "done.json").read_text())
        assert done["status"] == "ok" and len(done["key"]) == 64
        assert done["name"] == name
        summary = metrics_of(run_dir)["summary"]
        assert summary["name"] == name and summary["n_folds"] == 2
        assert -1 <= summary["qwk"]["mean"] <= 1
        assert yaml.safe_load((run_dir / "params.yaml").read_text())["name"] == name
        executed = json.loads((run_dir / "executed.ipynb").read_text())
        assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])
    # nothing temporary left behind
    assert sorted(p.name for p in runs_dir.iterdir()) == ["tiny_fixed", "tiny_trainable"]


def test_fusion_only_change_reuses_cached_branches(local_runs):
    prov = json.loads((local_runs["runs_dir"] / "tiny_fixed" / "provenance.json").read_text())
    assert prov["branch_cache"]["hits"] > 0
    assert prov["branch_cache"]["misses"] == 0
    first = json.loads((local_runs["runs_dir"] / "tiny_trainable" / "provenance.json").read_text())
    assert first["branch_cache"]["misses"] > 0


def test_second_run_executes_nothing_and_force_reexecutes(local_runs, cache_dir, monkeypatch, capsys):
    runs_dir, paths = local_runs["runs_dir"], local_runs["paths"]
    done = [runs_dir / n / "done.json" for n in ("tiny_trainable", "tiny_fixed")]
    before = [p.stat().st_mtime_ns for p in done]
    spy = Spy(runner.execute_run)
    monkeypatch.setattr(runner, "execute_run", spy)

    assert runner.run_all(paths, runs_dir=runs_dir, cache_dir=cache_dir) == 0
    assert spy.names == []                  # nothing executed: no notebook, no branch training
    assert [p.stat().st_mtime_ns for p in done] == before
    out = capsys.readouterr()
    assert "run tiny_trainable: up to date" in out.err
    assert "skipped" in out.out

    assert runner.run_all(paths[1:], runs_dir=runs_dir, cache_dir=cache_dir, force=True) == 0
    assert spy.names == ["tiny_fixed"]
    assert done[1].stat().st_mtime_ns != before[1]
    assert done[0].stat().st_mtime_ns == before[0]


def test_run_key_follows_params_code_and_data():
    key = runner.run_key({"fusion": "fixed"}, "code", "data")
    assert key == runner.run_key({"fusion": "fixed"}, "code", "data")
    assert key != runner.run_key({"fusion": "trainable"}, "code", "data")
    assert key != runner.run_key({"fusion": "fixed"}, "code2", "data")
    assert key != runner.run_key({"fusion": "fixed"}, "code", "data2")


def test_code_version_tracks_notebook_cells_not_outputs(tmp_path):
    import nbformat

    nb = nbformat.read(runner.DEFAULT_NOTEBOOK, as_version=4)
    base = runner._notebook_digest(runner.DEFAULT_NOTEBOOK)
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", text="hello")]
    nb.cells[-1].execution_count = 3
    with_outputs = tmp_path / "with_outputs.ipynb"
    nbformat.write(nb, with_outputs)
    assert runner._notebook_digest(with_outputs) == base
    nb.cells[-1].source += "\n# edited"
    edited = tmp_path / "edited.ipynb"
    nbformat.write(nb, edited)
    assert runner._notebook_digest(edited) != base


def test_code_version_tracks_subpackages_but_not_the_report(tmp_path, monkeypatch):
    """An edit in a subpackage (fusionlib/results/...) makes runs stale; one in report/ does not."""
    import shutil

    package = tmp_path / "fusionlib"
    shutil.copytree(runner.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runner, "PACKAGE_DIR", package)
    code_version = _REAL_CODE_VERSION      # the module pins runner.code_version
    base = code_version()
    (package / "report" / "html.py").write_text((package / "report" / "html.py").read_text() + "\n# x\n")
    assert code_version() == base
    (package / "results" / "writer.py").write_text(
        (package / "results" / "writer.py").read_text() + "\n# x\n")
    assert code_version() != base


def test_failing_run_is_reported_and_others_finish(tmp_path, cache_dir, capsys):
    """One notebook raises (a backbone weights file that does not exist); jobs=2 processes."""
    params_dir = tmp_path / "params"
    paths = [write_params(params_dir, "good", fusion="convex"),
             write_params(params_dir, "bad",
                          image={"backbone_weights": str(tmp_path / "missing.weights.h5")})]
    runs_dir = tmp_path / "runs"
    rc = runner.run_all(paths, runs_dir=runs_dir, cache_dir=cache_dir, jobs=2)
    out = capsys.readouterr()
    assert rc == 1
    assert (runs_dir / "good" / "done.json").is_file()
    assert metrics_of(runs_dir / "good")["summary"]["fusion"] == "convex"
    assert not (runs_dir / "bad").exists()
    lines = [line for line in out.err.splitlines() if "run bad FAILED" in line]
    assert len(lines) == 1, out.err
    assert "run bad FAILED in cell " in lines[0] and "Error: " in lines[0]
    assert "missing.weights.h5" in lines[0]
    failed = runs_dir / "bad.failed.ipynb"
    assert failed.is_file()
    assert any(o.get("output_type") == "error" for c in json.loads(failed.read_text())["cells"]
               for o in c.get("outputs", []))
    summary = {line.split()[0]: line.split()[1] for line in out.out.splitlines()[1:] if line.strip()}
    assert summary == {"good": "ok", "bad": "failed"}
    assert not [p for p in runs_dir.iterdir() if p.name.startswith(".")]


def test_interrupted_swap_is_recovered(tmp_path):
    runs_dir = tmp_path / "runs"
    old = runs_dir / ".old-x-1234abcd"
    old.mkdir(parents=True)
    (old / "done.json").write_text(json.dumps({"status": "ok", "key": "k"}))
    orphan = runs_dir / ".tmp-y-deadbeef"
    orphan.mkdir()
    (orphan / runner.OWNER_FILE).write_text(json.dumps({"pid": 2 ** 22 + 12345,
                                                        "host": __import__("socket").gethostname()}))
    live = runs_dir / ".tmp-z-cafecafe"
    live.mkdir()
    (live / runner.OWNER_FILE).write_text(json.dumps({"pid": os.getpid(),
                                                      "host": __import__("socket").gethostname()}))
    actions = runner.clean_stale(runs_dir)
    assert "restored x" in actions
    assert (runs_dir / "x" / "done.json").is_file()
    assert not orphan.exists()
    assert live.exists()                    # a run still in progress is left alone


def test_kernel_and_in_process_engines_give_identical_runs(local_runs, tmp_path, cache_dir):
    """The local runs above ran in this process (engine ``auto``: pytest's main thread); the same
    experiment in a Jupyter kernel of its own writes byte-identical results, and its executed
    notebook shows the same cells' outputs by type."""
    assert runner.resolve_engine("auto") == "inprocess"
    runs_dir = tmp_path / "runs"
    assert runner.run_all(local_runs["paths"][:1], runs_dir=runs_dir, cache_dir=cache_dir,
                          engine="kernel") == 0
    kernel_dir, local_dir = runs_dir / "tiny_trainable", local_runs["runs_dir"] / "tiny_trainable"
    for f in ("predictions.csv", "weights.json"):
        assert (kernel_dir / f).read_bytes() == (local_dir / f).read_bytes(), f
    assert metrics_of(kernel_dir)["folds"] == metrics_of(local_dir)["folds"]

    def shown(run_dir):
        cells = json.loads((run_dir / "executed.ipynb").read_text())["cells"]
        return [sorted({o["output_type"] for o in c.get("outputs", []) if o["output_type"] != "stream"})
                for c in cells if c["cell_type"] == "code"]

    assert shown(kernel_dir) == shown(local_dir)


def test_dask_scheduler_matches_local(local_runs, tmp_path, cache_dir):
    from dask.distributed import LocalCluster

    runs_dir = tmp_path / "runs"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        rc = runner.run_all(local_runs["paths"][:1], runs_dir=runs_dir, cache_dir=cache_dir,
                            scheduler=cluster.scheduler_address)
    assert rc == 0
    dask_dir, local_dir = runs_dir / "tiny_trainable", local_runs["runs_dir"] / "tiny_trainable"
    for f in RUN_FILES:
        assert (dask_dir / f).is_file()
    assert fold_qwks(dask_dir) == pytest.approx(fold_qwks(local_dir), abs=1e-9)
    dask_summary, local_summary = metrics_of(dask_dir)["summary"], metrics_of(local_dir)["summary"]
    for metric in ("qwk", "accuracy", "macro_f1"):
        assert dask_summary[metric]["mean"] == pytest.approx(local_summary[metric]["mean"], abs=1e-9)
    assert (json.loads((dask_dir / "done.json").read_text())["key"]
            == json.loads((local_dir / "done.json").read_text())["key"])


def test_a_task_and_its_outcome_travel_by_pickle_and_a_status_is_checked():
    task = Task("a", {"name": "a"}, "k" * 64, runs_dir="runs", cache_dir=".cache", notebook="nb",
                cwd=".", params_file="a.yaml", code_version="c", data_fingerprint="d")
    assert pickle.loads(pickle.dumps(task)) == task and task.force is False
    outcome = pickle.loads(pickle.dumps(Outcome("a", "ok", seconds=1.5, qwk=0.5, notes=["n"])))
    assert (outcome.status, outcome.qwk, outcome.notes, outcome.message) == ("ok", 0.5, ["n"], None)
    with pytest.raises(ValueError, match="got 'done'"):
        Outcome("a", "done")


def test_parallel_runs_wait_for_the_run_that_trains_their_branches():
    def task(name, **params):
        return Task(name, {"name": name, "fusion": {"variant": "fixed"},
                           "protocol": {"data_percentage": 100, "seed": 0}, **params},
                    key="", runs_dir="", cache_dir="", notebook="", cwd="", params_file="",
                    code_version="", data_fingerprint="")

    tasks = [task("f100"), task("t100", fusion={"variant": "trainable"}, head={"max_epochs": 5}),
             task("f50", protocol={"data_percentage": 50, "seed": 0}),
             task("t50", fusion={"variant": "mlp"}, protocol={"data_percentage": 50, "seed": 0}),
             task("s1", protocol={"data_percentage": 100, "seed": 1})]
    leaders, followers = waves(tasks)
    assert [t.name for t in leaders] == ["f100", "f50", "s1"]
    assert {k: [t.name for t in v] for k, v in followers.items()} == {
        "f100": ["t100"], "f50": ["t50"], "s1": []}


def test_parallel_runs_prefill_each_seeds_branches(local_runs, tmp_path, capsys):
    """jobs=2: the branches of every (group, seed) are trained first, side by side; the
    notebooks then only read them, and seed 0 gives exactly the one-seed runs' numbers."""
    import pandas as pd

    params_dir = tmp_path / "params"
    paths = [write_params(params_dir, name, fusion=fusion, protocol={"seeds": [0, 1]})
             for name, fusion in (("tiny_trainable", "trainable"), ("tiny_fixed", "fixed"))]
    runs_dir = tmp_path / "runs"
    assert runner.run_all(paths, runs_dir=runs_dir, cache_dir=tmp_path / "cache", jobs=2) == 0
    err = capsys.readouterr().err
    assert "branches: 2 (data %, seed) sets for 2 run(s) first" in err
    assert err.count("trained in") == 2 and "not prefilled" not in err
    for name in ("tiny_trainable", "tiny_fixed"):
        prov = json.loads((runs_dir / name / "provenance.json").read_text())
        assert prov["branch_cache"]["misses"] == 0 and prov["seeds"] == [0, 1]
        mine = pd.read_csv(runs_dir / name / "predictions.csv")
        one_seed = pd.read_csv(local_runs["runs_dir"] / name / "predictions.csv")
        assert sorted(mine["seed"].unique()) == [0, 1]
        pd.testing.assert_frame_equal(mine[mine["seed"] == 0].reset_index(drop=True), one_seed)


class _Papermill:
    """Stands in for papermill: its first ``failures`` calls raise ``error``."""

    def __init__(self, failures: int, error: Exception):
        self.failures, self.error, self.calls = failures, error, []

    def execute_notebook(self, notebook, output, **kwargs):
        self.calls.append(kwargs)
        if len(self.calls) <= self.failures:
            raise self.error


KERNEL_DIED = RuntimeError("Kernel died before replying to kernel_info")
KERNEL_ENGINE = {"kernel_name": runner.KERNEL_NAME}


def _task():
    return Task("a", {"name": "a"}, "k" * 64, runs_dir="runs", cache_dir=".cache", notebook="nb",
                cwd=".", params_file="a.yaml", code_version="c", data_fingerprint="d")


def test_a_kernel_that_dies_while_starting_is_started_again_and_noted(tmp_path):
    pm, outcome = _Papermill(2, KERNEL_DIED), Outcome("a", "failed")
    runner.execute_notebook(pm, _task(), tmp_path / "out.ipynb", {}, KERNEL_ENGINE, outcome)
    assert len(pm.calls) == 3 == runner.KERNEL_START_TRIES
    assert pm.calls[0]["kernel_name"] == runner.KERNEL_NAME
    assert outcome.notes == [f"its kernel died while starting ({KERNEL_DIED}); started another"] * 2


def test_kernel_starts_are_bounded_and_other_errors_are_not_retried(tmp_path):
    pm, outcome = _Papermill(runner.KERNEL_START_TRIES, KERNEL_DIED), Outcome("a", "failed")
    with pytest.raises(RuntimeError, match="Kernel died"):
        runner.execute_notebook(pm, _task(), tmp_path / "out.ipynb", {}, KERNEL_ENGINE, outcome)
    assert len(pm.calls) == runner.KERNEL_START_TRIES
    for error, engine in [(RuntimeError("a cell's own error"), KERNEL_ENGINE),
                          (KERNEL_DIED, {"engine_name": "fusionlib-inprocess"}),  # no kernel
                          (OSError(28, "No space left on device"), KERNEL_ENGINE)]:
        pm = _Papermill(1, error)
        with pytest.raises(type(error)):
            runner.execute_notebook(pm, _task(), tmp_path / "out.ipynb", {}, engine,
                                    Outcome("a", "failed"))
        assert len(pm.calls) == 1
