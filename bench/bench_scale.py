"""Scale: one experiment on synthetic cohorts of growing size, seconds and peak memory.

Usage: .venv/bin/python bench/bench_scale.py [--sizes 120 300 1000] [--quick]
       [--params params/trainable_100.yaml] [--preset dfu_like] [--seed 0] [--keep DIR]

For every size N it
1. generates a synthetic cohort of N patients (``fusionlib.synthetic.generate_cohort``, the
   default preset and seed, every other knob at its default: about 3.3-3.4 visits and 6 thermal
   maps per patient) into a temporary folder;
2. runs the experiment of ``--params`` (default ``params/trainable_100.yaml``: trainable
   fusion, all patients, 5 outer folds, every other setting at its default) on that cohort in
   a FRESH child process with an EMPTY branch cache (cold: every Random Forest and CNN is
   trained), through :func:`fusionlib.experiment.run_experiment` - what the experiment
   notebook calls - without the notebook's kernel start and plots (a constant few seconds per
   run, see docs/benchmarks.md);
3. records the child's wall seconds (Python and TensorFlow import included), the wall and
   CPU (user + system, all threads) seconds ``run_experiment`` itself took, and the peak memory of the process tree doing the work:
   the child's ``ru_maxrss`` from ``os.wait4`` (the largest resident set of the child and of
   any process it waited for) and, as a cross-check, the largest SUM of the resident sets of
   the child and all its descendants sampled every 0.1 s with psutil (when installed).

The table ends with seconds and MiB per patient, and each size's seconds per patient
relative to the smallest size (1.00 = exactly linear). The cohorts and caches live under
one temporary folder removed at the end (``--keep DIR`` writes them to DIR instead).

The script uses only the public entry points (generate_cohort, load_cohort, load_params,
run_experiment), so it runs unchanged on any commit that has them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = Path(__file__).resolve().parents[1]
LIMIT_MIB = 4096          # issue 11, target 4: peak memory under 4 GB at 1,000 patients


# --------------------------------------------------------------------------- child


def _cpu_seconds(who) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def child(params_file: str, cohort_dir: str, cache_dir: str) -> None:
    """Runs in the child process: one cold experiment; prints one JSON line last."""
    sys.path.insert(0, str(REPO))
    started = time.perf_counter()
    from fusionlib.data import load_cohort
    from fusionlib.experiment import run_experiment
    from fusionlib.params import load_params

    params = load_params(params_file)
    cohort = load_cohort(cohort_dir)
    imported = time.perf_counter()
    cpu_before = _cpu_seconds(resource.RUSAGE_SELF)
    result = run_experiment(params, cohort=cohort, cache_dir=cache_dir, progress=False)
    done = time.perf_counter()
    cpu = _cpu_seconds(resource.RUSAGE_SELF) - cpu_before
    summary = result.summary()
    qwk = summary.get("qwk", {})
    print(json.dumps({
        "experiment_s": done - imported,
        "experiment_cpu_s": cpu,
        "setup_s": imported - started,
        "cases": int(len(cohort.cases)),
        "patients": int(cohort.cases["patient"].nunique()),
        "qwk": qwk.get("mean") if isinstance(qwk, dict) else qwk,
        "maxrss_self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }), flush=True)


# --------------------------------------------------------------------------- parent


def _tree_rss_sampler(pid: int, stop: threading.Event, peak: list) -> None:
    """Largest sum of RSS over ``pid`` and its descendants, sampled every 0.1 s."""
    try:
        import psutil
    except ImportError:
        return
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        peak[0] = max(peak[0], total)
        stop.wait(0.1)


def count_images(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.png"))


def measure(n_patients: int, params_file: Path, preset: str, seed: int, work: Path) -> dict:
    from fusionlib.synthetic import generate_cohort

    cohort_dir = work / f"cohort_{n_patients}"
    started = time.perf_counter()
    generate_cohort(cohort_dir, preset=preset, random_state=seed, n_patients=n_patients)
    generate_s = time.perf_counter() - started
    cache_dir = work / f"cache_{n_patients}"          # fresh: a cold run

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = work / f"child_{n_patients}.log"
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(params_file),
                                 str(cohort_dir), str(cache_dir)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        stop, peak = threading.Event(), [0]
        sampler = threading.Thread(target=_tree_rss_sampler, args=(proc.pid, stop, peak),
                                   daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
    wall_s = time.perf_counter() - started
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"bench_scale: the run on {n_patients} patients failed "
                         f"(exit {proc.returncode}):\n{text[-3000:]}")
    report = json.loads(text.strip().splitlines()[-1])
    return {"n": n_patients, "patients": report["patients"], "cases": report["cases"],
            "images": count_images(cohort_dir), "generate_s": generate_s, "wall_s": wall_s,
            "experiment_s": report["experiment_s"], "qwk": report["qwk"],
            "cpu_s": report["experiment_cpu_s"],
            "maxrss_mib": usage.ru_maxrss / 1024,       # Linux: KiB
            "tree_mib": peak[0] / 2 ** 20 if peak[0] else None}


def print_table(rows: list) -> None:
    base = rows[0]["experiment_s"] / rows[0]["patients"]
    print()
    base_cpu = rows[0]["cpu_s"] / rows[0]["patients"]
    print("| patients | visits | thermal maps | generate s | experiment s | experiment CPU s "
          "| child wall s | peak RSS MiB (wait4) | peak tree RSS MiB (psutil) | s / patient "
          "| vs smallest | CPU s / patient | vs smallest | MiB / patient | QWK |")
    print("| " + " | ".join(["---"] * 16) + " |")
    for r in rows:
        per, per_cpu = r["experiment_s"] / r["patients"], r["cpu_s"] / r["patients"]
        tree = f"{r['tree_mib']:.0f}" if r["tree_mib"] is not None else "n/a"
        print(f"| {r['patients']} | {r['cases']} | {r['images']} | {r['generate_s']:.1f} "
              f"| {r['experiment_s']:.1f} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} "
              f"| {r['maxrss_mib']:.0f} | {tree} | {per:.3f} | {per / base:.2f} "
              f"| {per_cpu:.3f} | {per_cpu / base_cpu:.2f} "
              f"| {r['maxrss_mib'] / r['patients']:.2f} | {r['qwk']:.3f} |")
    print("(CPU s: user + system seconds of the child's run_experiment, all threads; on a shared "
          "machine the wall seconds grow with the other load, the CPU seconds much less)")
    print()
    if len(rows) >= 2:
        # Least-squares line through (patients, seconds) and (patients, MiB): fixed + per patient.
        import numpy as np

        n = np.array([r["patients"] for r in rows], dtype=float)
        for label, key in (("experiment seconds", "experiment_s"),
                           ("experiment CPU seconds", "cpu_s"), ("peak RSS MiB", "maxrss_mib")):
            y = np.array([r[key] for r in rows], dtype=float)
            slope, intercept = np.polyfit(n, y, 1)
            print(f"linear fit, {label}: {intercept:.1f} + {slope:.4f} x patients")
    largest = rows[-1]
    peak = max(largest["maxrss_mib"], largest["tree_mib"] or 0)
    verdict = "under" if peak < LIMIT_MIB else "NOT under"
    print(f"peak memory at {largest['patients']} patients: {peak:.0f} MiB, {verdict} "
          f"{LIMIT_MIB} MiB")


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[120, 300, 1000],
                        help="patients per cohort (default 120 300 1000)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: sizes 40 and 80 only")
    parser.add_argument("--params", default=str(REPO / "params" / "trainable_100.yaml"))
    parser.add_argument("--preset", default="dfu_like")
    parser.add_argument("--seed", type=int, default=0, help="generator seed of the cohorts")
    parser.add_argument("--keep", default=None, help="write cohorts and caches here, keep them")
    args = parser.parse_args(argv)
    sizes = [40, 80] if args.quick else sorted(args.sizes)

    sys.path.insert(0, str(REPO))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    print(f"bench_scale: {Path(args.params).name} on synthetic cohorts ({args.preset}, seed "
          f"{args.seed}) of {', '.join(map(str, sizes))} patients; commit {commit}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}; each size cold, in its own child process",
          flush=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fusionlib-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n in sizes:
            row = measure(n, Path(args.params).resolve(), args.preset, args.seed, work)
            rows.append(row)
            print(f"  {n} patients: experiment {row['experiment_s']:.1f} s "
                  f"({row['cpu_s']:.1f} CPU s), child wall {row['wall_s']:.1f} s, "
                  f"peak RSS {row['maxrss_mib']:.0f} MiB", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
