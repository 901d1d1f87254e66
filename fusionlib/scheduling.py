"""Where the runner's runs execute: local worker processes or a Dask distributed scheduler,
in waves, and how their outcomes are reported.

The per-run function (:func:`fusionlib.runner.execute_run`) is passed in, so this module
never imports the runner. Runs that train the same branches (:func:`branch_group`) go in
waves: the first run of a group first, the others after it, reading its cached branch
probabilities.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import signal
import sys
from contextlib import contextmanager


def one_line(text) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- signals


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_raises():
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


def worker_init():
    """Worker processes: SIGTERM cleans up like Ctrl-C; Ctrl-C reaches them from the terminal."""
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


# --------------------------------------------------------------------------- outcomes


def report_outcome(outcome: dict, outcomes: dict, bar) -> None:
    """Record one run's outcome and print its line above the progress bar."""
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


def _outcome_of(future, task: dict) -> dict:
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - a worker that died, a pickling problem, ...
        return {"name": task["name"], "status": "failed", "seconds": 0.0, "qwk": None,
                "message": f"run {task['name']} FAILED: {type(err).__name__}: {one_line(err)}"}


# --------------------------------------------------------------------------- waves


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


def waves(tasks: list) -> tuple[list, dict]:
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


# --------------------------------------------------------------------------- executors


def execute_processes(tasks: list, outcomes: dict, jobs: int, bar, execute_run) -> None:
    """``execute_run(task)`` for every task in up to ``jobs`` spawned worker processes."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    leaders, followers = waves(tasks)
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)),
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=worker_init)
    try:
        pending = {pool.submit(execute_run, task): task for task in leaders}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                task = pending.pop(future)
                report_outcome(_outcome_of(future, task), outcomes, bar)
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


def branch_sets(tasks: list) -> list[dict]:
    """One item per (branch group, seed) among ``tasks``: the branch outputs those runs share.

    Each item is ``{"group", "seed", "params", "cache_dir", "label"}``, the params of the
    group's first run (the branches do not depend on the rest).
    """
    items, seen = [], set()
    for task in tasks:
        params = task["params"]
        protocol = params.get("protocol", {})
        seeds = protocol.get("seeds") or [protocol.get("seed", 0)]
        group = branch_group(params)
        for seed in seeds:
            if (group, seed) in seen:
                continue
            seen.add((group, seed))
            items.append({"group": group, "seed": seed, "params": params,
                          "cache_dir": task["cache_dir"],
                          "label": f"{protocol.get('data_percentage', 100):g} % seed {seed}"})
    return items


def map_in_processes(func, items: list, jobs: int, on_result) -> None:
    """``on_result(item, result or exception)`` for ``func(item)`` over ``items`` in up to
    ``jobs`` spawned worker processes; Ctrl-C stops the workers."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(max_workers=min(jobs, len(items)),
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=worker_init)
    try:
        pending = {pool.submit(func, item): item for item in items}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                item = pending.pop(future)
                try:
                    on_result(item, future.result())
                except Exception as err:  # noqa: BLE001 - reported by on_result, work goes on
                    on_result(item, err)
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            if process.is_alive():
                process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def execute_dask(tasks: list, outcomes: dict, scheduler: str, bar, execute_run) -> None:
    """``execute_run(task)`` for every task on the Dask distributed scheduler ``host:port``."""
    from dask.distributed import Client, as_completed

    leaders, followers = waves(tasks)

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
                report_outcome(_outcome_of(future, task), outcomes, bar)
                for follower in followers.get(task["name"], []):
                    new = submit(client, follower)
                    by_key[new.key] = follower
                    futures.append(new)
                    queue.add(new)
        except BaseException:
            client.cancel(futures)
            raise
