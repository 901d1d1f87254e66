"""Time the main job, old code against new in one run: the cold several-seed sweep with its
report, and a fusion-only rerun of one experiment on cached branches.

Usage::

    .venv/bin/python bench/bench_sweep.py --old-ref 07c7334      # old = a git worktree of that commit
    .venv/bin/python bench/bench_sweep.py --old-tree /path/to/old   # an existing checkout
    .venv/bin/python bench/bench_sweep.py --only new                # the new code alone

What it does, for the old tree and then this one, each in its own work folder and through
the command line a user types (``python -m fusionlib ...`` with ``PYTHONPATH`` set to the
tree, so both use this virtual environment):

1. generates the default synthetic cohort (not timed: `make run` does it once per clone);
2. **cold sweep**: ``fusionlib run --jobs 2`` on every ``params/*.yaml`` of *this* tree, with
   an empty branch cache. This tree runs each file's seeds inside one notebook run
   (``protocol.seeds``); code that predates ``protocol.seeds`` gets one parameter file per
   (file, seed), named ``<name>_s<seed>`` (the same work: every seed trains its branches);
3. **report**: ``fusionlib report`` on those runs;
4. **fusion-only rerun**: ``fusionlib run --force`` on ``trainable_100`` (all its seeds; the
   old tree: its per-seed files) with the branches cached, as a user reruns after changing
   only the head.

Prints seconds per step for both trees and the ratios old / new; per tree, the fusion-only
rerun against a bare ``python -c "import tensorflow"`` (median of 3, measured right after) and
the ``mlp_100`` / ``trainable_100`` notebook times of the cold sweep (done.json). Speed is compared as ratios
measured in the same run (the machines are shared); docs/benchmarks.md records the figures.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}


def sweep_files(tree: Path, work: Path, params_glob: str) -> tuple[list[str], list[str]]:
    """(every sweep file, the fusion-only rerun's files) for ``tree``.

    A tree whose schema has ``protocol.seeds`` reads this tree's files as they are; an older
    one gets one file per (file, seed) written under ``work``.
    """
    files = sorted(glob.glob(str(REPO / params_glob)))
    if knows_seeds(tree):
        rerun = [f for f in files if Path(f).stem == "trainable_100"]
        return files, rerun
    out, rerun = [], []
    folder = work / "params-per-seed"
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        protocol = dict(raw.get("protocol") or {})
        seeds = protocol.pop("seeds", None) or [protocol.get("seed", 0)]
        for seed in seeds:
            one = {**raw, "name": f"{raw['name']}_s{seed}", "protocol": {**protocol, "seed": seed}}
            target = folder / f"{one['name']}.yaml"
            target.write_text(yaml.safe_dump(one, sort_keys=False), encoding="utf-8")
            out.append(str(target))
            if raw["name"] == "trainable_100":
                rerun.append(str(target))
    return out, rerun


def knows_seeds(tree: Path) -> bool:
    return "seeds:" in (tree / "fusionlib" / "splits.py").read_text(encoding="utf-8")


def fusionlib(tree: Path, *args: str, quiet: bool = True) -> tuple[float, int]:
    """Run ``python -m fusionlib ARGS`` on ``tree``'s code; (wall seconds, exit status)."""
    env = {**ENV, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fusionlib", *args], cwd=tree, env=env,
                          stdout=subprocess.DEVNULL if quiet else None,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        print(f"  `fusionlib {' '.join(args[:2])} ...` on {tree} exited {done.returncode}:\n"
              + "\n".join(done.stderr.strip().splitlines()[-8:]), file=sys.stderr)
    return seconds, done.returncode


def measure(label: str, tree: Path, work: Path, params_glob: str, jobs: int) -> dict:
    runs, cache, reports = work / "runs", work / "cache", work / "reports"
    files, rerun = sweep_files(tree, work, params_glob)
    print(f"[{label}] {tree}: {len(files)} run(s); generating the cohort (not timed)", flush=True)
    fusionlib(tree, "cohort")
    out = {"runs": len(files)}
    out["cold"], code = fusionlib(tree, "run", "--jobs", str(jobs), "--runs-dir", str(runs),
                                  "--cache-dir", str(cache), *files)
    print(f"[{label}] cold sweep          {out['cold']:7.1f} s (exit {code})", flush=True)
    out["report"], code = fusionlib(tree, "report", "--runs-dir", str(runs), "--out", str(reports))
    print(f"[{label}] report              {out['report']:7.1f} s (exit {code})", flush=True)
    out["rerun"], code = fusionlib(tree, "run", "--force", "--runs-dir", str(runs),
                                   "--cache-dir", str(cache), *rerun)
    print(f"[{label}] fusion-only rerun   {out['rerun']:7.1f} s (exit {code}; "
          f"{len(rerun)} run(s) of trainable_100)", flush=True)
    out["notebooks"] = notebook_seconds(runs)
    out["tf_import"] = tf_import_seconds()
    print(f"[{label}] bare `import tensorflow` {out['tf_import']:5.1f} s (median of 3)", flush=True)
    return out


def notebook_seconds(runs: Path) -> dict:
    """Each run's notebook time in the cold sweep (done.json's ``seconds``; an old tree's
    per-seed runs ``<name>_s<seed>`` summed by name)."""
    import json
    import re

    out: dict = {}
    for done in sorted(runs.glob("*/done.json")):
        name = re.sub(r"_s\d+$", "", done.parent.name)
        out[name] = out.get(name, 0.0) + json.loads(done.read_text())["seconds"]
    return out


def tf_import_seconds(times: int = 3) -> float:
    """The median wall time of ``python -c "import tensorflow"``: the floor of any run that
    trains a Keras head."""
    seconds = []
    for _ in range(times):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import tensorflow"], env=ENV, check=True)
        seconds.append(time.perf_counter() - start)
    return sorted(seconds)[len(seconds) // 2]


def old_tree_at(ref: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), ref],
                   check=True, capture_output=True)
    return where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-ref", help="commit of the old code (a temporary git worktree)")
    parser.add_argument("--old-tree", help="an existing checkout of the old code")
    parser.add_argument("--only", choices=["old", "new"], help="measure one tree only")
    parser.add_argument("--params", default="params/*.yaml", help="sweep files, relative to the repo")
    parser.add_argument("--jobs", type=int, default=2, help="parallel runs, as `make run` uses")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args()
    if args.only != "new" and not (args.old_ref or args.old_tree):
        parser.error("give --old-ref or --old-tree (or --only new)")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fusionlib-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    made_tree = None
    print(f"work folder {work}, {os.cpu_count()} CPUs, --jobs {args.jobs}")
    results = {}
    try:
        if args.only != "new":
            old = Path(args.old_tree) if args.old_tree else old_tree_at(args.old_ref, work / "old-tree")
            made_tree = None if args.old_tree else old
            results["old"] = measure("old", old.resolve(), work / "old", args.params, args.jobs)
        if args.only != "old":
            results["new"] = measure("new", REPO, work / "new", args.params, args.jobs)
    finally:
        if made_tree is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(made_tree)],
                           capture_output=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print("\n| step | " + " | ".join(f"{k} (s)" for k in results) +
          (" | old / new |" if len(results) == 2 else " |"))
    print("| --- |" + " --- |" * (len(results) + (len(results) == 2)))
    for step, label in (("cold", "cold sweep"), ("report", "report"),
                        ("total", "main job (sweep + report)"), ("rerun", "fusion-only rerun")):
        values = [r["cold"] + r["report"] if step == "total" else r[step] for r in results.values()]
        ratio = f" | {values[0] / values[1]:.2f}x" if len(values) == 2 else ""
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in values) + ratio + " |")
    for name, r in results.items():
        nb = r["notebooks"]
        mlp = (f"; mlp_100 / trainable_100 notebook {nb['mlp_100'] / nb['trainable_100']:.2f}x "
               f"({nb['mlp_100']:.1f} / {nb['trainable_100']:.1f} s)"
               if {"mlp_100", "trainable_100"} <= set(nb) else "")
        print(f"{name}: {r['runs']} run(s) in the sweep; fusion-only rerun / bare TensorFlow import "
              f"{r['rerun'] / r['tf_import']:.2f}x ({r['tf_import']:.1f} s){mlp}")
    if len(results) == 2:
        old_r, new_r = results["old"], results["new"]
        print(f"main job new / old: {(new_r['cold'] + new_r['report']) / (old_r['cold'] + old_r['report']):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
