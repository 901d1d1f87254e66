"""Parameter files -> executed experiment notebooks under ``runs/<name>/``.

:func:`run_all` is what ``fusionlib run`` calls. In order:

1. every parameter file is validated (:func:`fusionlib.params.load_params`)
   before anything executes; one bad file prints one line and nothing runs;
2. each run gets a *run key*: the SHA-256 of its parameters, the code version
   (the ``fusionlib/*.py`` sources and the notebook's cells) and the data
   fingerprint. A run whose ``runs/<name>/done.json`` holds the same key is up
   to date and skipped;
3. every other run executes ``notebooks/experiment.ipynb`` with papermill into
   ``runs/.tmp-<name>-<random>/``; ``done.json`` is written last and the folder
   is swapped into ``runs/<name>/`` by renames, so an interrupted run leaves
   either the previous complete run or none. Stale temporary folders are
   removed at the start of the next call;
4. a failing notebook is reported with its failing cell and kept as
   ``runs/<name>.failed.ipynb``; the other runs go on.

Each run is executed under a lock (``runs/.lock-<name>``, ``fcntl.flock``): a
second ``fusionlib run`` on the same folders waits for it and then skips it
("already done by another fusionlib run"). Run names follow
:data:`fusionlib.params.RUN_NAME_RE`, so they never start with a dot and never
collide with the runner's own ``.tmp-*``, ``.old-*`` and ``.lock-*`` entries.

Runs execute one after another (``jobs=1``), in local worker processes
(``jobs>1``) or on a Dask distributed scheduler (``scheduler="host:port"``);
the same per-run function :func:`execute_run` does the work in every case.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from ._io import OLD_PREFIX, atomic_write_text, file_lock, swap_into_place, writable_folder
from .errors import FusionlibError, ParamsError
from .paths import REPO_ROOT, project_root
from .results.files import DONE_FILE, RESULT_FILES

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_NOTEBOOK = REPO_ROOT / "notebooks" / "experiment.ipynb"
KERNEL_NAME = "python3"
QUIET_KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]
"""The kernel's own log only carries start/shutdown noise (plain-TCP warning, the interrupt
jupyter_client sends before shutting a kernel down, ZMQ errors when Ctrl-C stops a run);
a failing cell is reported by papermill from the cell's error, not through this log."""
TMP_PREFIX = ".tmp-"
LOCK_PREFIX = ".lock-"
OWNER_FILE = ".owner.json"
_STALE_FOREIGN_SECONDS = 2 * 24 * 3600
NOT_EXPERIMENT_CODE = frozenset({"__main__.py", "cli.py", "study.py", "report"})
"""Modules and packages (paths relative to ``fusionlib/``) the experiment notebook never runs:
editing them does not make runs stale."""


# --------------------------------------------------------------------------- keys


def code_version(notebook: str | Path = DEFAULT_NOTEBOOK) -> str:
    """Hash of the package's sources (every ``.py`` file, subpackages included) and the
    notebook's cell sources.

    The command line and the HTML report (:data:`NOT_EXPERIMENT_CODE`) are left
    out: they do not change what an experiment computes. The notebook is hashed
    by its cells (type, source, tags) and kernel, not its bytes, so saving it
    with outputs from JupyterLab does not invalidate runs.
    """
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = path.relative_to(PACKAGE_DIR)
        if relative.as_posix() in NOT_EXPERIMENT_CODE or relative.parts[0] in NOT_EXPERIMENT_CODE:
            continue
        digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(_notebook_digest(notebook).encode())
    return digest.hexdigest()[:16]


def _notebook_digest(notebook: str | Path) -> str:
    data = json.loads(Path(notebook).read_text(encoding="utf-8"))
    cells = []
    for cell in data.get("cells", []):
        source = cell.get("source", "")
        cells.append([cell.get("cell_type"), "".join(source) if isinstance(source, list) else source,
                      sorted(cell.get("metadata", {}).get("tags", []))])
    kernel = data.get("metadata", {}).get("kernelspec", {}).get("name")
    return hashlib.sha256(json.dumps([kernel, cells]).encode()).hexdigest()


def run_key(params_dict: dict, code: str, data_fingerprint: str) -> str:
    text = json.dumps({"params": params_dict, "code": code, "data": data_fingerprint},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- validation


def load_all(params_paths) -> list:
    """``[(path, ExperimentParams)]`` for every file; the first problem raises ParamsError."""
    from .params import load_params

    loaded, names = [], {}
    for path in params_paths:
        params = load_params(path)          # checks the name too (params.check_run_name)
        if params.name in names:
            raise ParamsError(f"key 'name': run name {params.name!r} is also used by "
                              f"{names[params.name]}; run names must be unique", path)
        names[params.name] = path
        loaded.append((Path(path), params))
    return loaded


# --------------------------------------------------------------------------- run folders


def read_done(run_dir: Path) -> dict | None:
    try:
        done = json.loads((Path(run_dir) / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) else None


def _qwk_mean(run_dir: Path):
    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
        return metrics["summary"]["qwk"]["mean"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(folder: Path) -> bool:
    """A temporary folder whose owner process is gone (or has no owner at all)."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return True
    if owner.get("host") == socket.gethostname():
        return not _pid_alive(int(owner.get("pid", -1)))
    try:
        return time.time() - folder.stat().st_mtime > _STALE_FOREIGN_SECONDS
    except OSError:
        return False


def clean_stale(runs_dir: Path) -> list[str]:
    """Remove the leftovers of interrupted runs; returns what was removed or restored.

    * ``.tmp-*`` folders whose owner process is dead are deleted;
    * ``.old-<name>-*`` folders (a swap interrupted between its two renames) are
      moved back to ``<name>`` when that is missing and they are complete, else deleted.
    """
    actions = []
    if not runs_dir.is_dir():
        return actions
    for folder in sorted(runs_dir.iterdir()):
        if not folder.is_dir():
            continue
        if folder.name.startswith(TMP_PREFIX) and _is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            actions.append(f"removed {folder.name}")
        elif folder.name.startswith(OLD_PREFIX):
            name = folder.name[len(OLD_PREFIX):].rsplit("-", 1)[0]
            target = runs_dir / name
            if not target.exists() and read_done(folder) is not None:
                try:
                    os.rename(folder, target)
                    actions.append(f"restored {name}")
                    continue
                except OSError:
                    pass
            shutil.rmtree(folder, ignore_errors=True)
            actions.append(f"removed {folder.name}")
    return actions


# --------------------------------------------------------------------------- one run


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def _sigterm_raises():
    """Turn SIGTERM into KeyboardInterrupt (main thread only) so cleanup code runs."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(text) -> str:
    return " ".join(str(text).split())


def execute_run(task: dict) -> dict:
    """Execute one experiment notebook and swap its folder into place, holding the run's lock.

    A second ``fusionlib run`` on the same runs folder that reaches a run being
    executed waits for it, then skips it when it is done with the same key
    (status ``skipped``), so no experiment is executed twice at once.
    """
    name = task["name"]
    runs_dir = Path(task["runs_dir"])
    runs_dir.mkdir(parents=True, exist_ok=True)
    lock = runs_dir / f"{LOCK_PREFIX}{name}"
    with file_lock(lock, blocking=False) as held:
        if held:
            return _execute_locked(task, waited=False)
    print(f"run {name}: already running in another fusionlib run; waiting for it", file=sys.stderr)
    with file_lock(lock):
        return _execute_locked(task, waited=True)


def _execute_locked(task: dict, waited: bool) -> dict:
    # Done meanwhile by another process (even with --force: that process just ran it).
    done = read_done(Path(task["runs_dir"]) / task["name"])
    if (waited or not task.get("force")) and done is not None and done.get("key") == task["key"] \
            and done.get("status") == "ok":
        return {"name": task["name"], "status": "skipped", "seconds": 0.0,
                "qwk": _qwk_mean(Path(task["runs_dir"]) / task["name"]),
                "message": f"run {task['name']}: already done by another fusionlib run"}
    return _execute_unlocked(task)


def quiet_kernel_channel_races() -> None:
    """Silence one harmless race between a kernel's shutdown and its client's channel threads.

    When papermill shuts a kernel down, jupyter_client's heartbeat thread can still touch
    its socket after it was closed; the thread then dies with ``ZMQError: Socket operation
    on non-socket`` (ENOTSOCK), which Python prints as a traceback although the notebook
    ran and was saved. Only that exception is dropped (from a thread, or a finaliser); every
    other one still goes to the previous hook. Idempotent.
    """
    import errno
    import threading

    def is_race(exc) -> bool:
        return type(exc).__name__ == "ZMQError" and getattr(exc, "errno", None) == errno.ENOTSOCK

    # From a thread, or from a socket's finaliser ("Exception ignored in ..."); both hooks get
    # an object with ``exc_value``.
    for owner, name in ((threading, "excepthook"), (sys, "unraisablehook")):
        previous = getattr(owner, name)
        if getattr(previous, "_fusionlib_quiet", False):
            continue

        def hook(info, previous=previous):
            if not is_race(info.exc_value):
                previous(info)

        hook._fusionlib_quiet = True
        setattr(owner, name, hook)


def _execute_unlocked(task: dict) -> dict:
    """Execute one experiment notebook and swap its folder into place.

    ``task`` is a plain dict (picklable for worker processes and Dask):
    ``name, params, key, runs_dir, cache_dir, notebook, cwd, params_file,
    code_version, data_fingerprint``. Returns ``{name, status, seconds, qwk,
    message}``; never raises for a failing notebook.
    """
    import papermill as pm
    import yaml
    from papermill.exceptions import PapermillExecutionError

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    quiet_kernel_channel_races()
    name = task["name"]
    runs_dir = Path(task["runs_dir"])
    runs_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tmp = runs_dir / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    result = {"name": name, "status": "failed", "seconds": 0.0, "qwk": None, "message": None}
    failed_nb = runs_dir / f"{name}.failed.ipynb"
    try:
        (tmp / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                  "started": started}))
        (tmp / "params.yaml").write_text(yaml.safe_dump(task["params"], sort_keys=False),
                                         encoding="utf-8")
        output_nb = tmp / "executed.ipynb"
        parameters = {**task["params"], "output_dir": str(tmp), "cache_dir": task["cache_dir"]}
        try:
            pm.execute_notebook(task["notebook"], str(output_nb), parameters=parameters,
                                kernel_name=KERNEL_NAME, cwd=task["cwd"], progress_bar=False,
                                log_output=False, extra_arguments=QUIET_KERNEL_ARGS)
        except PapermillExecutionError as err:
            result["message"] = (f"run {name} FAILED in cell {err.cell_index}: {err.ename}: "
                                 f"{_one_line(err.evalue)}")
            if output_nb.exists():
                shutil.copyfile(output_nb, tmp / "failed.ipynb")
                os.replace(tmp / "failed.ipynb", failed_nb)
                result["failed_notebook"] = str(failed_nb)
            return result
        except Exception as err:  # noqa: BLE001 - kernel death, missing kernel, ...
            result["message"] = f"run {name} FAILED: {type(err).__name__}: {_one_line(err)}"
            if output_nb.exists():
                shutil.copyfile(output_nb, tmp / "failed.ipynb")
                os.replace(tmp / "failed.ipynb", failed_nb)
                result["failed_notebook"] = str(failed_nb)
            return result
        missing = [f for f in RESULT_FILES if not (tmp / f).is_file()]
        if missing:
            result["message"] = (f"run {name} FAILED: the notebook finished without writing "
                                 f"{', '.join(missing)}")
            return result
        finished = time.time()
        qwk = _qwk_mean(tmp)
        done = {"key": task["key"], "name": name, "status": "ok", "params_file": task["params_file"],
                "code_version": task["code_version"], "data_fingerprint": task["data_fingerprint"],
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(finished)),
                "seconds": round(finished - started, 2), "qwk_mean": qwk,
                "host": socket.gethostname()}
        (tmp / OWNER_FILE).unlink()
        atomic_write_text(tmp / DONE_FILE, json.dumps(done, indent=2))   # written last
        swap_into_place(tmp, runs_dir / name)
        failed_nb.unlink(missing_ok=True)
        result.update(status="ok", seconds=done["seconds"], qwk=qwk, message=None)
        return result
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if result["status"] != "ok":
            result["seconds"] = round(time.time() - started, 2)


def _worker_init():
    """Worker processes: SIGTERM cleans up like Ctrl-C; Ctrl-C reaches them from the terminal."""
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


# --------------------------------------------------------------------------- all runs


def run_all(params_paths, runs_dir: str | Path = "runs", cache_dir: str | Path = ".cache",
            force: bool = False, jobs: int = 1, scheduler: str | None = None,
            notebook: str | Path | None = None) -> int:
    """Validate every parameter file, then execute the runs that are missing or stale.

    Returns 0 when every run succeeded or was up to date, 1 when any failed, and
    2 (after one ``fusionlib: error: ...`` line on stderr, executing nothing)
    when a parameter file is invalid.
    """
    try:
        loaded = load_all(params_paths)
        notebook = Path(notebook) if notebook is not None else DEFAULT_NOTEBOOK
        if not notebook.is_file():
            raise FusionlibError("experiment notebook not found (run from a source checkout or "
                                 "pass notebook=...)", notebook)
        if jobs < 1:
            raise FusionlibError(f"--jobs must be at least 1, got {jobs}")
    except FusionlibError as err:
        print(f"fusionlib: error: {err}", file=sys.stderr)
        return 2

    runs_dir = Path(runs_dir).absolute()
    cache_dir = Path(cache_dir).absolute()
    try:                # before any work: a read-only folder is one line, not a traceback later
        writable_folder(runs_dir, "the runs folder (--runs-dir)")
        writable_folder(cache_dir, "the cache folder (--cache-dir)")
    except FusionlibError as err:
        print(f"fusionlib: error: {err}", file=sys.stderr)
        return 2
    with _sigterm_raises():
        # The data: generated once here (synthetic cohort) before any run starts; its cheap
        # fingerprint selects the run key (the experiment fingerprints the loaded cohort).
        fingerprints = {}
        try:
            from .datasets import data_fingerprint

            for _, params in loaded:
                ident = json.dumps(params.data.model_dump(exclude={"modalities"}), sort_keys=True)
                if ident not in fingerprints:
                    fingerprints[ident] = data_fingerprint(params.data)
        except FusionlibError as err:
            print(f"fusionlib: error: {err}", file=sys.stderr)
            return 2
        code = code_version(notebook)

        runs_dir.mkdir(parents=True, exist_ok=True)
        for action in clean_stale(runs_dir):
            print(f"cleanup: {action}", file=sys.stderr)

        tasks, outcomes = [], {}
        for path, params in loaded:
            data = fingerprints[json.dumps(params.data.model_dump(exclude={"modalities"}),
                                           sort_keys=True)]
            key = run_key(params.to_dict(), code, data)
            done = read_done(runs_dir / params.name)
            if not force and done is not None and done.get("key") == key and done.get("status") == "ok":
                outcomes[params.name] = {"name": params.name, "status": "skipped",
                                         "seconds": 0.0, "qwk": _qwk_mean(runs_dir / params.name),
                                         "message": None}
                print(f"run {params.name}: up to date", file=sys.stderr)
                continue
            tasks.append({"name": params.name, "params": params.to_dict(), "key": key,
                          "runs_dir": str(runs_dir), "cache_dir": str(cache_dir),
                          "notebook": str(notebook.absolute()), "cwd": str(project_root()),
                          "params_file": str(path), "code_version": code,
                          "data_fingerprint": data, "force": force})

        if tasks:
            _execute(tasks, outcomes, jobs=jobs, scheduler=scheduler, total=len(loaded))

    print("summary:")
    width = max(len(p.name) for _, p in loaded)
    for _, params in loaded:
        out = outcomes.get(params.name, {"status": "not run", "seconds": 0.0, "qwk": None})
        qwk = "QWK mean   n/a" if out["qwk"] is None else f"QWK mean {out['qwk']:.3f}"
        print(f"  {params.name:<{width}}  {out['status']:<7}  {out['seconds']:7.1f} s  {qwk}")
    failed = [o for o in outcomes.values() if o["status"] == "failed"]
    return 1 if failed or len(outcomes) < len(loaded) else 0


def _report(outcome: dict, outcomes: dict, bar) -> None:
    outcomes[outcome["name"]] = outcome
    if outcome["status"] == "failed":
        bar.write(outcome["message"], file=sys.stderr)
        if outcome.get("failed_notebook"):
            bar.write(f"  failed notebook kept as {outcome['failed_notebook']}", file=sys.stderr)
    elif outcome["status"] == "skipped":
        bar.write(outcome["message"] or f"run {outcome['name']}: skipped", file=sys.stderr)
    else:
        bar.write(f"run {outcome['name']}: ok in {outcome['seconds']:.1f} s", file=sys.stderr)
    bar.update(1)


def _execute(tasks: list, outcomes: dict, jobs: int, scheduler: str | None, total: int) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=total - len(tasks), desc="runs", unit="run", file=sys.stderr,
               dynamic_ncols=True)
    try:
        if scheduler:
            _execute_dask(tasks, outcomes, scheduler, bar)
        elif jobs > 1 and len(tasks) > 1:
            _execute_processes(tasks, outcomes, jobs, bar)
        else:
            for task in tasks:
                bar.set_postfix_str(task["name"])
                _report(execute_run(task), outcomes, bar)
    finally:
        bar.close()


def branch_group(params_dict: dict) -> str:
    """Runs with the same group train the same branches (they differ only in the fusion head).

    In parallel modes the first run of a group goes first and the others follow
    it, so they read its cached branch probabilities instead of all training the
    same branches at once.
    """
    shared = {k: v for k, v in params_dict.items()
              if k not in ("name", "description", "fusion", "head", "stage2", "protocol")}
    shared["protocol"] = {k: v for k, v in params_dict.get("protocol", {}).items()
                          if k != "missing_cases"}
    return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()


def _waves(tasks: list) -> tuple[list, dict]:
    """``(leaders, followers)``: the first task of each branch group, and the rest by leader name."""
    leaders, followers, seen = [], {}, {}
    for task in tasks:
        group = branch_group(task["params"])
        if group in seen:
            followers[seen[group]].append(task)
        else:
            seen[group] = task["name"]
            followers[task["name"]] = []
            leaders.append(task)
    return leaders, followers


def _execute_processes(tasks: list, outcomes: dict, jobs: int, bar) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    leaders, followers = _waves(tasks)
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)),
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init)
    try:
        pending = {pool.submit(execute_run, task): task for task in leaders}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                task = pending.pop(future)
                _report(_outcome_of(future, task), outcomes, bar)
                for follower in followers.get(task["name"], []):
                    pending[pool.submit(execute_run, follower)] = follower
    except BaseException:
        # Interrupted: stop the workers (each cleans its temporary folder on SIGTERM).
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            if process.is_alive():
                process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _execute_dask(tasks: list, outcomes: dict, scheduler: str, bar) -> None:
    from dask.distributed import Client, as_completed

    leaders, followers = _waves(tasks)

    def submit(client, task):
        return client.submit(execute_run, task, pure=False,
                             key=f"fusionlib-run-{task['name']}-{secrets.token_hex(4)}")

    with Client(scheduler) as client:
        by_key = {}
        futures = []
        for task in leaders:
            future = submit(client, task)
            by_key[future.key] = task
            futures.append(future)
        queue = as_completed(futures)
        try:
            for future in queue:
                task = by_key[future.key]
                _report(_outcome_of(future, task), outcomes, bar)
                for follower in followers.get(task["name"], []):
                    new = submit(client, follower)
                    by_key[new.key] = follower
                    futures.append(new)
                    queue.add(new)
        except BaseException:
            client.cancel(futures)
            raise


def _outcome_of(future, task: dict) -> dict:
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - a worker that died, a pickling problem, ...
        return {"name": task["name"], "status": "failed", "seconds": 0.0, "qwk": None,
                "message": f"run {task['name']} FAILED: {type(err).__name__}: {_one_line(err)}"}
