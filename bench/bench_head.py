"""Benchmark: fitting the fusion head vs scikit-learn's LogisticRegression, per penalty candidate.

Builds the branch outputs of the 5 outer folds of ``params/trainable_100.yaml`` (the default
synthetic cohort; branch training is slow the first time, ``--cache-dir .cache`` reuses a
cache), splits each fold's training rows as the experiment does, then for every fold and
every penalty candidate times

* the head fit as ``fit_head_with_penalty_search`` does it, for one candidate alone
  (``fit_penalty_candidates`` with the run's ``head`` settings: the objective's data prepared,
  L-BFGS from the head's seeded start to the penalised optimum, the inner-validation rows
  scored; then ``set_head_theta`` writes the weights into the Keras layer);
* ``LogisticRegression(C=inf)`` (no penalty, lbfgs, ``--tol``) on identical inputs: the
  concatenated branch probabilities of the fit rows and their labels.

Each is fitted ``--repeats`` times, the two alternately (so both meet the same load on a
shared machine), after one untimed warm-up fit; the medians are kept. BLAS runs one thread
(``--threads``) for both. The
one-off cost of the first fit in the process (imports, tracing) is printed on its own line.
At penalty 0 the head's mean log-loss on the fit rows must equal LogisticRegression's (within
1e-4): the largest gap is printed. The last line is the median ratio over folds and candidates (each candidate fitted alone: its
data preparation and write-back are counted once per candidate, more than the experiment pays
when it fits a fold's candidates together, which is printed too).

    .venv/bin/python bench/bench_head.py                        # branches cached in a temp dir
    .venv/bin/python bench/bench_head.py --cache-dir .cache     # reuse the project's cache
    .venv/bin/python bench/bench_head.py --old                  # also time `optimizer: sgd`
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _median_time(fit, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fit()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _paired_median_times(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of ``first`` and of ``second``, fitted alternately ``repeats`` times."""
    a, b = [], []
    for _ in range(repeats):
        for fit, times in ((first, a), (second, b)):
            started = time.perf_counter()
            fit()
            times.append(time.perf_counter() - started)
    return statistics.median(a), statistics.median(b)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/trainable_100.yaml")
    parser.add_argument("--cache-dir", help="cache folder with (or for) the branch outputs "
                        "(default: a temporary folder, removed after)")
    parser.add_argument("--repeats", type=int, default=7, help="timed fits per candidate")
    parser.add_argument("--tol", type=float, default=1e-6, help="LogisticRegression's tol")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (both fits)")
    parser.add_argument("--old", action="store_true",
                        help="also time the early-stopped `optimizer: sgd` fit (slow)")
    args = parser.parse_args(argv)

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from fusionlib.branches.cache import BranchCache
    from fusionlib.experiment import (branch_outputs, build_branches, load_dataset, outer_folds,
                                      subsample)
    from fusionlib.fusing import split_training_rows
    from fusionlib.head import fit_head, head_log_loss
    from fusionlib.head import fit_penalty_candidates, set_head_theta
    from fusionlib.models import build_fusion_head
    from fusionlib.params import load_params

    from threadpoolctl import threadpool_limits

    # One BLAS thread for both: on (n ~ 250, 6) arrays threads only add contention.
    threadpool_limits(args.threads)
    params = load_params(args.params)
    settings = params.head
    work = None if args.cache_dir else Path(tempfile.mkdtemp(prefix="bench_head-"))
    cache_root = Path(args.cache_dir) if args.cache_dir else work
    try:
        started = time.perf_counter()
        cohort = load_dataset(params.data)
        fingerprint = cohort.fingerprint()
        cohort = subsample(cohort, params)
        folds = outer_folds(cohort, params)
        cache = BranchCache(cache_root / "branches")
        branches = build_branches(params, cache_root)
        datas = [split_training_rows(cohort, params, fold, branch_outputs(
            branches, cohort, fold, cache, fingerprint, params)) for fold in folds]
        print(f"branch outputs of {len(folds)} folds in {time.perf_counter() - started:.1f} s "
              f"(cache hits {cache.hits}, misses {cache.misses})")
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    candidates = sorted(set(settings.penalty))
    modalities, fusion = params.data.modalities, params.fusion

    def new_head(seed):
        return build_fusion_head(modalities, fusion=fusion.variant,
                                 fusion_options=fusion.options, random_state=seed)

    def reference(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return LogisticRegression(C=np.inf, solver="lbfgs", tol=args.tol,
                                      max_iter=10000).fit(np.hstack(data.x_fit), data.y_fit)

    def fit_candidates(data, seed, strengths, head):
        # What fit_head_with_penalty_search does with optimizer lbfgs: every candidate from
        # the head's seeded start, then the chosen optimum written into the Keras layer.
        fitted = fit_penalty_candidates(head, data.x_fit, data.y_fit, data.x_val, data.y_val,
                                        settings, strengths, random_state=seed)
        set_head_theta(head, fitted[0][1])
        return fitted

    def fit_sgd(data, seed, strength):
        sgd = settings.model_copy(update={"optimizer": "sgd"})
        return fit_head(new_head(seed), data.x_fit, data.y_fit, data.x_val, data.y_val, sgd,
                        strength, random_state=seed)

    # One-off costs: the first fit in this process of each (imports, tracing), untimed below.
    seed0 = params.protocol.seed + folds[0].index
    first = new_head(seed0)
    started = time.perf_counter()
    fit_candidates(datas[0], seed0, candidates[:1], first)
    first_head = time.perf_counter() - started
    started = time.perf_counter()
    reference(datas[0])
    first_lr = time.perf_counter() - started
    print(f"one-off, first fit in the process: head ({settings.optimizer}) {first_head * 1e3:.1f} "
          f"ms, LogisticRegression {first_lr * 1e3:.1f} ms")

    print(f"\n{'fold':>4} {'penalty':>8} {'n_fit':>6} {'iters':>6} {'head ms':>8} {'LR ms':>7} "
          f"{'ratio':>6} {'head logloss':>13} {'LR logloss':>11}" + (f" {'sgd ms':>8}" if args.old else ""))
    ratios, gaps, old_ratios, together = [], [], [], []
    for fold, data in zip(folds, datas):
        seed = params.protocol.seed + fold.index
        head = new_head(seed)
        start = [np.asarray(v) for v in head.trainable_weights]
        lr = reference(data)
        lr_loss = log_loss(data.y_fit, lr.predict_proba(np.hstack(data.x_fit)), labels=[0, 1, 2])
        for strength in candidates:
            # One candidate alone (its data preparation and write-back included), interleaved
            # with LogisticRegression so both meet the same load on a shared machine.
            head_time, lr_time = _paired_median_times(
                lambda: fit_candidates(data, seed, [strength], head), lambda: reference(data),
                args.repeats)
            for v, value in zip(head.trainable_weights, start):
                v.assign(value)
            history = fit_candidates(data, seed, [strength], head)[0][2]
            loss = head_log_loss(head, data.x_fit, data.y_fit)
            if strength == 0:
                gaps.append(abs(loss - lr_loss))
            ratios.append(head_time / lr_time)
            line = (f"{fold.index + 1:>4} {strength:>8g} {len(data.y_fit):>6} "
                    f"{history['best_epoch']:>6} {head_time * 1e3:>8.2f} {lr_time * 1e3:>7.2f} "
                    f"{head_time / lr_time:>6.2f} {loss:>13.6f} {lr_loss:>11.6f}")
            if args.old:
                sgd_time = _median_time(lambda: fit_sgd(data, seed, strength), 1)
                old_ratios.append(sgd_time / lr_time)
                line += f" {sgd_time * 1e3:>8.0f}"
            print(line)
        # The fold's candidates fitted together, as the experiment does, per candidate.
        all_time, lr_time = _paired_median_times(
            lambda: fit_candidates(data, seed, candidates, head), lambda: reference(data),
            args.repeats)
        together.append(all_time / len(candidates) / lr_time)
    print(f"\nall {len(candidates)} candidates of a fold fitted together (as the experiment "
          f"does), per candidate / LogisticRegression fit: {statistics.median(together):.2f}x")
    print(f"\nlargest |head - LogisticRegression| mean log-loss at penalty 0: {max(gaps):.2e} "
          f"({'within' if max(gaps) <= 1e-4 else 'NOT within'} 1e-4)")
    if old_ratios:
        print(f"sgd (early-stopped) fit / LogisticRegression fit: {statistics.median(old_ratios):.1f}x")
    print(f"head fit / LogisticRegression fit: {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
