"""The planner's predicted power against simulated power, on the coverage harness's cohorts.

Uses bench/bench_coverage.py's simulation, where the truth is known: branch probabilities from
known distributions (the table the weaker branch, so a learned head beats the 70/30 mix),
per-visit data noise, per-seed training noise (and, with ``--seed-shift``, a per-seed shift of
a branch's whole score); per seed, patient-grouped 5-fold CV of a multinomial logistic head
against the fixed 0.7/0.3 mix, both by argmax.

1. **Truth**: for every number of patients in the settings, the procedure's true ΔQWK at that
   size (bench_coverage.truth: heads fitted on training sets of that size, scored on one large
   test draw).
2. **Pilot**: ``--pilots`` cohorts at the reference setting (``--reference``, patients x
   seeds), each compared exactly as the report compares runs
   (:func:`fusionlib.report.verdict.compare_over_seeds`), each giving its measured variance
   components (:class:`fusionlib.report.planner.VarianceComponents`); their mean is the
   planner's input, as one finished sweep's would be.
3. **Predicted power** at every setting: :func:`fusionlib.report.planner.predict` from the
   pilot's components, with the true ΔQWK of that size (``power_observed`` with delta set to
   the truth); beside it the median and the 10-90 % range of the same prediction made from a
   single pilot cohort, which is what one sweep gives.
4. **Simulated power**: ``--cohorts`` new cohorts at every setting, each compared the same
   way; the share whose verdict is "better" (the 95 % interval above 0; the truth is positive).

    .venv/bin/python bench/bench_power.py [--settings 40x3 40x8 80x3 160x3] [--reference 80x3]
        [--cohorts 300] [--pilots 100] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_coverage as harness  # noqa: E402  (the coverage benchmark's simulation)


def _setting(text: str) -> tuple[int, int]:
    try:
        n, s = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PATIENTSxSEEDS such as 80x3, got {text!r}")
    if n < 10 or s < 2:
        raise argparse.ArgumentTypeError(f"need at least 10 patients and 2 seeds, got {text!r}")
    return n, s


def seed_frame(rng, groups, y, branches, n_folds: int, seed: int) -> pd.DataFrame | None:
    """One seed's out-of-fold trainable and fixed predictions as the report's joined rows."""
    oof = harness.out_of_fold(rng, groups, y, branches, n_folds)
    if oof is None:
        return None
    trained, fixed, fold_of = oof
    frame = pd.DataFrame({"seed": seed, "repeat": 0, "case_id": np.arange(len(y)),
                          "fold": fold_of, "patient": groups, "label": y,
                          "pred": trained.argmax(1), "pred_b": fixed.argmax(1)})
    for j, c in enumerate("IPR"):
        frame[f"a_{c}"], frame[f"b_{c}"] = trained[:, j], fixed[:, j]
    return frame


def one_cohort(rng, n_patients: int, n_seeds: int, n_folds: int, n_boot: int) -> dict | None:
    """Draw a cohort, run every seed, compare as the report does (None: draw again)."""
    from fusionlib.report.verdict import compare_over_seeds

    groups, y, latent = harness.draw_cohort(rng, n_patients)
    branches = harness.Branches(rng, latent)
    frames = [seed_frame(rng, groups, y, branches, n_folds, s) for s in range(n_seeds)]
    if any(f is None for f in frames):
        return None
    return compare_over_seeds(pd.concat(frames, ignore_index=True), "pred", "pred_b",
                              [f"a_{c}" for c in "IPR"], [f"b_{c}" for c in "IPR"], n_folds,
                              n_boot=n_boot, random_state=int(rng.integers(2 ** 31)))


def cohorts(rng, n_patients, n_seeds, count, n_folds, n_boot, label):
    out, started = [], time.time()
    while len(out) < count:
        c = one_cohort(rng, n_patients, n_seeds, n_folds, n_boot)
        if c is not None:
            out.append(c)
            if len(out) % 50 == 0:
                print(f"  {label}: {len(out)} cohorts, {time.time() - started:.0f} s", flush=True)
    return out


def mean_components(results):
    """The pilots' parts as one sweep of their average would measure them: the raw parts
    (negative values included) averaged, then made non-negative once (averaging parts already
    kept non-negative would bias the seed shift upwards)."""
    from fusionlib.report.planner import VarianceComponents

    raw = np.mean([r["qwk"]["raw_parts"] for r in results], axis=0)
    comps = [r["qwk"]["components"] for r in results]
    return VarianceComponents.from_raw(*raw, delta=float(np.mean([c.delta for c in comps])),
                                       n0=float(np.mean([c.n0 for c in comps])), s0=comps[0].s0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", type=_setting, nargs="+",
                        default=[(40, 3), (40, 8), (80, 3), (160, 3)])
    parser.add_argument("--reference", type=_setting, default=(80, 3))
    parser.add_argument("--cohorts", type=int, default=300)
    parser.add_argument("--pilots", type=int, default=100)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n-boot", type=int, default=500)
    parser.add_argument("--truth-fits", type=int, default=200)
    parser.add_argument("--truth-cases", type=int, default=60000)
    parser.add_argument("--seed-shift", type=float, default=0.0,
                        help="SD of a per-seed shift of each branch's whole score")
    parser.add_argument("--image-strength", type=float, default=harness.Branches.IMAGE[0],
                        help="the image branch's strength (the table's is 0.7): nearer 0.7, a "
                             "smaller true difference")
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="30 cohorts, 20 pilots, 200 resamples")
    args = parser.parse_args(argv)
    if args.quick:
        args.cohorts, args.pilots, args.n_boot, args.truth_fits, args.truth_cases = 30, 20, 200, 40, 20000
    from threadpoolctl import threadpool_limits

    from fusionlib.report.conclusions import power_at
    from fusionlib.report.planner import predict

    harness.Branches.SEED_SHIFT = args.seed_shift
    harness.Branches.IMAGE = (args.image_strength, harness.Branches.IMAGE[1])
    started = time.time()
    rng = np.random.default_rng(args.random_state)
    with threadpool_limits(1, "blas"):
        sizes = sorted({n for n, _ in args.settings} | {args.reference[0]})
        truths = {n: harness.truth(rng, n, args.folds, args.truth_fits, args.truth_cases)
                  for n in sizes}
        for n, t in truths.items():
            print(f"true ΔQWK at {n} patients: {t:+.4f}", flush=True)
        pilots = cohorts(rng, *args.reference, args.pilots, args.folds, args.n_boot, "pilot")
        pilot = mean_components(pilots)
        raw = np.mean([r["qwk"]["raw_parts"] for r in pilots], axis=0)
        print(f"pilot {args.reference[0]}x{args.reference[1]}: raw parts averaged: patients "
              f"{raw[0]:.2e}, per-visit {raw[1]:.2e}, seed shift {raw[2]:.2e}")
        print(f"pilot {args.reference[0]}x{args.reference[1]}: mean ΔQWK {pilot.delta:+.4f}; "
              f"variance at {pilot.n0:.0f} patients: patients {pilot.patients:.2e}, per-visit "
              f"training noise {pilot.visit:.2e}, seed shift {pilot.shift:.2e}", flush=True)
        rows = []
        for n, s in args.settings:
            pred = predict(pilot, n, s, 0.02)
            predicted = power_at(truths[n], pred["se"], pred["df"])
            singles = [power_at(truths[n], *r["qwk"]["components"].interval(n, s))
                       for r in pilots]
            sim = cohorts(rng, n, s, args.cohorts, args.folds, args.n_boot, f"{n}x{s}")
            found = np.array([r["qwk"]["verdict"] == "better" for r in sim])
            simulated = float(found.mean())
            rows.append({"patients x seeds": f"{n} x {s}", "true ΔQWK": truths[n],
                         "mean estimate": float(np.mean([r["qwk"]["delta"] for r in sim])),
                         "predicted SE": pred["se"],
                         "simulated SD of ΔQWK": float(np.std([r["qwk"]["delta"] for r in sim], ddof=1)),
                         "mean measured SE": float(np.mean([r["qwk"]["se"] for r in sim])),
                         "predicted power": predicted,
                         "one pilot: median [10-90 %]": (
                             f"{np.median(singles):.2f} [{np.quantile(singles, 0.1):.2f}-"
                             f"{np.quantile(singles, 0.9):.2f}]"),
                         "simulated power": simulated,
                         "binomial SE": float(np.sqrt(simulated * (1 - simulated) / len(found))),
                         "difference (points)": 100 * (predicted - simulated)})
            print(f"  {n}x{s}: predicted {predicted:.3f}, simulated {simulated:.3f} "
                  f"({time.time() - started:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    print(f"\n{args.cohorts} cohorts per setting, {args.pilots} pilot cohorts at "
          f"{args.reference[0]} x {args.reference[1]}, {args.folds} folds, image strength "
          f"{harness.Branches.IMAGE[0]}, seed noise SD "
          f"{harness.Branches.SEED_NOISE}, seed shift SD {args.seed_shift}, {args.n_boot} "
          f"resamples, random state {args.random_state}\n")
    print("| " + " | ".join(table.columns) + " |")
    print("| " + " | ".join("---" for _ in table.columns) + " |")
    for _, r in table.iterrows():
        print("| " + " | ".join(f"{v:+.4f}" if k in ("true ΔQWK", "mean estimate") else
                                f"{v:.4f}" if k in ("predicted SE", "simulated SD of ΔQWK", "mean measured SE") else
                                f"{v:+.1f}" if k == "difference (points)" else
                                f"{v:.3f}" if isinstance(v, float) else str(v)
                                for k, v in r.items()) + " |")
    worst = float(table["difference (points)"].abs().max())
    print(f"\nlargest |predicted - simulated|: {worst:.1f} points ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
