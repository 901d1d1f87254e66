"""Where the runner's runs execute: local worker processes or a Dask distributed scheduler,
and how their outcomes are reported.

The per-run function (:func:`fusionlib.running.runner.execute_run`) and the branch-set function
(:func:`fusionlib.running.runner.prefill_one`) are passed in, so this module never imports the runner.
Both executors follow one order (:func:`_schedule`): the branch outputs the runs share are
trained first, one task per (branch group, seed) (:func:`branch_sets`), and each group's runs
are submitted as soon as its sets are done. Without branch sets, runs that train the same
branches (:func:`branch_group`) go in waves: the first run of a group first, the others after
it, reading its cached branch probabilities.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import secrets
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager

from .._imports import quick_exit, skip_slow_optional_imports
from .._io import os_error_text
from .tasks import Outcome, Task


def one_line(text) -> str:
    return " ".join(str(text).split())


def error_text(err: BaseException, path=None) -> str:
    """One line for an exception: ``<file>: <problem>`` for a failed file operation (a full
    disk reads ``no space left on device``; ``path`` is the file when the error names none),
    else ``<type>: <message>``."""
    if isinstance(err, OSError) and err.errno is not None:
        return os_error_text(err, path)
    return f"{type(err).__name__}: {one_line(err)}"


def failure_line(name: str, err: BaseException, path=None) -> str:
    """The line of a run that failed with ``err``, wherever it was caught (the runner's own
    writes, papermill, a worker process): ``run <name> FAILED: <error_text>``."""
    return f"run {name} FAILED: {error_text(err, path)}"


def failed_outcome(name: str, err: BaseException) -> Outcome:
    """The outcome of a run whose execution raised instead of returning one."""
    return Outcome(name, "failed", message=failure_line(name, err))


# --------------------------------------------------------------------------- signals


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_raises():
    """Turn SIGTERM into KeyboardInterrupt (main thread only) so cleanup code runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def worker_init():
    """Worker processes: SIGTERM cleans up like Ctrl-C; Ctrl-C reaches them from the terminal;
    the slow optional imports skipped and the exit made quick as in the command line's own
    process (:mod:`fusionlib._imports`)."""
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    skip_slow_optional_imports()
    quick_exit()


# --------------------------------------------------------------------------- outcomes


def report_outcome(outcome: Outcome, outcomes: dict, bar) -> None:
    """Record one run's outcome and print its line above the progress bar, then its notes (the
    images the loader dropped, cache entries recomputed), indented."""
    outcomes[outcome.name] = outcome
    if outcome.status == "failed":
        bar.write(outcome.message, file=sys.stderr)
        if outcome.failed_notebook:
            bar.write(f"  failed notebook kept as {outcome.failed_notebook}", file=sys.stderr)
    elif outcome.status == "skipped":
        bar.write(outcome.message or f"run {outcome.name}: skipped", file=sys.stderr)
    else:
        bar.write(f"run {outcome.name}: ok in {outcome.seconds:.1f} s", file=sys.stderr)
    for line in outcome.notes:
        bar.write(f"  {line}", file=sys.stderr)
    bar.update(1)


def _outcome_of(future, task: Task) -> Outcome:
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - a worker that died, a pickling problem, ...
        return failed_outcome(task.name, err)


# --------------------------------------------------------------------------- waves


def branch_group(params_dict: dict) -> str:
    """Runs with the same group train the same branches (they differ only in the fusion head).

    In parallel modes the group's branches are trained first, one task per seed
    (:func:`branch_sets`), or, with a single set, the group's first run goes first
    (:func:`waves`); the runs then read the cached branch probabilities instead of
    all training the same branches at once.
    """
    shared = {k: v for k, v in params_dict.items()
              if k not in ("name", "description", "fusion", "head", "stage2", "protocol")}
    shared["protocol"] = {k: v for k, v in params_dict.get("protocol", {}).items()
                          if k != "missing_cases"}
    return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()


def waves(tasks: list) -> tuple[list, dict]:
    """``(leaders, followers)``: the first task of each branch group, and the rest by leader name."""
    leaders, followers, seen = [], {}, {}
    for task in tasks:
        group = branch_group(task.params)
        if group in seen:
            followers[seen[group]].append(task)
        else:
            seen[group] = task.name
            followers[task.name] = []
            leaders.append(task)
    return leaders, followers


# --------------------------------------------------------------------------- executors


def _schedule(tasks: list, outcomes: dict, bar, execute_run, submit, first_done,
              branch_items: list | None = None, fill_branches=None, on_branches=None) -> None:
    """The order both executors follow, on their own futures.

    ``submit(function, argument, label)`` starts ``function(argument)`` and returns its future
    (``label`` names the task: ``run-<name>`` or ``branches-<group>-seed-<seed>``);
    ``first_done(futures)`` waits until at least one of them has finished and returns the
    finished ones. Every run's outcome is reported with :func:`report_outcome`.

    With ``branch_items`` (:func:`branch_sets` of ``tasks``) and ``fill_branches``, the branch
    outputs the runs share are trained first as their own tasks, ``fill_branches(item)`` each,
    and each group's runs are submitted as soon as that group's sets are done: the seeds'
    branches train side by side instead of one after another inside a group's first notebook,
    and no worker waits at a barrier. ``on_branches(item, result or exception)`` reports each
    set; a set that fails only loses its head start (its runs train those branches themselves
    and report the error). Without them, runs go in waves (:func:`waves`).
    """
    items = list(branch_items or []) if fill_branches is not None else []
    if items:
        waiting = {}                                   # group -> sets not finished yet
        for item in items:
            waiting[item["group"]] = waiting.get(item["group"], 0) + 1
        followers: dict = {}
        for task in tasks:
            followers.setdefault(branch_group(task.params), []).append(task)
        first = []
    else:
        first, followers = waves(tasks)
    pending = {submit(fill_branches, item, f"branches-{item['group'][:12]}-seed-{item['seed']}"):
               ("branches", item) for item in items}
    pending.update({submit(execute_run, task, f"run-{task.name}"): ("run", task)
                    for task in first})
    while pending:
        for future in first_done(list(pending)):
            kind, what = pending.pop(future)
            if kind == "branches":
                try:
                    result = future.result()
                except Exception as err:  # noqa: BLE001 - reported; the runs retrain
                    result = err
                if on_branches is not None:
                    on_branches(what, result)
                waiting[what["group"]] -= 1
                ready = followers.pop(what["group"]) if not waiting[what["group"]] else []
            else:
                report_outcome(_outcome_of(future, what), outcomes, bar)
                ready = [] if items else followers.get(what.name, [])
            for task in ready:
                pending[submit(execute_run, task, f"run-{task.name}")] = ("run", task)


def execute_processes(tasks: list, outcomes: dict, jobs: int, bar, execute_run,
                      branch_items: list | None = None, fill_branches=None,
                      on_branches=None) -> None:
    """``execute_run(task)`` for every task in up to ``jobs`` spawned worker processes.

    With ``branch_items`` and ``fill_branches``, each (branch group, seed)'s branches are
    trained first, in the same pool, and each group's runs are queued as soon as that group's
    sets are done; without them, runs go in waves (:func:`_schedule`).
    """
    sets = len(branch_items or []) if fill_branches is not None else 0
    pool = ProcessPoolExecutor(max_workers=max(1, min(jobs, len(tasks) + sets)),
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=worker_init)
    try:
        _schedule(tasks, outcomes, bar, execute_run,
                  submit=lambda function, argument, label: pool.submit(function, argument),
                  first_done=lambda futures: wait_futures(
                      futures, return_when=FIRST_COMPLETED).done,
                  branch_items=branch_items, fill_branches=fill_branches, on_branches=on_branches)
    except BaseException:
        # Interrupted: stop the workers (each cleans its temporary folder on SIGTERM).
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            if process.is_alive():
                process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def branch_sets(tasks: list) -> list[dict]:
    """One item per (branch group, seed) among ``tasks``: the branch outputs those runs share.

    Each item is ``{"group", "seed", "params", "cache_dir", "label"}``, the params of the
    group's first run (the branches do not depend on the rest).
    """
    items, seen = [], set()
    for task in tasks:
        params = task.params
        protocol = params.get("protocol", {})
        seeds = protocol.get("seeds") or [protocol.get("seed", 0)]
        group = branch_group(params)
        for seed in seeds:
            if (group, seed) in seen:
                continue
            seen.add((group, seed))
            items.append({"group": group, "seed": seed, "params": params,
                          "cache_dir": task.cache_dir,
                          "label": f"{protocol.get('data_percentage', 100):g} % seed {seed}",
                          "size": protocol.get("data_percentage", 100)})
    # Largest first: the long tasks start early and the short ones fill the end.
    return sorted(items, key=lambda item: -item["size"])


def execute_dask(tasks: list, outcomes: dict, scheduler: str, bar, execute_run,
                 branch_items: list | None = None, fill_branches=None,
                 on_branches=None) -> None:
    """``execute_run(task)`` for every task on the Dask distributed scheduler ``host:port``.

    The same order as :func:`execute_processes` (:func:`_schedule`): with ``branch_items`` and
    ``fill_branches``, each (branch group, seed)'s branches are trained first as tasks of their
    own and each group's runs are submitted as soon as its sets are done; without them, in
    waves. Interrupted, the submitted tasks are cancelled.
    """
    from dask.distributed import Client, wait  # Dask is optional: imported only when used

    with Client(scheduler) as client:
        submitted = []

        def submit(function, argument, label):
            future = client.submit(function, argument, pure=False,
                                   key=f"fusionlib-{label}-{secrets.token_hex(4)}")
            submitted.append(future)
            return future

        try:
            _schedule(tasks, outcomes, bar, execute_run, submit=submit,
                      first_done=lambda futures: wait(futures, return_when="FIRST_COMPLETED").done,
                      branch_items=branch_items, fill_branches=fill_branches,
                      on_branches=on_branches)
        except BaseException:
            client.cancel(submitted)
            raise
