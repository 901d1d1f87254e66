"""`fusionlib run` / fusionlib.running.run_all: run folders, up-to-date skipping, failures,
interruption, and the local-process and Dask execution paths (tiny experiments)."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
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

    started = time.time()
    assert runner.run_all(paths, runs_dir=runs_dir, cache_dir=cache_dir) == 0
    assert spy.names == []
    assert time.time() - started < 30
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


def test_killed_run_leaves_no_corrupt_folder_and_rerun_completes(tmp_path, cache_dir, monkeypatch,
                                                                 capsys):
    params_dir = tmp_path / "params"
    names = ["k1", "k2", "k3"]
    paths = [write_params(params_dir, n, fusion=f) for n, f in zip(names, ["fixed", "convex", "mlp"])]
    runs_dir = tmp_path / "runs"
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen([FUSIONLIB, "run", *map(str, paths), "--runs-dir", str(runs_dir),
                             "--cache-dir", str(cache_dir)], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            if (runs_dir / "k1" / "done.json").exists() and list(runs_dir.glob(".tmp-k2-*")):
                break
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            time.sleep(0.1)
        else:
            pytest.fail("the first run did not finish in time")
        time.sleep(1.0)                     # k2's kernel is executing now
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        try:                                # the orphaned kernel of the session we started
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()

    # Every run folder that exists is complete.
    finished = [p for p in runs_dir.iterdir() if not p.name.startswith(".")]
    assert [p.name for p in finished] == ["k1"]
    for run_dir in finished:
        assert json.loads((run_dir / "done.json").read_text())["status"] == "ok"
        assert metrics_of(run_dir)["summary"]["n_folds"] == 2
    assert list(runs_dir.glob(".tmp-k2-*"))              # the interrupted run's leftovers
    k1_done = (runs_dir / "k1" / "done.json").stat().st_mtime_ns

    spy = Spy(runner.execute_run)
    monkeypatch.setattr(runner, "execute_run", spy)
    assert runner.run_all(paths, runs_dir=runs_dir, cache_dir=cache_dir) == 0
    assert spy.names == ["k2", "k3"]
    assert (runs_dir / "k1" / "done.json").stat().st_mtime_ns == k1_done
    assert sorted(p.name for p in runs_dir.iterdir()) == names          # stale .tmp-* removed
    assert "cleanup: removed .tmp-k2-" in capsys.readouterr().err


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


# --------------------------------------------------------------------------- hardening


def _as_from_a_terminal():
    """SIGINT as a terminal gives it: handled by default and not blocked. An ignored or blocked
    signal survives exec, and code run earlier in this pytest process can leave SIGINT so (in
    the full suite a child then ignored Ctrl-C and finished its run)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _start(args, log_path: Path, **kwargs) -> subprocess.Popen:
    """``fusionlib <args>`` in its own session (so a signal to its group is a terminal's Ctrl-C)."""
    return subprocess.Popen([sys.executable, "-m", "fusionlib", *map(str, args)], cwd=REPO,
                            stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_as_from_a_terminal, **kwargs)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kernels_of(pid: int) -> list[str]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "ipykernel"], capture_output=True, text=True)
    return out.stdout.split()


def _cells_run(runs_dir: Path, name: str) -> int:
    """Code cells the kernel has run so far in a run's temporary folder (0 when none yet)."""
    for notebook in runs_dir.glob(f".tmp-{name}-*/executed.ipynb"):
        try:
            cells = json.loads(notebook.read_text())["cells"]
        except (OSError, ValueError, KeyError):
            return 0
        return sum(1 for c in cells if c.get("execution_count"))
    return 0


@pytest.mark.parametrize("engine", ["kernel", "inprocess"])
def test_ctrl_c_stops_quietly_with_exit_130(tmp_path, engine):
    """Ctrl-C while a notebook executes (in a kernel, or in the command's own process): one line,
    exit 130, no traceback, no half-written run."""
    path = write_params(tmp_path / "params", "interrupted", fusion="fixed")
    runs_dir = tmp_path / "runs"
    log = tmp_path / "run.log"
    # An empty cache: the notebook trains the branches (tens of seconds), so the interrupt lands
    # while it executes; with cached branches a fast run could finish within the wait below.
    proc = _start(["run", path, "--runs-dir", runs_dir, "--cache-dir", tmp_path / "empty-cache",
                   "--force", "--engine", engine], log)
    try:
        deadline = time.time() + 180
        # Wait until the notebook has run a cell (papermill saves it after each one), so the
        # interrupt lands while it executes the notebook, not while a kernel starts up.
        while not ((engine != "kernel" or _kernels_of(proc.pid))
                   and _cells_run(runs_dir, "interrupted") >= 2):
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "no kernel started in time"
            time.sleep(0.1)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert proc.wait(timeout=120) == 130, log.read_text()
    finally:
        _kill_group(proc)
    out = log.read_text()
    assert "Traceback" not in out and "ZMQError" not in out, out
    assert out.rstrip().splitlines()[-1] == \
        "fusionlib: interrupted; finished runs are kept, rerun to continue"
    assert list(runs_dir.iterdir()) == []                # nothing half-written, no lock left


def test_read_only_runs_folder_is_one_line_error(tmp_path, other_user):
    folder, prefix, env = other_user
    path = write_params(folder / "params", "ro_run", fusion="fixed")
    runs_dir = folder / "runs"
    (runs_dir / "earlier").mkdir(parents=True)
    (runs_dir / "earlier" / "done.json").write_text('{"status": "ok"}')
    runs_dir.chmod(0o555)
    cache = folder / "home" / "cache"
    proc = subprocess.run([*prefix, sys.executable, "-m", "fusionlib", "run", str(path),
                           "--runs-dir", str(runs_dir), "--cache-dir", str(cache)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"fusionlib: error: {runs_dir}: the runs folder (--runs-dir) is not writable: "
                     "Permission denied"], proc.stderr
    assert sorted(p.name for p in runs_dir.iterdir()) == ["earlier"]
    assert (runs_dir / "earlier" / "done.json").read_text() == '{"status": "ok"}'


def test_two_concurrent_runs_execute_each_experiment_once(tmp_path, cache_dir):
    paths = [write_params(tmp_path / "params", "c_fixed", fusion="fixed"),
             write_params(tmp_path / "params", "c_convex", fusion="convex")]
    runs_dir = tmp_path / "runs"
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    procs = [_start(["run", *paths, "--runs-dir", runs_dir, "--cache-dir", cache_dir], log)
             for log in logs]
    try:
        assert [p.wait(timeout=600) for p in procs] == [0, 0]
    finally:
        for proc in procs:
            _kill_group(proc)
    out = "".join(log.read_text() for log in logs)
    for name in ("c_fixed", "c_convex"):
        assert out.count(f"run {name}: ok in") == 1, out         # executed once in total
        assert (out.count(f"run {name}: already done by another fusionlib run")
                + out.count(f"run {name}: up to date")) == 1, out
        assert json.loads((runs_dir / name / "done.json").read_text())["status"] == "ok"
    assert sorted(p.name for p in runs_dir.iterdir()) == ["c_convex", "c_fixed"]


def test_branch_cache_entry_is_computed_once_by_concurrent_processes(tmp_path):
    """Two processes ask for the same cache entry at once: one computes, the other reads it."""
    script = (
        "import sys, time\n"
        "from fusionlib.experiment import BranchCache\n"
        "from fusionlib.branches import BranchOutput\n"
        "import numpy as np\n"
        "cache = BranchCache(sys.argv[1])\n"
        "def compute():\n"
        "    open(sys.argv[2], 'a').write('computed\\n')\n"
        "    time.sleep(3)\n"
        "    z = np.zeros((2, 3))\n"
        "    return BranchOutput(np.arange(2), np.arange(2), z, z, {})\n"
        "cache.get_or_compute('entry', compute)\n")
    marks = tmp_path / "computed.txt"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cache"), str(marks)],
                              cwd=REPO) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert marks.read_text() == "computed\n"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["entry.npz"]


NOISE = ("Alternative text is missing", "Kernel is running over TCP without encryption",
         "KeyboardInterrupt caught in kernel", "ZMQError", "Traceback")


def test_a_normal_run_and_report_are_quiet(tmp_path, cache_dir):
    path = write_params(tmp_path / "params", "quiet", fusion="fixed")
    runs_dir, out_dir = tmp_path / "runs", tmp_path / "reports"
    outputs = []
    for args in (["run", path, "--runs-dir", runs_dir, "--cache-dir", cache_dir],
                 ["report", "--runs-dir", runs_dir, "--out", out_dir]):
        proc = subprocess.run([sys.executable, "-m", "fusionlib", *map(str, args)], cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(proc.stdout + proc.stderr)
    for noise in NOISE:
        assert noise not in "".join(outputs), (noise, outputs)
    assert (out_dir / "runs" / "quiet.html").is_file()


def test_kernel_channel_shutdown_race_is_silent_and_other_thread_errors_are_not(monkeypatch):
    import errno
    import threading

    import zmq

    from fusionlib.running.runner import quiet_kernel_channel_races

    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_type))
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)   # restored after the test
    quiet_kernel_channel_races()
    quiet_kernel_channel_races()     # idempotent: wraps the previous hook once

    def raise_(exc):
        raise exc

    for exc in (zmq.ZMQError(errno.ENOTSOCK), zmq.ZMQError(errno.EAGAIN), ValueError("boom")):
        thread = threading.Thread(target=raise_, args=(exc,))
        thread.start()
        thread.join()
    # The ENOTSOCK race is dropped; any other ZMQ error and any other exception still reach
    # the previous hook.
    assert seen == [zmq.ZMQError, ValueError]


def test_the_runner_asks_the_data_layer_for_a_cheap_fingerprint(tmp_path, monkeypatch):
    """The run key's data part comes from datasets.data_fingerprint (stamps, table digests, a
    listing of image folders), not from loading every dataset in the parent process."""
    from fusionlib import datasets
    from fusionlib.data import CLINICAL_FILENAME, IMAGE_MODALITIES
    from fusionlib.errors import DataError

    real = datasets.DataSettings(dataset="real", data_dir=str(tmp_path / "dfu"))
    with pytest.raises(DataError, match="not found"):
        datasets.data_fingerprint(real)
    (tmp_path / "dfu" / "thermal").mkdir(parents=True)
    (tmp_path / "dfu" / CLINICAL_FILENAME).write_text("a,b\n1,2\n")
    first = datasets.data_fingerprint(real)
    assert datasets.data_fingerprint(real) == first
    (tmp_path / "dfu" / "thermal" / "x.png").write_bytes(b"png")
    second = datasets.data_fingerprint(real)
    assert second != first                                   # an image added
    (tmp_path / "dfu" / CLINICAL_FILENAME).write_text("a,b\n1,3\n")
    assert datasets.data_fingerprint(real) not in (first, second)   # the table changed

    def no_loading(*args, **kwargs):
        raise AssertionError("the runner loaded a dataset")

    monkeypatch.setattr(datasets, "load_dataset", no_loading)
    # Validation asks for thermal maps where the real layout keeps them.
    thermal = tmp_path / "dfu" / IMAGE_MODALITIES["thermal_map"].folder
    thermal.mkdir(parents=True, exist_ok=True)
    (thermal / "x.png").write_bytes(b"png")
    path = write_params(tmp_path / "params", "fp", data={"dataset": "real",
                                                         "data_dir": str(tmp_path / "dfu")})
    # Nothing executes (_execute is stubbed): validation and fingerprints only, no outcome -> 1.
    monkeypatch.setattr(runner, "_execute", lambda *a, **k: None)
    assert runner.run_all([path], runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache") == 1


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
