"""Benchmark: image CNN training (the image branch's inner models), old code against new.

Speed: the image branch of ``params/trainable_100.yaml`` on the default synthetic cohort,
every outer fold (5 folds x 2 inner CNNs = the 10 inner models of one experiment), trained
in a fresh process by today's code and by the code of ``--old-tree`` (a git worktree of the
commit before the compiled loop, run with ``PYTHONPATH`` set to it). Per inner model: the
time of the branch's ``_fit_inner`` (train one CNN, score its held-out and the test cases),
median over the 10; per experiment: the branch's 5 ``fit_fold`` calls, image reading
included (no crop cache, no branch cache). Prints both and ``old / new per inner model``.

Quality (``--quality``; slow, about a minute per seed and side): ``trainable_100`` with
``protocol.seed`` = each of ``--seeds`` run by ``run_experiment`` (no cache) with old and new
code; the score is the image-only baseline's test QWK (``thermal_map_only``: the CNN
branch's probabilities, the experiment's fallback for cases without an image), mean over
folds, as metrics.json reports it. Prints old and new means over the seeds and their
difference (target |diff| <= 0.01). Results are kept in ``--results`` (JSON per side and
seed) and reused unless ``--fresh``.

    git worktree add --detach /tmp/fusionlib-old 07c7334
    .venv/bin/python bench/bench_cnn.py --old-tree /tmp/fusionlib-old [--quality]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

HERE = Path(__file__).resolve().parents[1]
PARAMS = HERE / "params" / "trainable_100.yaml"


# --------------------------------------------------------------------------- workers
# Run in a child process whose PYTHONPATH is the old or the new tree; they only use API
# that both have (load_params, run_experiment's helpers, ImageBranch).


def _one_seed_file(seed: int = 0) -> str:
    """``params/trainable_100.yaml`` with the single ``protocol.seed`` ``seed`` (its ``seeds``
    list dropped), written to a temporary file: code before ``protocol.seeds`` reads it too, and
    the new code trains one seed, as the old one does."""
    import tempfile

    import yaml

    raw = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))
    protocol = dict(raw.get("protocol") or {})
    protocol.pop("seeds", None)
    raw["protocol"] = {**protocol, "seed": int(seed)}
    handle, path = tempfile.mkstemp(prefix="bench-cnn-", suffix=".yaml")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        yaml.safe_dump(raw, out, sort_keys=False)
    return path


def _speed_worker(params_path: str) -> dict:
    import numpy as np

    from fusionlib import images as images_module
    from fusionlib.experiment import build_branches, load_dataset, outer_folds, subsample
    from fusionlib.params import load_params

    params = load_params(params_path)
    cohort = subsample(load_dataset(params.data), params)
    folds = outer_folds(cohort, params)
    branch = build_branches(params, None)["thermal_map"]
    loads = []
    real_arrays = images_module.cohort_image_arrays

    def counting(*args, **kwargs):
        loads.append(1)
        return real_arrays(*args, **kwargs)

    images_module.cohort_image_arrays = counting
    inner = []
    real_fit = branch._fit_inner

    def timed(*args, **kwargs):
        started = time.perf_counter()
        out = real_fit(*args, **kwargs)
        inner.append(time.perf_counter() - started)
        return out

    branch._fit_inner = timed
    per_fold, epochs = [], []
    for fold in folds:
        started = time.perf_counter()
        out = branch.fit_fold(cohort, fold.train, fold.test)
        per_fold.append(time.perf_counter() - started)
        assert np.isfinite(out.test_proba[out.test_mask]).all()
        epochs += [h["epochs_run"] for h in branch.history]
    return {"inner": inner, "folds": per_fold, "loads": len(loads), "epochs": epochs}


def _quality_worker(params_path: str, seed: int) -> dict:
    import numpy as np

    from fusionlib.experiment import run_experiment
    from fusionlib.metrics import qwk
    from fusionlib.params import load_params

    params = load_params(params_path)        # a one-seed file of that seed (_one_seed_file)
    started = time.perf_counter()
    result = run_experiment(params, cache_dir=None, progress=False, log=lambda *_: None)
    seconds = time.perf_counter() - started
    folds = [f.scores.get("thermal_map_only_qwk") for f in result.folds]
    per_fold = [qwk(f.y_true, f.baselines["thermal_map_only"].argmax(axis=1))
                for f in result.folds]
    summary = result.summary()
    return {"seed": seed, "qwk_folds": per_fold, "qwk": float(np.mean(per_fold)),
            "summary_entry": summary.get("thermal_map_only_qwk"), "scores_entry": folds,
            "fused_qwk": float(np.mean([f.scores["qwk"] for f in result.folds])),
            "seconds": seconds}


def _child(tree: Path, args: list) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), TF_CPP_MIN_LOG_LEVEL="3",
               TF_ENABLE_ONEDNN_OPTS="0")
    proc = subprocess.run([sys.executable, __file__, "--worker", *args], env=env, cwd=tree,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _git_commit(tree: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-tree", default="/tmp/fusionlib-old",
                        help="git worktree of the old code (default /tmp/fusionlib-old)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="speed runs per side, alternating old/new (medians pooled)")
    parser.add_argument("--quality", action="store_true", help="also the 3-seed quality run")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--results", default="/tmp/bench_cnn_results",
                        help="folder keeping the quality results (reused unless --fresh)")
    parser.add_argument("--fresh", action="store_true", help="recompute kept quality results")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        kind, *rest = args.worker
        path = _one_seed_file(int(rest[0]) if rest else 0)
        try:
            out = (_speed_worker(path) if kind == "speed" else _quality_worker(path, int(rest[0])))
        finally:
            os.unlink(path)
        print(json.dumps(out))
        return 0

    old_tree = Path(args.old_tree).resolve()
    if not (old_tree / "fusionlib").is_dir():
        print(f"--old-tree {old_tree} holds no fusionlib; create it with\n"
              f"  git worktree add --detach {old_tree} 07c7334", file=sys.stderr)
        return 2
    trees = {"old": old_tree, "new": HERE}
    print(f"old: {old_tree} @ {_git_commit(old_tree)}   new: {HERE} @ {_git_commit(HERE)}")

    runs = {"old": [], "new": []}
    for _ in range(args.repeats):
        for side in ("old", "new"):
            runs[side].append(_child(trees[side], ["speed"]))
    table = {}
    for side, side_runs in runs.items():
        inner = [s for r in side_runs for s in r["inner"]]
        totals = [sum(r["folds"]) for r in side_runs]
        table[side] = {"median": statistics.median(inner), "first": side_runs[0]["inner"][0],
                       "min": min(inner), "max": max(inner),
                       "total": statistics.median(totals), "loads": side_runs[0]["loads"],
                       "n": len(inner),
                       "epochs": statistics.mean(e for r in side_runs for e in r["epochs"])}
    print("\nImage CNN, thermal_map branch of trainable_100 (5 folds x 2 inner models), "
          "default synthetic cohort")
    print("| code | per inner model, median s (n) | first model s | min-max s | "
          "experiment's 10 models, s | image loads | mean epochs run |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for side in ("old", "new"):
        r = table[side]
        print(f"| {side} | {r['median']:.3f} ({r['n']}) | {r['first']:.3f} | "
              f"{r['min']:.3f}-{r['max']:.3f} | {r['total']:.2f} | {r['loads']} | {r['epochs']:.1f} |")
    experiment_ratio = table["old"]["total"] / table["new"]["total"]
    print(f"old / new per experiment (10 inner models + image reading): {experiment_ratio:.2f}x")

    if args.quality:
        results = Path(args.results)
        results.mkdir(parents=True, exist_ok=True)
        seeds = [int(s) for s in args.seeds.split(",")]
        scores = {"old": [], "new": []}
        for seed in seeds:
            for side in ("old", "new"):
                path = results / f"{side}_seed{seed}.json"
                if path.is_file() and not args.fresh:
                    out = json.loads(path.read_text())
                else:
                    out = _child(trees[side], ["quality", str(seed)])
                    path.write_text(json.dumps(out, indent=1))
                scores[side].append(out)
        print("\nImage-only baseline (thermal_map_only) test QWK, mean over 5 folds, "
              "trainable_100")
        print("| seed | old | new | new - old | old s | new s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for o, n in zip(scores["old"], scores["new"]):
            print(f"| {o['seed']} | {o['qwk']:.4f} | {n['qwk']:.4f} | {n['qwk'] - o['qwk']:+.4f} "
                  f"| {o['seconds']:.1f} | {n['seconds']:.1f} |")
        old_mean = statistics.mean(o["qwk"] for o in scores["old"])
        new_mean = statistics.mean(n["qwk"] for n in scores["new"])
        print(f"| mean | {old_mean:.4f} | {new_mean:.4f} | {new_mean - old_mean:+.4f} | | |")
        # Run-to-run noise: the per-fold differences (same folds, same patients) and the
        # standard error of their mean; two trainings of the same code differ by this much.
        diffs = [b - a for o, n in zip(scores["old"], scores["new"])
                 for a, b in zip(o["qwk_folds"], n["qwk_folds"])]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        print(f"per-fold differences (n={len(diffs)}): mean {statistics.mean(diffs):+.4f}, "
              f"sd {statistics.stdev(diffs) if len(diffs) > 1 else float('nan'):.4f}, "
              f"standard error of the mean {se:.4f}")
        print(f"mean image-only test QWK over seeds {args.seeds}: old {old_mean:.4f}, "
              f"new {new_mean:.4f}, diff {new_mean - old_mean:+.4f} (target |diff| <= 0.01)")

    ratio = table["old"]["median"] / table["new"]["median"]
    print(f"old / new per inner model: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
