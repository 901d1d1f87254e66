"""Scores: QWK, Brier score, ECE, t-based CIs and the patient-level paired bootstrap."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest
from scipy import stats
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score

from fusionlib import metrics


def _sklearn_qwk(y, pred) -> float:
    """scikit-learn's QWK; NaN where it is undefined (one label in common), which our metric
    defines as 0.0 on purpose, so sklearn's warning about it is expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`y1`, `y2` and `labels` have only one label "
                                r"in common\. `cohen_kappa_score` is undefined",
                                category=UndefinedMetricWarning)
        with np.errstate(invalid="ignore", divide="ignore"):
            return cohen_kappa_score(y, pred, weights="quadratic", labels=[0, 1, 2])


def _kappa(y, pred) -> float:
    """Reference QWK: sklearn's, 0.0 when both sides hold one class or it is undefined."""
    if len(np.unique(y)) < 2 and len(np.unique(pred)) < 2:
        return 0.0
    value = _sklearn_qwk(y, pred)
    return 0.0 if np.isnan(value) else float(value)


def _slow_paired_bootstrap(y, a, b, groups, n_boot, seed, level=0.95) -> dict:
    """Straightforward reference: resample patients, recompute both kappas on the rows."""
    patients, inverse = np.unique(groups, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == i) for i in range(len(patients))]
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(patients), len(patients))
        rows = np.concatenate([rows_of[i] for i in pick])
        deltas.append(_kappa(y[rows], a[rows]) - _kappa(y[rows], b[rows]))
    alpha = (1 - level) / 2
    return {"delta": _kappa(y, a) - _kappa(y, b),
            "ci_low": float(np.quantile(deltas, alpha)),
            "ci_high": float(np.quantile(deltas, 1 - alpha)),
            "share_not_better": float(np.mean(np.asarray(deltas) <= 0)),
            "n_boot": n_boot, "n_patients": len(patients)}


def _case(rng, n, n_patients):
    y = rng.integers(0, 3, n)
    a = np.where(rng.random(n) < 0.6, y, rng.integers(0, 3, n))
    b = np.where(rng.random(n) < 0.4, y, rng.integers(0, 3, n))
    groups = rng.integers(0, n_patients, n)
    return y, a, b, groups


# --------------------------------------------------------------------------- QWK, Brier, ECE


def test_qwk_single_class_is_zero_not_nan():
    assert metrics.qwk([1, 1, 1], [1, 1, 1]) == 0.0
    assert metrics.qwk([0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)


def test_brier_score_by_hand():
    y = [0, 2, 2]
    proba = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]
    # squared distances to the one-hot labels: 0.14, 1.46, 0.54
    assert metrics.brier_score(y, proba) == pytest.approx((0.14 + 1.46 + 0.54) / 3)


def test_expected_calibration_error_by_hand():
    y = [0, 2, 2]
    proba = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]
    # one row per bin: confidences 0.7 (right), 0.8 (wrong), 0.4 (right)
    expected = (abs(1 - 0.7) + abs(0 - 0.8) + abs(1 - 0.4)) / 3
    assert metrics.expected_calibration_error(y, proba) == pytest.approx(expected)


def _ece_with_its_own_binning(y_true, proba, n_bins=10):
    """The ECE as written before it read reliability_curve's bins (its own copy of them)."""
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


@pytest.mark.parametrize("n_bins", [1, 5, 10, 15])
def test_ece_reads_the_reliability_bins_and_keeps_its_value(n_bins):
    """One binning for the ECE and the reliability diagram: the ECE is the bins' weighted gap,
    bit for bit the value of the former separate computation (metrics.json keeps its bytes)."""
    rng = np.random.default_rng(3)
    proba = rng.dirichlet([0.7, 1.0, 1.5], size=157)
    proba[:6] = [[1, 0, 0], [0.5, 0.5, 0], [0.4, 0.3, 0.3], [0.2, 0.2, 0.6], [0.7, 0.3, 0],
                 [0.1, 0.9, 0]]                          # bin edges and a confidence of 1
    y = rng.integers(0, 3, size=len(proba))
    ece = metrics.expected_calibration_error(y, proba, n_bins=n_bins)
    assert ece == _ece_with_its_own_binning(y, proba, n_bins)
    curve = metrics.reliability_curve(y, proba, n_bins=n_bins)
    assert sum(curve["count"]) == len(proba)
    assert ece == pytest.approx(sum(c / len(proba) * abs(a - f) for f, a, c in
                                    zip(curve["confidence"], curve["accuracy"], curve["count"])))
    assert metrics.expected_calibration_error([], np.empty((0, 3)), n_bins=n_bins) == 0.0


def test_mean_ci_matches_scipy():
    values = np.array([0.52, 0.61, 0.55, 0.70, 0.48])
    mean, sd, low, high = metrics.mean_ci(values)
    ref_low, ref_high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(),
                                         scale=stats.sem(values))
    assert mean == pytest.approx(values.mean())
    assert sd == pytest.approx(values.std(ddof=1))
    assert (low, high) == pytest.approx((ref_low, ref_high), abs=1e-12)
    assert metrics.mean_ci([0.4]) == (0.4, 0.0, 0.4, 0.4)


# --------------------------------------------------------------------------- paired bootstrap


def test_bootstrap_delta_is_the_qwk_difference():
    y, a, b, groups = _case(np.random.default_rng(0), 120, 30)
    boot = metrics.paired_bootstrap_qwk(y, a, b, groups, n_boot=500, random_state=1)
    assert boot["delta"] == metrics.qwk(y, a) - metrics.qwk(y, b)
    assert boot["ci_low"] <= boot["delta"] <= boot["ci_high"]
    assert boot["n_boot"] == 500 and boot["n_patients"] == len(np.unique(groups))


def test_bootstrap_identical_predictions_give_a_zero_width_ci():
    y, a, _, groups = _case(np.random.default_rng(1), 80, 20)
    boot = metrics.paired_bootstrap_qwk(y, a, a.copy(), groups, n_boot=200)
    assert boot["delta"] == 0.0 and boot["ci_low"] == 0.0 and boot["ci_high"] == 0.0
    assert boot["share_not_better"] == 1.0


def test_bootstrap_matches_a_slow_reference():
    rng = np.random.default_rng(3)
    for n, n_patients in ((60, 17), (150, 40), (12, 3)):
        y, a, b, groups = _case(rng, n, n_patients)
        fast = metrics.paired_bootstrap_qwk(y, a, b, groups, n_boot=150, random_state=5)
        slow = _slow_paired_bootstrap(y, a, b, groups, n_boot=150, seed=5)
        assert set(fast) == set(slow)
        for key in slow:
            assert fast[key] == pytest.approx(slow[key], abs=1e-9), key
    # degenerate: one class everywhere
    same = np.zeros(10, int)
    boot = metrics.paired_bootstrap_qwk(same, same, same, np.arange(10), n_boot=20)
    assert boot == pytest.approx(_slow_paired_bootstrap(same, same, same, np.arange(10), 20, 0))
    assert boot["delta"] == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=60))
def test_qwk_and_f1_equal_scikit_learn(pairs):
    """The direct formulas give scikit-learn's values (the 0.0-instead-of-NaN rule aside)."""
    from sklearn.metrics import f1_score

    from fusionlib.metrics import f1_per_class

    y, p = (np.array(v) for v in zip(*pairs))
    reference = _sklearn_qwk(y, p)
    single = len(set(y)) < 2 and len(set(p)) < 2
    expected = 0.0 if single or np.isnan(reference) else reference
    assert metrics.qwk(y, p) == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(f1_per_class(y, p), f1_score(y, p, labels=[0, 1, 2], average=None,
                                                            zero_division=0), atol=1e-12)


def test_corrected_resampled_t_by_hand():
    """Nadeau-Bengio: mean ± t(J-1) sqrt((1/J + n_test/n_train) s²), here J = 4, ratio 1/4."""
    out = metrics.corrected_resampled_t([0.1, 0.2, 0.3, 0.0], test_train_ratio=0.25)
    half = stats.t.ppf(0.975, 3) * np.sqrt((1 / 4 + 0.25) * np.var([0.1, 0.2, 0.3, 0.0], ddof=1))
    assert out["delta"] == pytest.approx(0.15)
    assert out["ci_low"] == pytest.approx(0.15 - half) and out["ci_high"] == pytest.approx(0.15 + half)
    assert half == pytest.approx(0.29052, abs=1e-4)
    # Wider than the uncorrected t-interval, which treats overlapping splits as independent.
    plain = stats.t.ppf(0.975, 3) * np.std([0.1, 0.2, 0.3, 0.0], ddof=1) / 2
    assert half > plain
    with pytest.raises(ValueError, match="at least 2"):
        metrics.corrected_resampled_t([0.1, float("nan")], 0.25)
    with pytest.raises(ValueError, match="test_train_ratio"):
        metrics.corrected_resampled_t([0.1, 0.2], 0)


def test_patients_and_seeds_interval_by_hand():
    """SE² = SE²(patients) + s²/S with Welch-Satterthwaite degrees of freedom; the per-visit
    training noise measured by the per-seed SEs is taken out of s² once; one seed: patients
    alone."""
    per_seed = [0.02, 0.08, 0.05]
    v_p, v_s = 0.03 ** 2, np.var(per_seed, ddof=1) / 3
    df = (v_p + v_s) ** 2 / (v_p ** 2 / 99 + v_s ** 2 / 2)
    out = metrics.patients_and_seeds_interval(0.05, 0.03, per_seed, n_patients=100)
    half = stats.t.ppf(0.975, df) * np.sqrt(v_p + v_s)
    assert out["df"] == pytest.approx(df)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((0.05 - half, 0.05 + half))
    # Each seed's own patient SE (0.035) above the averaged one (0.03): per-visit noise of
    # (0.035² - 0.03²) in SE² terms, removed from the seed part once: v_s - that / (S - 1).
    corrected = metrics.patients_and_seeds_interval(0.05, 0.03, per_seed, 100,
                                                    se_patients_per_seed=[0.035] * 3)
    v_s2 = v_s - (0.035 ** 2 - 0.03 ** 2) / 2
    assert corrected["se"] == pytest.approx(np.sqrt(v_p + v_s2))
    assert corrected["ci_high"] - corrected["ci_low"] < out["ci_high"] - out["ci_low"]
    # Never below the patient part: a large correction floors the seed part at 0.
    floor = metrics.patients_and_seeds_interval(0.05, 0.03, per_seed, 100,
                                                se_patients_per_seed=[0.2] * 3)
    assert floor["se"] == pytest.approx(0.03) and floor["se_seeds"] == 0
    one = metrics.patients_and_seeds_interval(0.05, 0.03, [0.05], n_patients=100)
    assert one["se"] == pytest.approx(0.03) and one["df"] == pytest.approx(99)


def test_seed_averaged_bootstrap_carries_the_patients_and_seeds_interval():
    """The verdict's interval is centred on the seed-averaged difference and is wider than the
    patient bootstrap's when the seeds disagree."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    groups = np.repeat(np.arange(100), 2)
    seeds = []
    for shift in (0.0, 0.2, 0.4):      # each seed's variant right on a different share of cases
        right = rng.random(200) < 0.6 + shift
        pred_a = np.where(right, y, (y + 1) % 3)
        seeds.append({"y": y, "pred_a": pred_a, "pred_b": np.where(rng.random(200) < 0.7, y, 0),
                      "loss_a": rng.random(200), "loss_b": rng.random(200), "groups": groups})
    out = metrics.seed_averaged_bootstrap(seeds, n_boot=300)
    c = out["qwk"]["combined"]
    assert (c["ci_low"] + c["ci_high"]) / 2 == pytest.approx(out["qwk"]["delta"])
    assert c["se_seeds"] > 0
    assert c["ci_high"] - c["ci_low"] > out["qwk"]["ci_high"] - out["qwk"]["ci_low"]
