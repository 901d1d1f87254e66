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
the same per-run function :func:`execute_run` does the work in every case. In
the two parallel modes the branches of every (branch group, seed) are first
trained as tasks of their own (:func:`prefill_one`), each group's runs as soon
as its sets are done.

This module is the sequence (validate, plan, execute, report) and the one-run function;
:mod:`fusionlib.running.folders` holds what the run folders say (``done.json``, owner files,
stale-folder cleanup) and :mod:`fusionlib.running.scheduling` the process-pool and Dask executors.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from .._io import (DISK_FULL_ERRNOS, NOTES_ENV, OLD_PREFIX, atomic_write_text, collected_notes,
                   file_lock, os_error_text, read_notes, swap_into_place, writable_folder)
from ..datasets import data_fingerprint
from ..errors import FusionlibError, ParamsError
from ..experiment import prefill_branches
from ..params import load_params, validate
from ..paths import REPO_ROOT, project_root
from ..results import dropped_images_count, dropped_images_line
from ..results.files import DONE_FILE, METRICS_FILE, RESULT_FILES
from . import inprocess
from .folders import (LOCK_PREFIX, OWNER_FILE, TMP_PREFIX, clean_stale, read_done,
                      write_owner)
from .folders import qwk_mean as _qwk_mean
from .scheduling import (branch_group, branch_sets, error_text, execute_dask, execute_processes,
                         failed_outcome, failure_line, one_line, report_outcome, sigterm_raises)
from .tasks import ENGINES, Outcome, Task

# papermill (and jupyter_client under it) load when the first run executes, not on import: the
# command line skips a slow optional import of theirs first (fusionlib._imports), and
# `fusionlib run` with every run up to date never needs them.

__all__ = ["PACKAGE_DIR", "DEFAULT_NOTEBOOK", "KERNEL_NAME", "QUIET_KERNEL_ARGS",
           "NOT_EXPERIMENT_CODE", "OLD_PREFIX", "TMP_PREFIX", "LOCK_PREFIX", "OWNER_FILE",
           "DONE_FILE", "code_version", "run_key", "load_all", "read_done", "clean_stale",
           "branch_group", "ENGINES", "resolve_engine", "execute_run", "quiet_kernel_channel_races",
           "run_all"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # fusionlib/, this package's parent
DEFAULT_NOTEBOOK = REPO_ROOT / "notebooks" / "experiment.ipynb"
KERNEL_NAME = "python3"
QUIET_KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]
"""The kernel's own log only carries start/shutdown noise (plain-TCP warning, the interrupt
jupyter_client sends before shutting a kernel down, ZMQ errors when Ctrl-C stops a run);
a failing cell is reported by papermill from the cell's error, not through this log."""
NOTES_FILE = ".notes.txt"
"""In a run's temporary folder: the lines its kernel recorded for the screen
(:func:`fusionlib._io.note`, e.g. a cache entry recomputed); read and removed before the swap."""
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
    loaded, names = [], {}
    for path in params_paths:
        params = load_params(path)          # checks the name too (params.check_run_name)
        if params.name in names:
            raise ParamsError(f"key 'name': run name {params.name!r} is also used by "
                              f"{names[params.name]}; run names must be unique", path)
        names[params.name] = path
        loaded.append((Path(path), params))
    return loaded


# --------------------------------------------------------------------------- one run


def execute_run(task: Task) -> Outcome:
    """Execute one experiment notebook and swap its folder into place, holding the run's lock.

    A second ``fusionlib run`` on the same runs folder that reaches a run being
    executed waits for it, then skips it when it is done with the same key
    (status ``skipped``), so no experiment is executed twice at once.
    """
    name = task.name
    runs_dir = Path(task.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    lock = runs_dir / f"{LOCK_PREFIX}{name}"
    with file_lock(lock, blocking=False) as held:
        if held:
            return _execute_locked(task, waited=False)
    print(f"run {name}: already running in another fusionlib run; waiting for it", file=sys.stderr)
    with file_lock(lock):
        return _execute_locked(task, waited=True)


def _execute_locked(task: Task, waited: bool) -> Outcome:
    # Done meanwhile by another process (even with --force: that process just ran it).
    done = read_done(Path(task.runs_dir) / task.name)
    if (waited or not task.force) and done is not None and done.get("key") == task.key \
            and done.get("status") == "ok":
        return Outcome(task.name, "skipped", qwk=_qwk_mean(Path(task.runs_dir) / task.name),
                       message=f"run {task.name}: already done by another fusionlib run")
    return _execute_unlocked(task)


def quiet_kernel_channel_races() -> None:
    """Silence one harmless race between a kernel's shutdown and its client's channel threads.

    When papermill shuts a kernel down, jupyter_client's heartbeat thread can still touch
    its socket after it was closed; the thread then dies with ``ZMQError: Socket operation
    on non-socket`` (ENOTSOCK), which Python prints as a traceback although the notebook
    ran and was saved. Only that exception is dropped (from a thread, or a finaliser); every
    other one still goes to the previous hook. Idempotent.
    """
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


def _execute_unlocked(task: Task) -> Outcome:
    """Execute one experiment notebook and swap its folder into place.

    Never raises for a failing notebook, nor for a failing write of the runner's own (a full
    disk): the outcome's ``message`` says it in one line naming the file, and the run's
    earlier folder stays as it was (it is replaced only once the new one is complete).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    quiet_kernel_channel_races()
    name = task.name
    runs_dir = Path(task.runs_dir)
    started = time.time()
    tmp = runs_dir / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
    result = Outcome(name, "failed")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        _execute_in(task, tmp, started, result)
    except OSError as err:      # the runner's own writes: owner file, params.yaml, done.json, swap
        result.status, result.message = "failed", failure_line(name, err)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if result.status != "ok":
            result.seconds = round(time.time() - started, 2)
    return result


def _execute_in(task: Task, tmp: Path, started: float, result: Outcome) -> None:
    """:func:`_execute_unlocked`'s work in the run's temporary folder ``tmp``; fills ``result``.
    An OSError of the runner's own writes is raised (the caller says it in one line)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    name = task.name
    runs_dir = tmp.parent
    failed_nb = runs_dir / f"{name}.failed.ipynb"
    write_owner(tmp, started)
    atomic_write_text(tmp / "params.yaml", yaml.safe_dump(task.params, sort_keys=False))
    output_nb = tmp / "executed.ipynb"
    notes_file = tmp / NOTES_FILE
    parameters = {**task.params, "output_dir": str(tmp), "cache_dir": task.cache_dir}
    try:
        if resolve_engine(task.engine) == "inprocess":
            engine = {"engine_name": inprocess.register()}
            collecting = collected_notes()      # the notebook's notes, recorded in this process
        else:
            engine = {"kernel_name": KERNEL_NAME, "extra_arguments": QUIET_KERNEL_ARGS,
                      "kernel_manager_class": _kernel_manager({NOTES_ENV: str(notes_file)})}
            collecting = contextlib.nullcontext([])     # the kernel writes them to notes_file
        with collecting as notes:
            try:
                execute_notebook(pm, task, output_nb, parameters, engine, result)
            finally:
                result.notes += _note_lines(notes + read_notes(notes_file))
    except Exception as err:  # noqa: BLE001 - a cell's error, a dead or missing kernel, a full disk
        # A full disk outside a cell hit papermill saving the notebook: the file may be cut
        # short, so it is not kept, and it is the file the error is about if it names none.
        disk_full = isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS
        if isinstance(err, PapermillExecutionError):
            result.message = (f"run {name} FAILED in cell {err.cell_index}: {err.ename}: "
                              f"{_notebook_error(err.evalue)}")
        else:
            result.message = failure_line(name, err, output_nb if disk_full else None)
        if not disk_full:
            _keep_failed_notebook(output_nb, failed_nb, result)
        return
    missing = [f for f in RESULT_FILES if not (tmp / f).is_file()]
    if missing:
        result.message = (f"run {name} FAILED: the notebook finished without writing "
                          f"{', '.join(missing)}")
        return
    finished = time.time()
    qwk = _qwk_mean(tmp)
    result.notes = _dropped_images_lines(tmp) + result.notes
    done = {"key": task.key, "name": name, "status": "ok", "params_file": task.params_file,
            "code_version": task.code_version, "data_fingerprint": task.data_fingerprint,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(finished)),
            "seconds": round(finished - started, 2), "qwk_mean": qwk,
            "host": socket.gethostname()}
    (tmp / OWNER_FILE).unlink()
    notes_file.unlink(missing_ok=True)                                    # read above
    atomic_write_text(tmp / DONE_FILE, json.dumps(done, indent=2))   # written last
    swap_into_place(tmp, runs_dir / name)
    result.status, result.seconds, result.qwk, result.message = "ok", done["seconds"], qwk, None
    try:
        failed_nb.unlink(missing_ok=True)
    except OSError:
        pass


KERNEL_START_TRIES = 3
"""Starts of a run's kernel at most: jupyter_client picks five free ports and the new kernel
binds them a moment later, so a kernel started while other processes open sockets (a Dask
worker's other runs, the test suite's other worker) can find one taken and die before it
answers ("Kernel died before replying to kernel_info", the worker's log says "Address already
in use"). No cell has run then, so the run starts again on new ports."""


def execute_notebook(pm, task: Task, output_nb: Path, parameters: dict, engine: dict,
                     result: Outcome) -> None:
    """``papermill.execute_notebook`` of the run's notebook with ``engine``'s arguments, starting
    a kernel again (up to :data:`KERNEL_START_TRIES` in all) when one dies before it answers;
    each such start is a note of the run."""
    for attempt in range(1, KERNEL_START_TRIES + 1):
        try:
            pm.execute_notebook(task.notebook, str(output_nb), parameters=parameters,
                                cwd=task.cwd, progress_bar=False, log_output=False, **engine)
            return
        except RuntimeError as err:
            if ("kernel_name" not in engine or attempt == KERNEL_START_TRIES
                    or "died before replying to kernel_info" not in str(err)):
                raise
            result.notes.append(f"its kernel died while starting ({err}); started another")


def resolve_engine(engine: str) -> str:
    """``inprocess`` or ``kernel`` for the engine ``engine`` names (one of :data:`ENGINES`)."""
    if engine not in ENGINES:
        raise ValueError(f"notebook engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto":
        return "inprocess" if inprocess.available() else "kernel"
    return engine


def _kernel_manager(env: dict):
    """The kernel manager class papermill's client uses, starting the kernel with ``env`` added
    to this process's environment. Per kernel, not through ``os.environ``: the runs of a Dask
    worker share one process and may start their kernels at the same time."""
    from jupyter_client import AsyncKernelManager

    class KernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["env"] = {**(kw.get("env") or os.environ), **env}
            return await super().start_kernel(**kw)

    return KernelManager


def _keep_failed_notebook(output_nb: Path, failed_nb: Path, result: Outcome) -> None:
    """Keep the executed notebook as ``runs/<name>.failed.ipynb`` (a rename: atomic, no space
    needed). When that fails the run's line says so after the notebook's own error."""
    if not output_nb.exists():
        return
    try:
        os.replace(output_nb, failed_nb)
    except OSError as err:
        result.message += f"; the failed notebook is not kept: {os_error_text(err, failed_nb)}"
        return
    result.failed_notebook = str(failed_nb)


def _notebook_error(evalue) -> str:
    """A cell's error value in one line; a full disk as ``<file>: no space left on device``."""
    text = one_line(evalue)
    match = re.fullmatch(r"\[Errno (\d+)\] ([^:]*)(?:: '(.*)')?", text)
    if match and int(match.group(1)) in DISK_FULL_ERRNOS:
        err = OSError(int(match.group(1)), match.group(2), match.group(3))
        return os_error_text(err)
    return text


MAX_NOTES = 3
"""Notes shown per run (cache entries recomputed); the rest are counted on one more line."""


def _note_lines(notes: list[str]) -> list[str]:
    if len(notes) <= MAX_NOTES:
        return list(notes)
    return [*notes[:MAX_NOTES], f"... and {len(notes) - MAX_NOTES} more (the notebook lists them)"]


def _dropped_images_lines(run_dir: Path) -> list[str]:
    """``dropped images: 3 (unreadable 2, missing 1)`` when the run's loader dropped any."""
    try:
        summary = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))["summary"]
        return [dropped_images_line(summary)] if dropped_images_count(summary) else []
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


# --------------------------------------------------------------------------- all runs


def run_all(params_paths, runs_dir: str | Path = "runs", cache_dir: str | Path = ".cache",
            force: bool = False, jobs: int = 1, scheduler: str | None = None,
            notebook: str | Path | None = None, engine: str = "auto") -> int:
    """Validate every parameter file, then execute the runs that are missing or stale.

    ``engine`` (one of :data:`ENGINES`) says how each notebook executes.

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
        try:
            resolve_engine(engine)          # checks the name; each worker resolves "auto" itself
        except ValueError as err:
            raise FusionlibError(f"--engine: {err}") from None
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
    with sigterm_raises():
        # The data: generated once here (synthetic cohort) before any run starts; its cheap
        # fingerprint selects the run key (the experiment fingerprints the loaded cohort).
        by_data, data_of = {}, {}     # one fingerprint per distinct data section (modalities aside)
        try:
            for _, params in loaded:
                ident = json.dumps(params.data.model_dump(exclude={"modalities"}), sort_keys=True)
                if ident not in by_data:
                    by_data[ident] = data_fingerprint(params.data)
                data_of[params.name] = by_data[ident]
        except FusionlibError as err:
            print(f"fusionlib: error: {err}", file=sys.stderr)
            return 2
        code = code_version(notebook)

        runs_dir.mkdir(parents=True, exist_ok=True)
        for action in clean_stale(runs_dir):
            print(f"cleanup: {action}", file=sys.stderr)

        tasks, outcomes = [], {}
        for path, params in loaded:
            data = data_of[params.name]
            key = run_key(params.to_dict(), code, data)
            done = read_done(runs_dir / params.name)
            if not force and done is not None and done.get("key") == key and done.get("status") == "ok":
                outcomes[params.name] = Outcome(params.name, "skipped",
                                                qwk=_qwk_mean(runs_dir / params.name))
                print(f"run {params.name}: up to date", file=sys.stderr)
                continue
            tasks.append(Task(params.name, params.to_dict(), key, runs_dir=str(runs_dir),
                              cache_dir=str(cache_dir), notebook=str(notebook.absolute()),
                              cwd=str(project_root()), params_file=str(path), code_version=code,
                              data_fingerprint=data, force=force, engine=engine))

        if tasks:
            _execute(tasks, outcomes, jobs=jobs, scheduler=scheduler, total=len(loaded))

    print("summary:")
    width = max(len(p.name) for _, p in loaded)
    for _, params in loaded:
        out = outcomes.get(params.name, Outcome(params.name, "not run"))
        qwk = "QWK mean   n/a" if out.qwk is None else f"QWK mean {out.qwk:.3f}"
        print(f"  {params.name:<{width}}  {out.status:<7}  {out.seconds:7.1f} s  {qwk}")
    failed = [o for o in outcomes.values() if o.status == "failed"]
    return 1 if failed or len(outcomes) < len(loaded) else 0


def prefill_one(item: dict) -> dict:
    """One (branch group, seed)'s branch outputs into the cache (a worker's task before the
    runs of its group, in the process pool or on Dask; :func:`fusionlib.running.scheduling._schedule`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    started = time.time()
    with collected_notes() as notes:        # cache entries found unreadable and recomputed
        counts = prefill_branches(validate(item["params"]), item["seed"], item["cache_dir"])
    return {**counts, "seconds": time.time() - started, "notes": _note_lines(notes)}


def _branches_line(bar):
    def report(item, result):
        if isinstance(result, BaseException):
            bar.write(f"branches {item['label']}: not prefilled ({error_text(result)}); its "
                      f"runs will train them", file=sys.stderr)
            return
        if result["misses"]:
            bar.write(f"branches {item['label']}: trained in {result['seconds']:.1f} s",
                      file=sys.stderr)
        for line in result.get("notes") or ():
            bar.write(f"branches {item['label']}: {line}", file=sys.stderr)
    return report


def _execute(tasks: list, outcomes: dict, jobs: int, scheduler: str | None, total: int) -> None:
    bar = tqdm(total=total, initial=total - len(tasks), desc="runs", unit="run", file=sys.stderr,
               dynamic_ncols=True)
    try:
        if scheduler or (jobs > 1 and len(tasks) > 1):
            # Both executors: the branch sets first (when there are several to spread), then
            # each group's runs as soon as its sets are done (scheduling._schedule).
            sets = branch_sets(tasks)
            if len(sets) > 1:
                bar.write(f"branches: {len(sets)} (data %, seed) sets for {len(tasks)} run(s) "
                          "first, each group's runs as soon as its sets are done", file=sys.stderr)
            branches = {"branch_items": sets if len(sets) > 1 else None,
                        "fill_branches": prefill_one, "on_branches": _branches_line(bar)}
            if scheduler:
                execute_dask(tasks, outcomes, scheduler, bar, execute_run, **branches)
            else:
                execute_processes(tasks, outcomes, jobs, bar, execute_run, **branches)
        else:
            for task in tasks:
                bar.set_postfix_str(task.name)
                try:
                    outcome = execute_run(task)
                except Exception as err:  # noqa: BLE001 - as a worker's: one line, the others go on
                    outcome = failed_outcome(task.name, err)
                report_outcome(outcome, outcomes, bar)
    finally:
        bar.close()
