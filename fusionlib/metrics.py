"""Scores: QWK (the headline, the phases are ordinal), accuracy, F1, calibration, paired CIs."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

from .data import LABELS

N_CLASSES = len(LABELS)


def qwk(y_true, y_pred) -> float:
    """Quadratic-weighted Cohen's kappa over the three ordinal phases.

    Returns 0.0 (not NaN) when either side holds a single class, so early
    stopping and summaries never see NaN.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if len(np.unique(y_true)) < 2 and len(np.unique(y_pred)) < 2:
        return 0.0
    value = cohen_kappa_score(y_true, y_pred, weights="quadratic", labels=list(range(N_CLASSES)))
    return 0.0 if np.isnan(value) else float(value)


def classification_scores(y_true, proba) -> dict:
    """QWK, accuracy, macro-F1, per-class F1, Brier score and ECE from class probabilities."""
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    y_pred = proba.argmax(axis=1)
    per_class = f1_score(y_true, y_pred, labels=list(range(N_CLASSES)), average=None, zero_division=0)
    scores = {
        "qwk": qwk(y_true, y_pred),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(per_class)),
        **{f"f1_{label}": float(v) for label, v in zip(LABELS, per_class)},
        "brier": brier_score(y_true, proba),
        "ece": expected_calibration_error(y_true, proba),
        "n": int(len(y_true)),
    }
    return scores


def brier_score(y_true, proba) -> float:
    """Multi-class Brier score: mean over rows of the squared distance to the one-hot label."""
    proba = np.asarray(proba, dtype=float)
    onehot = np.eye(proba.shape[1])[np.asarray(y_true, dtype=int)]
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def expected_calibration_error(y_true, proba, n_bins: int = 10) -> float:
    """Top-label ECE with equal-width confidence bins."""
    proba = np.asarray(proba, dtype=float)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == np.asarray(y_true)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
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


def paired_bootstrap_qwk(y_true, pred_a, pred_b, groups, n_boot: int = 2000,
                         random_state: int = 0, level: float = 0.95) -> dict:
    """QWK(a) - QWK(b) on the same cases, with a bootstrap CI that resamples patients.

    Patients (not rows) are drawn with replacement, keeping every visit of a drawn
    patient, because visits of one patient are not independent.
    """
    y_true = np.asarray(y_true)
    pred_a = np.asarray(pred_a)
    pred_b = np.asarray(pred_b)
    groups = np.asarray(groups)
    patients, inverse = np.unique(groups, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == i) for i in range(len(patients))]
    rng = np.random.default_rng(random_state)
    deltas = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, len(patients), len(patients))
        rows = np.concatenate([rows_of[i] for i in pick])
        deltas[b] = qwk(y_true[rows], pred_a[rows]) - qwk(y_true[rows], pred_b[rows])
    alpha = (1 - level) / 2
    return {
        "delta": qwk(y_true, pred_a) - qwk(y_true, pred_b),
        "ci_low": float(np.quantile(deltas, alpha)),
        "ci_high": float(np.quantile(deltas, 1 - alpha)),
        "p_a_not_better": float(np.mean(deltas <= 0)),
        "n_boot": int(n_boot),
        "n_patients": int(len(patients)),
    }
