"""What an answer can conclude: the 80 %-power detectable difference, the two one-sided tests,
decision agreement and the planner's formula, each checked against a hand computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fusionlib.report.conclusions import (BETTER, EQUIVALENT, INCONCLUSIVE, WORSE,
                                          ConclusionSettings, decision_agreement,
                                          detectable_difference, equivalence_interval,
                                          four_way_verdict, power_at,
                                          verdict_words)
from fusionlib.report.planner import (VarianceComponents, plan_grid, predict, what_it_takes)

Z975, Z80, Z95 = 1.959963984540054, 0.8416212335729143, 1.6448536269514722


# --------------------------------------------------------------------------- power


def test_detectable_difference_by_hand_with_many_degrees_of_freedom():
    """(z(0.975) + z(0.80)) SE = 2.80 SE: not the interval's half-width of 1.96 SE, at which a
    true difference is found only half the time."""
    assert detectable_difference(0.02, 1e7) == pytest.approx((Z975 + Z80) * 0.02, rel=1e-4)
    assert detectable_difference(0.02, float("nan")) == pytest.approx((Z975 + Z80) * 0.02, rel=1e-6)
    assert power_at(Z975 * 0.02, 0.02, 1e7) == pytest.approx(0.5, abs=1e-3)


def test_detectable_difference_few_degrees_of_freedom_is_the_noncentral_t():
    """With 4 degrees of freedom: the noncentrality at which the noncentral t exceeds
    t(0.975, 4) with probability 0.8, larger than the normal shortcut's 2.80."""
    mdd = detectable_difference(1.0, 4)
    assert stats.nct.sf(stats.t.ppf(0.975, 4), 4, mdd) == pytest.approx(0.80, abs=1e-8)
    assert mdd > stats.t.ppf(0.975, 4) + stats.t.ppf(0.80, 4) > Z975 + Z80
    assert detectable_difference(1.0, 2) > mdd > detectable_difference(1.0, 20)


def test_power_at_by_hand():
    se = 0.01
    assert power_at(0.03, se, 1e7) == pytest.approx(stats.norm.cdf(3 - Z975), abs=1e-4)
    assert power_at(-0.03, se, 1e7) == power_at(0.03, se, 1e7)      # either side
    assert power_at(0.0, se, 1e7) == pytest.approx(0.025, abs=1e-4)
    assert np.isnan(power_at(0.03, 0.0, 5))


# --------------------------------------------------------------------------- equivalence


def test_equivalence_interval_is_the_90_percent_one():
    low, high = equivalence_interval(0.01, 0.005, 1e7)
    assert (low, high) == pytest.approx((0.01 - Z95 * 0.005, 0.01 + Z95 * 0.005), rel=1e-4)


@pytest.mark.parametrize("delta, se, expected", [
    # 95 %: [0.0052, 0.0248] excludes 0 -> a difference is found.
    (0.015, 0.005, BETTER),
    (-0.015, 0.005, WORSE),
    # 95 %: [-0.0048, 0.0148] holds 0; 90 %: [-0.0032, 0.0132] inside ±0.02 -> equivalent.
    (0.005, 0.005, EQUIVALENT),
    # 95 % holds 0; 90 %: [-0.0064, 0.0264] crosses +0.02 -> inconclusive.
    (0.010, 0.010, INCONCLUSIVE),
    # 90 % upper end 0.0100 + 1.645 x 0.0061 = 0.02003 just outside, 0.0060 just inside.
    (0.010, 0.0061, INCONCLUSIVE),
    (0.010, 0.0060, EQUIVALENT),
])
def test_four_way_verdict_by_hand(delta, se, expected):
    assert four_way_verdict(delta, se, 1e7, margin=0.02) == expected


def test_four_way_verdict_of_a_loss_reads_lower_as_better():
    assert four_way_verdict(-0.05, 0.01, 1e7, 0.02, lower_is_better=True) == BETTER
    assert four_way_verdict(0.05, 0.01, 1e7, 0.02, lower_is_better=True) == WORSE
    assert four_way_verdict(0.002, 0.004, 1e7, 0.02, lower_is_better=True) == EQUIVALENT
    assert four_way_verdict(0.0, float("nan"), 5, 0.02) == "?"


def test_verdict_words_name_the_margin_or_the_detectable_difference():
    assert verdict_words(EQUIVALENT, 0.02, 0.05) == "equivalent within ±0.02"
    assert verdict_words(INCONCLUSIVE, 0.02, 0.054) == (
        "inconclusive: this study could detect 0.054 at 80 % power, and cannot show "
        "equivalence within ±0.02")
    assert verdict_words(BETTER, 0.02, 0.05) == "better"


def test_settings_validate_margins():
    with pytest.raises(ValueError, match="qwk_margin"):
        ConclusionSettings(qwk_margin=0)
    with pytest.raises(ValueError):
        ConclusionSettings(qwk_margen=0.1)
    assert ConclusionSettings(log_loss_margin=0.05).margin("log_loss") == 0.05
    with pytest.raises(ValueError, match="metric must be one of"):
        ConclusionSettings().margin("f1")


# --------------------------------------------------------------------------- decision agreement


def test_decision_agreement_by_hand():
    """Seed 0: they differ on 1 case of 4, where the variant is right. Seed 1: they differ on 2
    of 4: fixed right on one, neither on the other."""
    joined = pd.DataFrame({"seed": [0] * 4 + [1] * 4,
                           "label": [0, 1, 2, 2, 0, 1, 2, 2],
                           "pred": [0, 1, 2, 2, 0, 1, 0, 0],
                           "pred_b": [0, 1, 2, 1, 0, 1, 2, 1]})
    out = decision_agreement(joined)
    assert out["agreement"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert out["agreement_range"] == (0.5, 0.75)
    assert out["disagree"] == pytest.approx(1.5)
    assert out["variant_right"] == pytest.approx((1 + 0) / 2)
    assert out["fixed_right"] == pytest.approx((0 + 1 / 2) / 2)


# --------------------------------------------------------------------------- the planner


def test_components_by_hand_and_back():
    """Built from known parts, measured, and the measured design predicted back exactly."""
    pat, visit, shift, s0 = 4e-4, 6e-4, 1e-4, 3
    se_avg = np.sqrt(pat + visit / s0)                 # the seed-averaged patient bootstrap
    se_single = np.sqrt(pat + visit)                   # each seed's own
    per_seed = np.array([-1.0, 0.0, 1.0]) * np.sqrt(shift + visit)   # sample variance shift+visit
    comp = VarianceComponents.measure(0.01, se_avg, [se_single] * 3, per_seed, 120)
    assert (comp.patients, comp.visit, comp.shift) == pytest.approx((pat, visit, shift))
    se, df = comp.interval(120, 3)
    # The verdict's own interval: SE_p^2 + s^2 / S.
    assert se ** 2 == pytest.approx(se_avg ** 2 + per_seed.var(ddof=1) / 3)
    # Welch-Satterthwaite by hand.
    v_p, v_s = se_avg ** 2, per_seed.var(ddof=1) / 3
    assert df == pytest.approx((v_p + v_s) ** 2 / (v_p ** 2 / 119 + v_s ** 2 / 2))


def test_components_never_negative_and_the_design_predicted_back():
    """Each seed's own bootstrap far wider than the seeds' spread allows: the raw shift is
    negative (kept as such for averaging), the parts used are not: the per-visit noise is
    lowered to the seeds' spread, the shift is 0, the measured interval is reproduced."""
    se_avg, per_seed = 0.02, np.array([0.01, 0.0, -0.01])
    raw = VarianceComponents.raw_parts(se_avg, [0.05] * 3, per_seed)
    assert raw[2] < 0 and sum(raw[1:]) == pytest.approx(per_seed.var(ddof=1))
    comp = VarianceComponents.measure(0.0, se_avg, [0.05] * 3, per_seed, 100)
    assert comp.visit == pytest.approx(per_seed.var(ddof=1)) and comp.shift == 0.0
    assert comp.patients >= 0
    assert comp.interval(100, 3)[0] ** 2 == pytest.approx(se_avg ** 2 + per_seed.var(ddof=1) / 3)
    one = VarianceComponents.measure(0.0, se_avg, [se_avg], [0.01], 100)
    assert not one.shift_measured and one.interval(100, 1)[0] == pytest.approx(se_avg)


def test_planner_scaling_by_hand():
    comp = VarianceComponents(0.0, 100, 3, patients=4e-4, visit=6e-4, shift=1e-4)
    se, _ = comp.interval(400, 8)
    r = 100 / 400
    assert se ** 2 == pytest.approx((4e-4 + 6e-4 / 8) * r + (1e-4 + 6e-4 * r) / 8)
    # Patients alone shrink the patients' and the visits' parts, never the seed shift.
    assert comp.interval(10 ** 7, 8)[0] ** 2 == pytest.approx(1e-4 / 8, rel=1e-3)
    # The same draws every time: a plan reproduces.
    assert predict(comp, 400, 8, 0.02) == predict(comp, 400, 8, 0.02)


def test_planner_power_by_hand_without_seed_randomness():
    """No seed part: every drawn study has the same SE, so the detectable difference is
    (t(0.975, n - 1) + z(0.80)) SE and the equivalence power 2 Phi(m / SE - t(0.95)) - 1 (at a
    true 0 the 90 % interval lies inside ±m when |estimate| < m - t(0.95) SE), to the Monte
    Carlo's precision (20,000 draws)."""
    comp = VarianceComponents(0.01, 400, 3, patients=4e-5, visit=0.0, shift=0.0)
    p = predict(comp, 400, 5, 0.02)
    se = np.sqrt(4e-5)
    assert p["se"] == pytest.approx(se)
    assert p["detectable"] == pytest.approx((stats.t.ppf(0.975, 399) + Z80) * se, rel=0.01)
    assert p["equivalence_power"] == pytest.approx(
        2 * stats.norm.cdf(0.02 / se - stats.t.ppf(0.95, 399)) - 1, abs=0.01)
    assert p["power_observed"] == pytest.approx(power_at(0.01, se, 399), abs=0.01)
    # A seed part adds spread to the interval: the detectable difference grows.
    shifty = VarianceComponents(0.01, 400, 3, patients=4e-5, visit=0.0, shift=2e-4)
    assert predict(shifty, 400, 5, 0.02)["detectable"] > p["detectable"]


def test_what_it_takes_is_the_cheapest_conclusive_design():
    comp = VarianceComponents(0.0, 120, 3, patients=3e-4, visit=6e-4, shift=0.0)
    need = what_it_takes(comp, 0.02, patients=(120, 500, 1000, 2000), seeds=(3, 5, 8))
    assert need["detectable"] <= 0.02
    # No cheaper design on the grid reaches it.
    for n in (120, 500, 1000, 2000):
        for s in (3, 5, 8):
            if n * s < need["patients"] * need["seeds"]:
                assert predict(comp, n, s, 0.02)["detectable"] > 0.02
    grid = plan_grid(comp, 0.02, patients=(120, 2000), seeds=(3, 8))
    assert list(grid.columns) == ["patients", "3 seeds", "8 seeds"]
    assert grid.iloc[1]["8 seeds"].endswith("*") and not grid.iloc[0]["3 seeds"].endswith("*")
    # A seed shift that dominates cannot be beaten by patients: beyond a patients-only grid.
    shifty = VarianceComponents(0.0, 120, 3, patients=1e-5, visit=0.0, shift=5e-3)
    assert what_it_takes(shifty, 0.02, patients=(1000, 4000), seeds=(3,)) is None


def test_t_quantile_matches_scipy_for_every_df():
    from fusionlib.report.planner import t_quantile

    df = np.concatenate([[0.5, 0.99, 1.0, 1.0001, 2.0, 3.7, 1e9, np.inf],
                         np.exp(np.random.default_rng(0).uniform(0, 12, 5000))])
    for q in (0.8, 0.95, 0.975):
        assert np.abs(t_quantile(q, df) - stats.t.ppf(q, df)).max() < 2e-7, q
