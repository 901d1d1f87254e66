"""`fusionlib run` in processes of its own: a killed run, Ctrl-C, two concurrent sweeps, a
read-only runs folder, a quiet run and report, and the runner's hardening (tiny experiments).

Split from tests/test_runner.py (whose tiny parameter files and helpers it uses) so that the
two pytest-xdist workers of `make test` (``--dist loadfile``) share the runner's tests."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusionlib.running import runner
from test_runner import FUSIONLIB, REPO, Spy, metrics_of, write_params
from test_runner import stable_code_version  # noqa: F401 - the same autouse pin, for this module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A branch cache holding the tiny runs' branches (trained once here, in this process), as
    test_runner.py's runs leave it for the runs there."""
    cache = tmp_path_factory.mktemp("cache")
    path = write_params(tmp_path_factory.mktemp("prefill"), "prefill", fusion="fixed")
    assert runner.run_all([path], runs_dir=tmp_path_factory.mktemp("prefill-runs"),
                          cache_dir=cache) == 0
    return cache


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
