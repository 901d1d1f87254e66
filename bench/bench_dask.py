"""The same experiments through the runner on a local Dask cluster and on the process pool.

Usage: .venv/bin/python bench/bench_dask.py [--workers 2] [--full] [--keep DIR]

Four experiments - fixed and trainable fusion at 100 % and at 50 % of the patients, i.e. two
branch groups of two runs each - are executed cold (empty runs and cache folders) twice by
:func:`fusionlib.running.run_all`, the function behind ``fusionlib run``:

* ``jobs=N``: the local process pool (``fusionlib run --jobs N``);
* ``scheduler=<address>``: a ``dask.distributed.LocalCluster`` of N worker processes with one
  thread each, started here (``fusionlib run --scheduler host:port`` against it).

Both modes submit work in the same order: first one task per (branch group, seed) that
trains its branch outputs into the cache (``runner.prefill_one``), then one task per run (one
notebook execution) as soon as its group's sets are done, reading the cached branch
probabilities. Every worker shares one runs folder and one cache folder (the same filesystem
here). The script prints the wall seconds of each mode, their ratio, and whether
both modes gave the same per-fold QWKs.

By default the experiments are small (3 outer folds, 2 inner CNNs of 4 epochs, 50 trees) so
the comparison takes a few minutes on 2 cores; ``--full`` runs the shipped
``params/{fixed,trainable}_{100,50}.yaml`` instead. The default synthetic cohort is used
(``data/generated``, generated once before the timing); runs and caches live in a temporary
folder removed at the end unless ``--keep DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SMALL = {"protocol": {"folds": 3}, "image": {"epochs": 4, "inner_folds": 2},
         "clinical": {"options": {"n_estimators": 50}}, "head": {"max_epochs": 200}}
EXPERIMENTS = [("fixed", 100), ("trainable", 100), ("fixed", 50), ("trainable", 50)]


def write_params(folder: Path, full: bool) -> list[Path]:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    if full:
        return [REPO / "params" / f"{fusion}_{pct}.yaml" for fusion, pct in EXPERIMENTS]
    paths = []
    for fusion, pct in EXPERIMENTS:
        name = f"bench_{fusion}_{pct}"
        body = {"name": name, "description": f"bench_dask: {fusion} fusion, {pct} % of patients",
                "fusion": {"variant": fusion},
                **{k: dict(v) for k, v in SMALL.items()}}
        body["protocol"]["data_percentage"] = pct
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        paths.append(path)
    return paths


def fold_qwks(runs_dir: Path) -> dict:
    out = {}
    for metrics in sorted(runs_dir.glob("*/metrics.json")):
        out[metrics.parent.name] = [row["qwk"] for row in json.loads(metrics.read_text())["folds"]]
    return out


def timed(label: str, call) -> float:
    print(f"{label} ...", flush=True)
    started = time.perf_counter()
    rc = call()
    seconds = time.perf_counter() - started
    if rc != 0:
        raise SystemExit(f"bench_dask: {label} failed (exit {rc})")
    print(f"{label}: {seconds:.1f} s", flush=True)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="pool size and Dask workers (2)")
    parser.add_argument("--full", action="store_true", help="the shipped params files")
    parser.add_argument("--keep", default=None, help="write runs and caches here, keep them")
    args = parser.parse_args(argv)

    import dask
    import distributed
    from dask.distributed import LocalCluster

    from fusionlib.running import runner
    from fusionlib.synthetic import ensure_default_cohort

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    print(f"bench_dask: 4 {'shipped' if args.full else 'small'} experiments, cold, "
          f"{args.workers} workers; commit {commit}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, dask {dask.__version__}, distributed "
          f"{distributed.__version__}, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    ensure_default_cohort()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fusionlib-dask-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        paths = write_params(work / "params", args.full)
        pool_runs, dask_runs = work / "runs-pool", work / "runs-dask"
        pool_s = timed(f"process pool, jobs={args.workers}", lambda: runner.run_all(
            paths, runs_dir=pool_runs, cache_dir=work / "cache-pool", jobs=args.workers))

        started = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster:
            cluster_start_s = time.perf_counter() - started
            print(f"local Dask cluster at {cluster.scheduler_address} started in "
                  f"{cluster_start_s:.1f} s", flush=True)
            dask_s = timed(f"Dask LocalCluster, {args.workers} workers x 1 thread",
                           lambda: runner.run_all(paths, runs_dir=dask_runs,
                                                  cache_dir=work / "cache-dask",
                                                  scheduler=cluster.scheduler_address))
        same = fold_qwks(pool_runs) == fold_qwks(dask_runs)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print("| mode | seconds (4 runs, cold) |")
    print("| --- | --- |")
    print(f"| process pool, `--jobs {args.workers}` | {pool_s:.1f} |")
    print(f"| Dask LocalCluster, {args.workers} workers x 1 thread (cluster start "
          f"{cluster_start_s:.1f} s not included) | {dask_s:.1f} |")
    print()
    print(f"same per-fold QWK in both modes: {'yes' if same else 'NO'}")
    print(f"Dask / process pool: {dask_s / pool_s:.2f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
