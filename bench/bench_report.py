"""Time ``fusionlib report``, old code against new in one run, on the same finished runs.

Usage::

    .venv/bin/python bench/bench_report.py --old-ref 95e6454              # runs/ of `make run`
    .venv/bin/python bench/bench_report.py --old-ref 95e6454 --runs-dir runs --repeats 3

Each repeat times the old tree's ``fusionlib report`` and then this tree's, through the command
line a user types (``python -m fusionlib report`` with ``PYTHONPATH`` set to the tree, both in
this virtual environment), each into an empty output folder (cold: every run page converted).
The order alternates between repeats so that a machine that slows down or warms up does not
favour one side. Prints every time, the medians and the ratio new / old (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sweep import REPO, fusionlib, old_tree_at  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-ref", required=True, help="commit of the old code (a git worktree)")
    parser.add_argument("--runs-dir", default=str(REPO / "runs"),
                        help="finished runs to report on (default: runs/, the default sweep)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = Path(args.runs_dir).resolve()
    if not any(runs.glob("*/done.json")):
        parser.error(f"no finished runs in {runs}; run `make run` first")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        work = Path(tmp)
        old = old_tree_at(args.old_ref, work / "old-tree")
        trees = {"old": old, "new": REPO}
        times = {"old": [], "new": []}
        try:
            for i in range(args.repeats):
                order = ("old", "new") if i % 2 == 0 else ("new", "old")
                for label in order:
                    out = work / f"reports-{label}-{i}"
                    seconds, code = fusionlib(trees[label], "report", "--runs-dir", str(runs),
                                              "--out", str(out))
                    if code:
                        return code
                    times[label].append(seconds)
                    print(f"repeat {i + 1}: {label} ({args.old_ref if label == 'old' else commit})"
                          f" {seconds:6.1f} s", flush=True)
                    shutil.rmtree(out, ignore_errors=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)],
                           capture_output=True)
    old_s, new_s = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"\nfusionlib report on {runs} ({sum(1 for _ in runs.glob('*/done.json'))} runs), "
          f"median of {args.repeats}:")
    print(f"  old {args.old_ref}: {old_s:6.1f} s")
    print(f"  new {commit}: {new_s:6.1f} s")
    print(f"  new / old: {new_s / old_s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
