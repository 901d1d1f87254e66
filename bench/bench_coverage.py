"""Coverage of the intervals for "trainable minus fixed" ΔQWK, on many simulated cohorts.

A simulation where the truth is known: branch probabilities are drawn from known
distributions instead of training a Random Forest and a CNN, so hundreds of cohorts take
minutes. Per cohort of ``--patients`` patients (1-5 visits each, an ordinal phase per visit
from a patient-level latent, so visits of one patient are correlated):

* two branches give each visit 3 class probabilities from a noisy score of the latent
  (the table weaker than the images, so the fixed 70/30 mix is the wrong one); the noise has
  a part fixed per visit (the data) and a part drawn anew per **seed** (the models'
  training randomness);
* per seed, patient-grouped 5-fold CV with a seed-specific assignment: the "trainable" head
  is a multinomial logistic regression on the 6 probabilities (what the ``trainable`` head
  fits), fitted on the training folds; "fixed" is 0.7 RF + 0.3 image; both decided by argmax;
* ΔQWK = QWK(trainable) − QWK(fixed) on the out-of-fold predictions, averaged over seeds.

The true difference is that of the procedure at this cohort size: the head fitted on
training sets of the same size (``--truth-fits`` independent draws, new seed noise each),
scored on one very large test draw (``--truth-cases`` visits). Intervals compared, nominal
95 %:

1. **fold-only bootstrap** (the report's paired interval before several seeds): patients
   resampled, one seed's predictions held fixed;
2. **seed-averaged patient bootstrap** (``fusionlib.metrics.seed_averaged_bootstrap``): the
   same draw of patients for every seed, the statistic averaged over seeds;
3. **corrected resampled t** (Nadeau and Bengio 2003): the per-fold differences of every
   (seed, fold), their mean ± t x sqrt((1/J + n_test/n_train) s²), J = seeds x folds;
4. **patients + seeds t** (``fusionlib.metrics.patients_and_seeds_interval``, the verdict's):
   the seed-averaged difference ± t x sqrt(SE²(patient bootstrap) + s²(per-seed)/S), with
   Welch-Satterthwaite degrees of freedom; and, for contrast, the same with the per-visit
   training noise (in both parts) taken out of the seeds' part (``seed_averaged_bootstrap``'s
   ``combined``).

Also printed: the median share of the seeds' spread in 4's variance (as measured), and 4's
coverage among the cohorts where that measured share is at most / above 0.5.

Prints each interval's coverage (share of cohorts whose interval holds the truth) with its
binomial standard error, and mean width. ``--quick`` for a smoke run.

    .venv/bin/python bench/bench_coverage.py [--cohorts 200] [--patients 120] [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

CENTRES = np.array([-1.0, 0.0, 1.0])
VERDICT = "patients + seeds t (the verdict's)"
THRESHOLDS = (-0.45, 0.55)


def draw_cohort(rng, n_patients: int):
    """(groups, phase, latent) of every visit."""
    visits = rng.integers(1, 6, n_patients)
    groups = np.repeat(np.arange(n_patients), visits)
    latent = rng.normal(0, 1, n_patients)[groups] + rng.normal(0, 0.6, len(groups))
    return groups, np.digitize(latent, THRESHOLDS), latent


def probabilities(score):
    logits = -((score[:, None] - CENTRES[None, :]) ** 2) / (2 * 0.6 ** 2)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


class Branches:
    """Each branch's score = strength x latent + data noise (fixed per visit) + seed noise."""

    RF = (0.7, 0.7)             # (strength, data noise SD): the weaker branch
    IMAGE = (0.85, 0.6)
    SEED_NOISE = 0.35

    def __init__(self, rng, latent):
        self.latent = latent
        self.data = [rng.normal(0, sd, len(latent)) for _, sd in (self.RF, self.IMAGE)]

    SEED_SHIFT = 0.0            # SD of a per-seed shift of a branch's whole score

    def seed(self, rng, shifts=None):
        """(p_rf, p_image) of one seed: new training noise on top of the data noise, per visit
        and (``SEED_SHIFT``) one shift of the whole branch (a systematic training effect; the
        same ``shifts`` for a seed's training and test rows)."""
        if shifts is None:
            shifts = rng.normal(0, self.SEED_SHIFT, 2)
        return [probabilities(strength * self.latent + data + shift
                              + rng.normal(0, self.SEED_NOISE, len(self.latent)))
                for (strength, _), data, shift in zip((self.RF, self.IMAGE), self.data, shifts)]


def fit_head(x, y):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=100.0, max_iter=500).fit(x, y)


def out_of_fold(rng, groups, y, branches, n_folds: int):
    """One seed: (trainable, fixed) class probabilities of every visit out of fold, and the
    fold of each visit; None when a training fold lacks a phase."""
    p_rf, p_img = branches.seed(rng)
    x = np.hstack([p_rf, p_img])
    fixed = 0.7 * p_rf + 0.3 * p_img
    fold_of = rng.permutation(np.arange(groups.max() + 1) % n_folds)[groups]
    trained = np.zeros_like(fixed)
    for k in range(n_folds):
        test = fold_of == k
        if len(np.unique(y[~test])) < 3:
            return None
        trained[test] = fit_head(x[~test], y[~test]).predict_proba(x[test])
    return trained, fixed, fold_of


def one_seed(rng, groups, y, branches, n_folds: int):
    """Out-of-fold predictions of trainable and fixed for one seed, and per-fold ΔQWK."""
    from fusionlib.metrics import case_log_loss, qwk

    oof = out_of_fold(rng, groups, y, branches, n_folds)
    if oof is None:
        return None
    trained, fixed, fold_of = oof
    fold_deltas = [qwk(y[fold_of == k], trained[fold_of == k].argmax(1))
                   - qwk(y[fold_of == k], fixed[fold_of == k].argmax(1)) for k in range(n_folds)]
    return {"y": y, "groups": groups, "pred_a": trained.argmax(1), "pred_b": fixed.argmax(1),
            "loss_a": case_log_loss(y, trained), "loss_b": case_log_loss(y, fixed),
            "fold_deltas": fold_deltas}


def truth(rng, n_patients: int, n_folds: int, fits: int, cases: int) -> float:
    """Expected ΔQWK of the procedure trained on (n_folds-1)/n_folds of a cohort of this size."""
    from fusionlib.metrics import qwk

    n_test_patients = max(1, cases // 3)
    groups, y, latent = draw_cohort(rng, n_test_patients)
    test_branches = Branches(rng, latent)
    deltas = []
    for _ in range(fits):
        g, yt, lt = draw_cohort(rng, int(round(n_patients * (n_folds - 1) / n_folds)))
        train = Branches(rng, lt)
        seed = np.random.default_rng(rng.integers(2 ** 32))
        shifts = seed.normal(0, Branches.SEED_SHIFT, 2)     # one trained model: one shift
        p_rf, p_img = train.seed(seed, shifts)
        if len(np.unique(yt)) < 3:
            continue
        head = fit_head(np.hstack([p_rf, p_img]), yt)
        # The test draw's predictions come from models of the same kind: new seed noise.
        q_rf, q_img = test_branches.seed(seed, shifts)
        a = head.predict_proba(np.hstack([q_rf, q_img])).argmax(1)
        b = (0.7 * q_rf + 0.3 * q_img).argmax(1)
        deltas.append(qwk(y, a) - qwk(y, b))
    return float(np.mean(deltas))


def corrected_t(deltas, n_folds: int, level: float = 0.95) -> tuple[float, float]:
    from fusionlib.metrics import corrected_resampled_t

    out = corrected_resampled_t(deltas, test_train_ratio=1 / (n_folds - 1), level=level)
    return out["ci_low"], out["ci_high"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", type=int, default=200)
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n-boot", type=int, default=500)
    parser.add_argument("--truth-fits", type=int, default=200)
    parser.add_argument("--truth-cases", type=int, default=60000)
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--seed-noise", type=float, default=Branches.SEED_NOISE,
                        help="SD of the per-seed training noise on each branch's score")
    parser.add_argument("--seed-shift", type=float, default=0.0,
                        help="SD of a per-seed shift of each branch's whole score")
    parser.add_argument("--quick", action="store_true", help="20 cohorts, 200 resamples")
    args = parser.parse_args(argv)
    if args.quick:
        args.cohorts, args.n_boot, args.truth_fits, args.truth_cases = 20, 200, 40, 20000
    from threadpoolctl import threadpool_limits

    from fusionlib.metrics import (paired_bootstrap_qwk, patients_and_seeds_interval,
                                   seed_averaged_bootstrap)
    from fusionlib.report.verdict import seed_share

    Branches.SEED_NOISE, Branches.SEED_SHIFT = args.seed_noise, args.seed_shift
    started = time.time()
    rng = np.random.default_rng(args.random_state)
    with threadpool_limits(1, "blas"):
        true_delta = truth(rng, args.patients, args.folds, args.truth_fits, args.truth_cases)
        print(f"true ΔQWK of the procedure at {args.patients} patients: {true_delta:+.4f} "
              f"({args.truth_fits} training draws, {args.truth_cases} test visits; "
              f"{time.time() - started:.0f} s)", flush=True)
        hits = {"fold-only bootstrap (one seed)": [], "seed-averaged patient bootstrap": [],
                "corrected resampled t (Nadeau-Bengio)": [],
                VERDICT: [], "patients + seeds t, per-visit noise taken out of the seeds' part": []}
        widths = {k: [] for k in hits}
        estimates, shares = [], []
        done = 0
        while done < args.cohorts:
            groups, y, latent = draw_cohort(rng, args.patients)
            branches = Branches(rng, latent)
            seeds = [one_seed(rng, groups, y, branches, args.folds) for _ in range(args.seeds)]
            if any(s is None for s in seeds):
                continue                # a training fold without every phase: draw again
            state = int(rng.integers(2 ** 31))
            first = seeds[0]
            single = paired_bootstrap_qwk(first["y"], first["pred_a"], first["pred_b"],
                                          first["groups"], n_boot=args.n_boot, random_state=state)
            averaged = seed_averaged_bootstrap(seeds, n_boot=args.n_boot, random_state=state)
            t_low, t_high = corrected_t([d for s in seeds for d in s["fold_deltas"]], args.folds)
            combined = averaged["qwk"]["combined"]
            # The verdict's: fusionlib.report.verdict.compare_over_seeds computes it so.
            verdict_ci = patients_and_seeds_interval(averaged["qwk"]["delta"],
                                                     combined["se_patients"],
                                                     [p["qwk"] for p in averaged["per_seed"]],
                                                     averaged["n_patients"])
            share = seed_share(verdict_ci)
            for name, (low, high) in zip(hits, ((single["ci_low"], single["ci_high"]),
                                                (averaged["qwk"]["ci_low"], averaged["qwk"]["ci_high"]),
                                                (t_low, t_high),
                                                (verdict_ci["ci_low"], verdict_ci["ci_high"]),
                                                (combined["ci_low"], combined["ci_high"]))):
                hits[name].append(low <= true_delta <= high)
                widths[name].append(high - low)
            estimates.append(averaged["qwk"]["delta"])
            shares.append(share)
            done += 1
            if done % 50 == 0:
                print(f"  {done} cohorts, {time.time() - started:.0f} s", flush=True)
    print(f"\n{args.cohorts} cohorts of {args.patients} patients, {args.seeds} seeds x "
          f"{args.folds} folds, seed noise SD {args.seed_noise}, seed shift SD "
          f"{args.seed_shift}, {args.n_boot} resamples; "
          f"mean estimate {np.mean(estimates):+.4f}, SD over cohorts "
          f"{np.std(estimates, ddof=1):.4f}; the seeds' share of the verdict interval's variance: "
          f"median {np.median(shares):.2f}\n")
    print("| interval (nominal 95 %) | coverage | binomial SE | mean width |")
    print("| --- | --- | --- | --- |")
    for name in hits:
        share = float(np.mean(hits[name]))
        se = float(np.sqrt(share * (1 - share) / len(hits[name])))
        print(f"| {name} | {share:.3f} | {se:.3f} | {np.mean(widths[name]):.3f} |")
    verdict = np.array(hits[VERDICT])
    shares = np.array(shares)
    # Where does it miss? By the share of the seeds' spread in its variance, as measured.
    for label, mask in (("at most 0.5", shares <= 0.5), ("above 0.5", shares > 0.5)):
        if mask.any():
            print(f"verdict's interval where the measured seeds' share is {label}: "
                  f"coverage {verdict[mask].mean():.3f} over {int(mask.sum())} cohorts")
    print(f"\n{time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
