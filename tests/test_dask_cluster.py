"""`fusionlib run --scheduler` on a real Dask cluster: a `dask scheduler` and two `dask worker`
processes on 127.0.0.1, started here as `fusionlib run --scheduler` users start them. A tiny
sweep (two runs sharing one branch group, two seeds: two branch sets) goes through it and
through the process pool (`jobs=2`); Dask must train the branch sets first, as the pool does,
and both must give the same predictions."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fusionlib.running import runner

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = {"protocol": {"data_percentage": 30, "folds": 2, "seeds": [0, 1]},
        "image": {"size": 16, "epochs": 1, "inner_folds": 2},
        "clinical": {"options": {"n_estimators": 10}, "inner_folds": 2},
        "head": {"max_epochs": 20, "patience": 5}}
RUNS = ("tiny_fixed", "tiny_trainable")
START_S = 60


def _dask_commands() -> tuple[list[str], list[str]] | None:
    """The scheduler and worker commands of this environment's Dask CLI (``dask scheduler`` or
    the older ``dask-scheduler``), or None when it has neither."""
    if (BIN / "dask").is_file():
        return [str(BIN / "dask"), "scheduler"], [str(BIN / "dask"), "worker"]
    if (BIN / "dask-scheduler").is_file() and (BIN / "dask-worker").is_file():
        return [str(BIN / "dask-scheduler")], [str(BIN / "dask-worker")]
    return None


def _start(command: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    """In a session of its own, so its whole process group (a worker's nanny and worker
    process, their notebook kernels) can be stopped at once."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
    return subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to each process group, then SIGKILL to those still there after 10 s."""
    for proc in processes:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # also kernels a nanny left behind
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.fixture
def dask_cluster(tmp_path):
    """The address of a scheduler on 127.0.0.1 (a free port chosen by it) with two workers of
    one thread each; scheduler and workers are stopped afterwards, whatever happened."""
    commands = _dask_commands()
    if commands is None:
        pytest.skip(f"no Dask command line (dask or dask-scheduler/dask-worker) in {BIN}")
    scheduler_cmd, worker_cmd = commands
    folder = tmp_path / "dask"
    folder.mkdir()
    scheduler_file = folder / "scheduler.json"
    processes = []
    try:
        # --idle-timeout: should this test die without its teardown, the scheduler exits by
        # itself, and the workers (--death-timeout) after it.
        processes.append(_start([*scheduler_cmd, "--host", "127.0.0.1", "--port", "0",
                                 "--no-dashboard", "--idle-timeout", "900s",
                                 "--scheduler-file", str(scheduler_file)],
                                folder / "scheduler.log", folder))
        deadline = time.monotonic() + START_S
        while not scheduler_file.is_file() or not scheduler_file.read_text().strip():
            if processes[0].poll() is not None or time.monotonic() > deadline:
                pytest.fail("the Dask scheduler did not start:\n"
                            + (folder / "scheduler.log").read_text()[-3000:])
            time.sleep(0.2)
        time.sleep(0.2)                             # the file is written in one go; be safe
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:"), address
        for i in range(2):
            processes.append(_start([*worker_cmd, "--scheduler-file", str(scheduler_file),
                                     "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
                                     "--no-dashboard", "--death-timeout", "60",
                                     "--local-directory", str(folder / f"worker-{i}"),
                                     "--name", f"fusionlib-test-{i}"],
                                    folder / f"worker-{i}.log", REPO))
        from dask.distributed import Client

        with Client(address, timeout=START_S) as client:
            try:
                client.wait_for_workers(2, timeout=START_S)
            except TimeoutError:
                logs = "\n".join((folder / f"worker-{i}.log").read_text()[-2000:] for i in range(2))
                pytest.fail(f"two Dask workers did not join in {START_S} s:\n{logs}")
        yield address
    finally:
        _stop(processes)


def write_params(folder: Path, name: str, fusion: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "description": f"test run {name}",
                                    "fusion": {"variant": fusion}, **TINY}))
    return path


def _screen_lines(err: str) -> list[str]:
    """The lines run_all wrote, without its progress bar (``runs: ...``)."""
    lines = (line.split("\r")[-1].strip() for line in err.splitlines())
    return [line for line in lines if line and not line.startswith("runs:")]


def test_dask_cluster_trains_branch_sets_first_and_matches_the_process_pool(dask_cluster, tmp_path,
                                                                            capsys):
    import pandas as pd

    paths = [write_params(tmp_path / "params", name, name.split("_")[1]) for name in RUNS]
    dask_runs, pool_runs = tmp_path / "runs-dask", tmp_path / "runs-pool"

    rc_dask = runner.run_all(paths, runs_dir=dask_runs, cache_dir=tmp_path / "cache-dask",
                             scheduler=dask_cluster)
    dask_err = capsys.readouterr().err
    rc_pool = runner.run_all(paths, runs_dir=pool_runs, cache_dir=tmp_path / "cache-pool", jobs=2)
    pool_err = capsys.readouterr().err
    with capsys.disabled():                 # the order of the lines, shown under pytest -s
        print("\n--- Dask run's lines:\n" + "\n".join(_screen_lines(dask_err)))
    assert rc_dask == 0, dask_err
    assert rc_pool == 0, pool_err

    # Branches first: the two (data %, seed) sets are trained as tasks of their own and
    # reported before any run's line; the notebooks then only read them from the cache.
    lines = _screen_lines(dask_err)
    branch_at = [i for i, line in enumerate(lines) if line.startswith("branches")]
    run_at = [i for i, line in enumerate(lines) if line.startswith("run ")]
    assert "branches: 2 (data %, seed) sets for 2 run(s) first" in dask_err, lines
    assert sum("trained in" in lines[i] for i in branch_at) == 2, lines
    assert "not prefilled" not in dask_err
    assert len(run_at) == 2 and max(branch_at) < min(run_at), lines
    for runs_dir in (dask_runs, pool_runs):
        for name in RUNS:
            prov = json.loads((runs_dir / name / "provenance.json").read_text())
            assert prov["branch_cache"]["misses"] == 0, (runs_dir.name, name)

    # The same predictions: same seeds, same CPU arithmetic, whichever executor ran them.
    for name in RUNS:
        on_dask = pd.read_csv(dask_runs / name / "predictions.csv")
        on_pool = pd.read_csv(pool_runs / name / "predictions.csv")
        assert sorted(on_dask["seed"].unique()) == [0, 1]
        pd.testing.assert_frame_equal(on_dask, on_pool, check_exact=True)
