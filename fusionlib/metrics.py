"""Score functions: QWK (the headline, the phases are ordinal), proper scores, calibration, and the
paired bootstrap statistics behind the report's comparisons.

Which scores a run reports, and in which tables, is :data:`fusionlib.results.METRICS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .data import N_CLASSES


def qwk(y_true, y_pred) -> float:
    """Quadratic-weighted Cohen's kappa over the three ordinal phases.

    Returns 0.0 (not NaN) when either side holds a single class, so early
    stopping and summaries never see NaN. The same formula as scikit-learn's
    ``cohen_kappa_score(weights="quadratic")`` on a 3x3 confusion matrix
    (``tests/test_metrics.py`` checks them equal), computed here directly because a fold
    calls it hundreds of times (decision rules, early stopping, per-seed tables) and
    scikit-learn's input validation costs milliseconds per call.
    """
    y_true = np.asarray(y_true, dtype=int).ravel()
    y_pred = np.asarray(y_pred, dtype=int).ravel()
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels, y_pred {len(y_pred)}")
    if (len(np.unique(y_true)) < 2 and len(np.unique(y_pred)) < 2) or not len(y_true):
        return 0.0
    confusion = confusion_counts(y_true, y_pred).astype(float)
    expected = np.outer(confusion.sum(axis=1), confusion.sum(axis=0)) / confusion.sum()
    idx = np.arange(N_CLASSES)
    weights = (idx[:, None] - idx[None, :]) ** 2
    denominator = np.sum(weights * expected)
    if denominator == 0:
        return 0.0
    return float(1 - np.sum(weights * confusion) / denominator)


def confusion_counts(y_true, y_pred) -> np.ndarray:
    """3x3 counts, rows the true phase, columns the predicted one (labels outside 0-2 refused)."""
    y_true = np.asarray(y_true, dtype=int).ravel()
    y_pred = np.asarray(y_pred, dtype=int).ravel()
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0
                        or max(y_true.max(), y_pred.max()) >= N_CLASSES):
        raise ValueError(f"labels must be in 0..{N_CLASSES - 1}")
    return np.bincount(y_true * N_CLASSES + y_pred, minlength=N_CLASSES ** 2).reshape(
        N_CLASSES, N_CLASSES)


def f1_per_class(y_true, y_pred) -> np.ndarray:
    """F1 of each phase (0 where it is undefined: no true and no predicted case of it), as
    scikit-learn's ``f1_score(average=None, zero_division=0)``."""
    confusion = confusion_counts(y_true, y_pred).astype(float)
    tp = np.diag(confusion)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)      # 2 tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, 0.0)


LOG_LOSS_FLOOR = 1e-7
"""Probabilities are clipped to this floor before the log, as the fusion head's loss does."""


def case_log_loss(y_true, proba) -> np.ndarray:
    """Per-case cross-entropy ``-log p[true class]`` (clipped at :data:`LOG_LOSS_FLOOR`)."""
    proba = np.asarray(proba, dtype=float)
    picked = proba[np.arange(len(proba)), np.asarray(y_true, dtype=int)]
    return -np.log(np.clip(picked, LOG_LOSS_FLOOR, 1.0))


def case_brier(y_true, proba) -> np.ndarray:
    """Per-case multi-class Brier score: squared distance to the one-hot label."""
    proba = np.asarray(proba, dtype=float)
    onehot = np.eye(proba.shape[1])[np.asarray(y_true, dtype=int)]
    return np.sum((proba - onehot) ** 2, axis=1)


def log_loss(y_true, proba) -> float:
    """Mean cross-entropy of the true class (a proper score: lower is better)."""
    return float(np.mean(case_log_loss(y_true, proba))) if len(proba) else float("nan")


def brier_score(y_true, proba) -> float:
    """Multi-class Brier score: mean over rows of the squared distance to the one-hot label."""
    return float(np.mean(case_brier(y_true, proba)))


def expected_calibration_error(y_true, proba, n_bins: int = 10) -> float:
    """Top-label ECE with equal-width confidence bins: over the bins of
    :func:`reliability_curve`, ``|accuracy - confidence|`` weighted by the bin's share of the
    cases."""
    n_cases = len(proba)
    curve = reliability_curve(y_true, proba, n_bins=n_bins)
    ece = 0.0
    for confidence, accuracy, count in zip(curve["confidence"], curve["accuracy"], curve["count"]):
        ece += count / n_cases * abs(accuracy - confidence)
    return float(ece)


def reliability_curve(y_true, proba, n_bins: int = 10) -> dict:
    """Per-bin mean confidence, accuracy and count of the top label (for reliability diagrams)."""
    proba = np.asarray(proba, dtype=float)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == np.asarray(y_true)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    out = {"confidence": [], "accuracy": [], "count": []}
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            out["confidence"].append(float(confidence[mask].mean()))
            out["accuracy"].append(float(correct[mask].mean()))
            out["count"].append(int(mask.sum()))
    return out


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample SD and a t-based confidence interval of per-fold values."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, 0.0, mean, mean
    sd = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * sd / np.sqrt(len(values)))
    return mean, sd, mean - half, mean + half


_QUADRATIC = (np.arange(N_CLASSES)[:, None] - np.arange(N_CLASSES)[None, :]) ** 2.0


def qwk_from_confusion(conf: np.ndarray) -> np.ndarray:
    """QWK of (..., 9) flattened 3x3 confusion counts (rows: true, columns: predicted), as
    :func:`qwk` computes it (0.0 when both sides hold a single class or it is undefined)."""
    conf = conf.reshape(*conf.shape[:-1], N_CLASSES, N_CLASSES).astype(float)
    n = conf.sum(axis=(-2, -1))
    rows, cols = conf.sum(axis=-1), conf.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = rows[..., :, None] * cols[..., None, :] / n[..., None, None]
        value = 1.0 - ((_QUADRATIC * conf).sum(axis=(-2, -1))
                       / (_QUADRATIC * expected).sum(axis=(-2, -1)))
    single = ((rows > 0).sum(axis=-1) < 2) & ((cols > 0).sum(axis=-1) < 2)
    return np.where(single | ~np.isfinite(value), 0.0, value)


@dataclass(frozen=True)
class Paired:
    """One metric of a paired comparison (variant a minus baseline b), as the bootstraps
    resample it: a metric of the decided classes gives ``score(y_true, pred)`` and
    ``of_confusion``, the same score of flattened 3x3 confusion counts vectorised
    ``(..., 9) -> (...)``; any other is the mean of per-case values the caller passes.
    :attr:`fusionlib.results.Metric.paired` builds one from a registered metric."""

    name: str
    label: str
    higher_is_better: bool = True
    score: Callable | None = None
    of_confusion: Callable | None = None

    @property
    def decided(self) -> bool:
        return self.of_confusion is not None


QWK = Paired("qwk", "QWK", True, qwk, qwk_from_confusion)
LOG_LOSS = Paired("log_loss", "log-loss", False)
DEFAULT_PAIRED = (QWK, LOG_LOSS)
"""QWK and log-loss: what the paired statistics compare when not told otherwise."""


def interval_verdict(low: float, high: float, lower_is_better: bool = False) -> str:
    """"better" / "worse" / "no detectable difference" from a 95 % interval of variant − baseline
    ("?" when the interval is not finite). ``lower_is_better`` for losses."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "?"
    if lower_is_better:
        low, high = -high, -low
    return "better" if low > 0 else "worse" if high < 0 else "no detectable difference"


def patient_draws(n_patients: int, n_boot: int, random_state: int = 0) -> np.ndarray:
    """(n_boot, n_patients) counts: how often each patient is drawn in each bootstrap resample.

    Resample ``b`` draws ``rng.integers(0, n_patients, n_patients)`` with
    ``rng = default_rng(random_state)``; every paired bootstrap here uses these draws.
    """
    rng = np.random.default_rng(random_state)
    draws = np.empty((n_boot, n_patients))
    for b in range(n_boot):
        draws[b] = np.bincount(rng.integers(0, n_patients, n_patients), minlength=n_patients)
    return draws


def paired_bootstrap_qwk(y_true, pred_a, pred_b, groups, n_boot: int = 2000,
                         random_state: int = 0, level: float = 0.95, metric: Paired = QWK) -> dict:
    """QWK(a) - QWK(b) on the same cases, with a bootstrap CI that resamples patients.

    Patients (not rows) are drawn with replacement, keeping every visit of a drawn
    patient, because visits of one patient are not independent.  Resample ``b`` draws
    ``rng.integers(0, n_patients, n_patients)`` with ``rng = default_rng(random_state)``.
    Each resample's QWKs come from the per-patient confusion counts weighted by how often
    each patient was drawn, so thousands of resamples take milliseconds. ``metric``: another
    score of the decided classes (:class:`Paired` with ``of_confusion``) in QWK's place.
    """
    y_true = np.asarray(y_true, dtype=int)
    pred_a = np.asarray(pred_a, dtype=int)
    pred_b = np.asarray(pred_b, dtype=int)
    patients, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_pat = len(patients)
    conf_a = np.zeros((n_pat, N_CLASSES * N_CLASSES))
    conf_b = np.zeros((n_pat, N_CLASSES * N_CLASSES))
    np.add.at(conf_a, (inverse, y_true * N_CLASSES + pred_a), 1)
    np.add.at(conf_b, (inverse, y_true * N_CLASSES + pred_b), 1)
    draws = patient_draws(n_pat, n_boot, random_state)
    deltas = metric.of_confusion(draws @ conf_a) - metric.of_confusion(draws @ conf_b)
    alpha = (1 - level) / 2
    return {
        "delta": metric.score(y_true, pred_a) - metric.score(y_true, pred_b),
        "ci_low": float(np.quantile(deltas, alpha)),
        "ci_high": float(np.quantile(deltas, 1 - alpha)),
        # Not a p-value: the share of bootstrap resamples in which a is not better than b.
        "share_not_better": float(np.mean(deltas <= 0 if metric.higher_is_better
                                          else deltas >= 0)),
        "n_boot": int(n_boot),
        "n_patients": int(n_pat),
    }


def paired_bootstrap_loss(loss_a, loss_b, groups, n_boot: int = 2000, random_state: int = 0,
                          level: float = 0.95, higher_is_better: bool = False) -> dict:
    """Mean per-case loss of a minus that of b (e.g. log-loss, Brier), with a patient bootstrap CI.

    The same resampling as :func:`paired_bootstrap_qwk` (patients drawn with replacement, same
    ``random_state`` -> same draws), so QWK and proper-score intervals of one comparison
    come from the same resamples. Negative = a has the lower (better) loss. Any other mean of
    per-case values likewise (``higher_is_better`` for a score, where "not better" is ≤ 0).
    """
    diff = np.asarray(loss_a, dtype=float) - np.asarray(loss_b, dtype=float)
    patients, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_pat = len(patients)
    sums = np.bincount(inverse, weights=diff, minlength=n_pat)
    counts = np.bincount(inverse, minlength=n_pat).astype(float)
    draws = patient_draws(n_pat, n_boot, random_state)
    deltas = (draws @ sums) / (draws @ counts)
    alpha = (1 - level) / 2
    return {"delta": float(diff.mean()), "ci_low": float(np.quantile(deltas, alpha)),
            "ci_high": float(np.quantile(deltas, 1 - alpha)),
            "share_not_better": float(np.mean(deltas <= 0 if higher_is_better else deltas >= 0)),
            "n_boot": int(n_boot),
            "n_patients": int(n_pat)}


def seed_averaged_bootstrap(seeds: list[dict], n_boot: int = 2000, random_state: int = 0,
                            level: float = 0.95, metrics: Sequence[Paired] = DEFAULT_PAIRED) -> dict:
    """Variant minus baseline, averaged over seeds, with a bootstrap over patients.

    Each element of ``seeds`` is one seed's paired test predictions of the same cases:
    ``{"y", "pred_a", "pred_b", "groups"}`` and, for every metric of ``metrics`` that is a
    mean of per-case values, ``cases[name] = (values_a, values_b)`` (``loss_a`` and ``loss_b``
    stand for ``cases["log_loss"]``). A resample draws patients with replacement from the
    union of all seeds' patients (a patient absent from a seed, e.g. at 50 % of the data,
    contributes nothing there) and recomputes every seed's difference of each metric on it
    (a decided metric from the resampled confusion counts, a per-case one as the mean
    difference); the statistic is the mean over seeds. The interval so covers the sampling
    of patients and, through the average, the seeds' own spread around it; seed-to-seed
    variation enters as measured, not modelled (docs/protocol.md).
    """
    patients = np.unique(np.concatenate([np.asarray(s["groups"]) for s in seeds]))
    index = {p: i for i, p in enumerate(patients)}
    draws = patient_draws(len(patients), n_boot, random_state)
    deltas = {m.name: [] for m in metrics}
    per_seed = []
    for s in seeds:
        y = np.asarray(s["y"], dtype=int)
        rows = np.array([index[g] for g in np.asarray(s["groups"])])
        counts = np.bincount(rows, minlength=len(patients)).astype(float)
        # A resample that drew none of this seed's patients says nothing about it: NaN, not 0.
        empty = (draws @ counts) == 0
        seed = {}
        for m in metrics:
            if m.decided:
                conf_a = np.zeros((len(patients), N_CLASSES * N_CLASSES))
                conf_b = np.zeros((len(patients), N_CLASSES * N_CLASSES))
                np.add.at(conf_a, (rows, y * N_CLASSES + np.asarray(s["pred_a"], dtype=int)), 1)
                np.add.at(conf_b, (rows, y * N_CLASSES + np.asarray(s["pred_b"], dtype=int)), 1)
                deltas[m.name].append(np.where(empty, np.nan, m.of_confusion(draws @ conf_a)
                                               - m.of_confusion(draws @ conf_b)))
                seed[m.name] = m.score(y, s["pred_a"]) - m.score(y, s["pred_b"])
                continue
            a, b = _case_values(s, m.name)
            diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
            sums = np.bincount(rows, weights=diff, minlength=len(patients))
            with np.errstate(invalid="ignore", divide="ignore"):
                deltas[m.name].append((draws @ sums) / (draws @ counts))
            seed[m.name] = float(diff.mean())
        per_seed.append(seed)
    alpha = (1 - level) / 2
    out = {"per_seed": per_seed, "n_boot": int(n_boot), "n_patients": int(len(patients)),
           "n_seeds": len(seeds)}
    for name, resampled in deltas.items():
        mean = np.nanmean(np.stack(resampled), axis=0)
        delta = float(np.mean([p[name] for p in per_seed]))
        out[name] = {"delta": delta,
                     "ci_low": float(np.nanquantile(mean, alpha)),
                     "ci_high": float(np.nanquantile(mean, 1 - alpha)),
                     "combined": patients_and_seeds_interval(
                         delta, float(np.nanstd(mean, ddof=1)), [p[name] for p in per_seed],
                         len(patients), level,
                         se_patients_per_seed=[float(np.nanstd(d, ddof=1)) for d in resampled])}
    return out


def _case_values(seed: dict, name: str) -> tuple:
    """A seed's per-case values of metric ``name`` for a and b (log-loss also as ``loss_*``)."""
    cases = seed.get("cases") or {}
    if name in cases:
        return cases[name]
    if name == "log_loss" and "loss_a" in seed:
        return seed["loss_a"], seed["loss_b"]
    raise ValueError(f"no per-case values of {name!r} for this seed; expected cases[{name!r}] "
                     f"= (values_a, values_b)")


def patients_and_seeds_interval(delta: float, se_patients: float, per_seed, n_patients: int,
                                level: float = 0.95, se_patients_per_seed=None) -> dict:
    """A t interval for a seed-averaged difference whose variance has two measured parts.

    * ``se_patients``: the standard error from resampling patients with the trained models
      held fixed (the SD of :func:`seed_averaged_bootstrap`'s resampled means over seeds);
    * the seeds' spread ``s²/S`` of the ``per_seed`` differences: what retraining changes,
      including a shift of a seed's models for every patient, which no patient resample sees.

    Training noise that differs from visit to visit is in both parts. ``se_patients_per_seed``
    (each seed's own patient-bootstrap SE) measures it: one seed's SE² exceeds the averaged
    one's by ``(1 - 1/S)`` times that noise's share, which is then taken out of ``s²`` (never
    below 0). Without it the interval errs wide. The t quantile takes Welch-Satterthwaite
    degrees of freedom (``S - 1`` for the seed part, ``n_patients - 1`` for the patient part),
    so a large seed spread over 3 seeds widens the interval a lot (t(2) = 4.30). With one seed
    it is the patient part alone. Coverage on simulated cohorts: bench/bench_coverage.py.
    """
    from scipy import stats

    per_seed = np.asarray(per_seed, dtype=float)
    n_seeds = len(per_seed)
    v_patients = float(se_patients) ** 2
    v_seeds = float(per_seed.var(ddof=1)) / n_seeds if n_seeds > 1 else 0.0
    if se_patients_per_seed is not None and n_seeds > 1:
        v_visit = max(0.0, float(np.mean(np.square(se_patients_per_seed))) - v_patients)
        v_seeds = max(0.0, v_seeds - v_visit / (n_seeds - 1))
    var = v_patients + v_seeds
    if not np.isfinite(var):
        return {"ci_low": float("nan"), "ci_high": float("nan"), "se": float("nan"),
                "se_patients": float(se_patients), "se_seeds": float("nan"), "df": float("nan")}
    parts = v_patients ** 2 / max(n_patients - 1, 1)
    parts += v_seeds ** 2 / (n_seeds - 1) if n_seeds > 1 else 0.0
    df = var ** 2 / parts if parts > 0 else float(max(n_patients - 1, 1))
    half = float(stats.t.ppf(0.5 + level / 2, df) * np.sqrt(var))
    return {"ci_low": delta - half, "ci_high": delta + half, "se": float(np.sqrt(var)),
            "se_patients": float(se_patients), "se_seeds": float(np.sqrt(v_seeds)),
            "df": float(df)}


def corrected_resampled_t(deltas, test_train_ratio: float, level: float = 0.95) -> dict:
    """Mean of per-split differences with the corrected resampled t interval.

    ``deltas`` are variant − baseline on each of J train/test splits of the same data (every
    fold of every seed); they overlap in their training data, so their plain variance
    understates the uncertainty. Nadeau and Bengio (2003) inflate it:
    ``mean ± t(J-1) * sqrt((1/J + n_test/n_train) * s²)``, with ``test_train_ratio``
    n_test/n_train (1/(K-1) for K-fold). Seed-to-seed training variation is inside the
    per-split differences, so the interval covers it as well as patient sampling (under the
    approximation's assumptions).
    """
    from scipy import stats

    deltas = np.asarray(deltas, dtype=float)
    deltas = deltas[np.isfinite(deltas)]
    if len(deltas) < 2:
        raise ValueError(f"need at least 2 finite per-split differences, got {len(deltas)}")
    if not test_train_ratio > 0:
        raise ValueError(f"test_train_ratio must be > 0, got {test_train_ratio}")
    mean, var = float(deltas.mean()), float(deltas.var(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(deltas) - 1)
                 * np.sqrt((1 / len(deltas) + test_train_ratio) * var))
    return {"delta": mean, "ci_low": mean - half, "ci_high": mean + half, "n_splits": len(deltas)}


# --------------------------------------------------------------------------- paired comparisons


def verdict_text(qwk_low, qwk_high, loss_low, loss_high) -> str:
    """One phrase that reads both the QWK and the log-loss interval of variant − baseline."""
    return verdicts_text([(QWK, qwk_low, qwk_high), (LOG_LOSS, loss_low, loss_high)])


def verdicts_text(intervals) -> str:
    """One phrase reading each ``(Paired metric, low, high)`` interval of variant − baseline,
    its direction honoured: ``"QWK: better; log-loss: no detectable difference"``."""
    return "; ".join(f"{m.label}: {interval_verdict(low, high, not m.higher_is_better)}"
                     for m, low, high in intervals)


def fold_qwk_diffs(y_true, pred_a, pred_b, strata, score: Callable = qwk) -> list[float]:
    """QWK(a) - QWK(b) (or another ``score(y_true, pred)``) within each stratum (e.g. each
    (repeat, fold) row of ``strata``), in sorted stratum order."""
    y_true, pred_a, pred_b = np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)
    keys, inverse = np.unique(np.asarray(strata).reshape(len(y_true), -1), axis=0,
                              return_inverse=True)
    inverse = np.ravel(inverse)
    return [score(y_true[inverse == k], pred_a[inverse == k]) - score(y_true[inverse == k], pred_b[inverse == k])
            for k in range(len(keys))]


def paired_comparison(y_true, pred_a, pred_b, loss_a, loss_b, groups, strata,
                      n_boot: int = 2000, random_state: int = 0,
                      metrics: Sequence[Paired] = DEFAULT_PAIRED, cases: dict | None = None) -> dict:
    """Variant a against baseline b on the same cases, for each of ``metrics`` (the first one
    leads): its difference with the patient bootstrap interval (a decided metric as
    :func:`paired_bootstrap_qwk`, a per-case one as :func:`paired_bootstrap_loss`, both with
    the same draws) under ``by_metric[name]``, the verdict reading every interval, and the
    first metric's value of each side and its difference within each stratum (fold).
    Per-case values come from ``cases[name] = (a, b)``; ``loss_a``/``loss_b`` are log-loss's.
    The first two metrics' results also stay under ``"qwk"`` and ``"loss"`` when they are
    QWK and log-loss."""
    cases = {"log_loss": (loss_a, loss_b), **(cases or {})}
    by_metric = {}
    for m in metrics:
        if m.decided:
            by_metric[m.name] = paired_bootstrap_qwk(y_true, pred_a, pred_b, groups,
                                                     n_boot=n_boot, random_state=random_state,
                                                     metric=m)
        else:
            a, b = cases[m.name]
            by_metric[m.name] = paired_bootstrap_loss(a, b, groups, n_boot=n_boot,
                                                      random_state=random_state,
                                                      higher_is_better=m.higher_is_better)
    lead = metrics[0]
    if lead.decided:
        value_a, value_b = lead.score(y_true, pred_a), lead.score(y_true, pred_b)
        diffs = fold_qwk_diffs(y_true, pred_a, pred_b, strata, lead.score)
    else:       # a per-case lead metric: its mean on each side and per stratum
        a, b = (np.asarray(v, dtype=float) for v in cases[lead.name])
        value_a, value_b = float(a.mean()), float(b.mean())
        keys, inverse = np.unique(np.asarray(strata).reshape(len(a), -1), axis=0,
                                  return_inverse=True)
        inverse = np.ravel(inverse)
        diffs = [float((a - b)[inverse == k].mean()) for k in range(len(keys))]
    better = (lambda d: d > 0) if lead.higher_is_better else (lambda d: d < 0)
    out = {"a": value_a, "b": value_b, "by_metric": by_metric,
           "verdict": verdicts_text([(m, by_metric[m.name]["ci_low"], by_metric[m.name]["ci_high"])
                                     for m in metrics]),
           "fold_diffs": [float(d) for d in diffs],
           "mean_fold_diff": float(np.mean(diffs)) if diffs else np.nan,
           "folds_better": f"{sum(better(d) for d in diffs)}/{len(diffs)}"}
    if "qwk" in by_metric:
        out.update(qwk_a=value_a if lead.name == "qwk" else qwk(y_true, pred_a),
                   qwk_b=value_b if lead.name == "qwk" else qwk(y_true, pred_b),
                   qwk=by_metric["qwk"])
    if "log_loss" in by_metric:
        out["loss"] = by_metric["log_loss"]
    return out
