"""Time the main job: a cold sweep, a no-op rerun, and a fusion-only run on cached branches.

Usage: .venv/bin/python bench/bench_sweep.py [--params 'params/*.yaml'] [--keep DIR]

Prints wall-clock seconds and ratios measured in the same process and run, so
they can be compared across machines; docs/benchmarks.md records the figures.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = Path(__file__).resolve().parents[1]


def timed(label, func):
    start = time.perf_counter()
    code = func()
    seconds = time.perf_counter() - start
    print(f"{label:<46} {seconds:8.1f} s   (exit {code})", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params" / "*.yaml"))
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temp folder)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel runs, as `make run` uses")
    args = parser.parse_args()
    from fusionlib.report import build_report
    from fusionlib.runner import run_all

    files = sorted(glob.glob(args.params))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fusionlib-bench-"))
    runs, cache, reports = work / "runs", work / "cache", work / "reports"
    print(f"{len(files)} parameter files, work folder {work}, {os.cpu_count()} CPUs")
    cold = timed(f"cold sweep (branches trained, --jobs {args.jobs})", lambda: run_all(
        files, runs_dir=runs, cache_dir=cache, jobs=args.jobs))
    report = timed("report (index.html + one page per run)", lambda: build_report(runs, reports) and 0)
    noop = timed("second run, nothing changed", lambda: run_all(files, runs_dir=runs, cache_dir=cache,
                                                                jobs=args.jobs))
    one = [f for f in files if Path(f).stem.startswith("trainable_100")] or files[:1]
    shutil.rmtree(runs / Path(one[0]).stem, ignore_errors=True)
    warm = timed("one run, branches cached (fusion only)", lambda: run_all(
        one, runs_dir=runs, cache_dir=cache))
    cold_one = timed("the same run, cold cache", lambda: run_all(
        one, runs_dir=work / "runs_cold", cache_dir=work / "cache_cold"))
    print(f"\nmain job (sweep + report): {cold + report:.1f} s")
    print(f"no-op rerun / cold sweep:  {noop / cold:.3f}")
    print(f"cached run / cold run:     {warm / cold_one:.3f}  ({cold_one / warm:.1f}x faster)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
