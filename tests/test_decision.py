"""The fair verdict's pieces: one decision rule for every source, the ordinal rule, ``tuned``
without test labels, the paired one-SE penalty rule, the influence share."""

from types import SimpleNamespace

import numpy as np
import pytest

from fusionlib.branches import BranchOutput
from fusionlib.decision import DECISIONS, Balanced, Ordinal, Tuned, decide, get_decision
from fusionlib.experiment import run_fold
from fusionlib.metrics import qwk
from fusionlib.params import validate
from fusionlib.splits import patient_folds
from fusionlib.head import one_standard_error_choice
from helpers import random_probabilities


def test_ordinal_is_the_expected_quadratic_cost_minimiser():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet([0.5, 0.5, 0.5], size=2000)
    brute = np.array([min(range(3), key=lambda k: sum(p[c] * (k - c) ** 2 for c in range(3)))
                      for p in proba])
    np.testing.assert_array_equal(Ordinal().predict(proba), brute)
    # ... and it is not argmax: a bimodal I/R case is called P.
    assert Ordinal().predict(np.array([[0.45, 0.1, 0.45]]))[0] == 1


def test_balanced_divides_by_the_training_prevalence():
    rule = Balanced().fit(np.array([0] * 10 + [1] * 80 + [2] * 10))
    # P is the most probable, but relative to its 80 % prior I is far more likely.
    assert rule.predict(np.array([[0.3, 0.6, 0.1]]))[0] == 0
    assert get_decision("argmax").predict(np.array([[0.3, 0.6, 0.1]]))[0] == 1
    with pytest.raises(ValueError, match="unknown decision rule 'max'; expected one of argmax"):
        get_decision("max")


def test_tuned_picks_the_best_validation_rule_and_never_sees_test_labels():
    rng = np.random.default_rng(1)
    y_train = rng.choice(3, 300, p=[0.3, 0.6, 0.1])
    y_val = rng.choice(3, 200, p=[0.3, 0.6, 0.1])
    val = random_probabilities(rng, y_val, 1.0)
    rule = Tuned().fit(y_train, val, y_val)
    best = max(rule.validation_qwk_.values())
    assert rule.validation_qwk_[rule.chosen_.name] == best
    assert rule.describe() == f"tuned:{rule.chosen_.name}"


def _stub(n_patients=60, seed=0):
    """A cohort stand-in (labels, patients) and branch outputs drawn from known distributions."""
    rng = np.random.default_rng(seed)
    visits = rng.integers(1, 4, n_patients)
    groups = np.repeat(np.arange(n_patients), visits)
    y = rng.choice(3, len(groups), p=[0.31, 0.56, 0.13])
    return SimpleNamespace(y=y, groups=groups), rng


def _outputs(rng, cohort, fold, rf_strength=0.6, image_strength=2.0):
    y = cohort.y
    out = {}
    for m, strength, k in (("metadata", rf_strength, 1), ("thermal_map", image_strength, 2)):
        train = random_probabilities(rng, y[fold.train], strength)
        models = np.stack([random_probabilities(rng, y[fold.test], strength) for _ in range(k)])
        out[m] = BranchOutput(fold.train, fold.test, train, models.mean(axis=0),
                              test_proba_models=None if k == 1 else models)
    return out


FAST_HEAD = {"head": {"max_epochs": 400, "patience": 100, "penalty": [0.0, 0.01]}}


def test_one_decision_rule_object_decides_every_source_of_fixed_and_learned_heads():
    cohort, rng = _stub()
    fold = patient_folds(cohort.y, cohort.groups, 3, 0)[0]
    outputs = _outputs(rng, cohort, fold)
    y_train = cohort.y[fold.train]
    for fusion in ("fixed", "trainable"):
        params = validate({"fusion": {"variant": fusion}, "decision": {"rule": "balanced"}, **FAST_HEAD})
        result = run_fold(cohort, params, fold, outputs, log=lambda *_: None)
        assert set(result.weights["decision"].values()) == {"balanced"}
        sources = {"fused": result.proba, **result.baselines}
        assert set(result.preds) == set(sources)
        for source, proba in sources.items():
            for name in ("argmax", "balanced", "ordinal"):
                expected = decide(proba, DECISIONS[name]().fit(y_train))
                np.testing.assert_array_equal(result.preds[source][name], expected)
        # The headline scores are those of the run's rule.
        assert result.scores["qwk"] == pytest.approx(qwk(result.y_true, result.preds["fused"]["balanced"]))


def test_tuned_decisions_do_not_change_when_the_test_labels_are_permuted():
    cohort, rng = _stub(seed=2)
    fold = patient_folds(cohort.y, cohort.groups, 3, 0)[1]
    outputs = _outputs(rng, cohort, fold)
    params = validate({"fusion": {"variant": "trainable"}, "decision": {"rule": "tuned"}, **FAST_HEAD})
    first = run_fold(cohort, params, fold, outputs, log=lambda *_: None)
    shuffled = SimpleNamespace(y=cohort.y.copy(), groups=cohort.groups)
    shuffled.y[fold.test] = np.random.default_rng(9).permutation(cohort.y[fold.test])
    assert not np.array_equal(shuffled.y[fold.test], cohort.y[fold.test])
    second = run_fold(shuffled, params, fold, outputs, log=lambda *_: None)
    for source in first.preds:
        np.testing.assert_array_equal(first.preds[source]["tuned"], second.preds[source]["tuned"])
    assert first.weights["decision"] == second.weights["decision"]


def test_one_standard_error_rule_on_a_hand_computed_example():
    # Three patients with two validation rows each; candidate 0 is the best (mean 1.0).
    groups = np.array([0, 0, 1, 1, 2, 2])
    best = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # Candidate 0.1: per-patient differences d_p = (0.2, 0.0, 0.1) -> mean 0.3 / 6 = 0.05;
    # deviations d_p - n_p * mean = (0.1, -0.1, 0.0); SE = sqrt(3/2 * 0.02) / 6 = 0.0289.
    small = best + np.array([0.1, 0.1, 0.0, 0.0, 0.05, 0.05])
    # Candidate 0.3: d_p = (0.3, 0.3, 0.3) -> mean 0.15, deviations 0 -> SE 0: clearly worse.
    large = best + 0.15
    chosen, table = one_standard_error_choice([0.0, 0.1, 0.3], [best, small, large], groups)
    assert table[0.1][0] == pytest.approx(0.05)
    assert table[0.1][1] == pytest.approx(np.sqrt(1.5 * 0.02) / 6)
    assert table[0.3] == pytest.approx((0.15, 0.0))
    assert chosen == 0.0            # 0.05 > 0.0289: the difference is more than one SE
    # With d_p = (0.2, -0.2, 0.0) the mean is 0 and the SE positive: within one SE -> 0.1.
    noisy = best + np.array([0.1, 0.1, -0.1, -0.1, 0.0, 0.0])
    chosen, table = one_standard_error_choice([0.0, 0.1], [best, noisy], groups)
    assert table[0.1][0] == pytest.approx(0.0) and table[0.1][1] > 0
    assert chosen == 0.1
    assert one_standard_error_choice([0.0, 0.1], [best, noisy], groups, rule="min")[0] == 0.0


def test_influence_share_of_a_constant_branch_is_zero_for_fixed():
    from fusionlib.models import build_fusion_head
    from fusionlib.explain import effective_clinical_share, influence_share

    rng = np.random.default_rng(3)
    y = rng.choice(3, 200)
    head = build_fusion_head(["metadata", "thermal_map"], "fixed")
    constant_rf = np.tile([0.2, 0.5, 0.3], (200, 1))
    probs = {"metadata": constant_rf, "thermal_map": random_probabilities(rng, y, 1.5)}
    influence = influence_share(head, probs)
    assert influence["overall"] == pytest.approx(0.0, abs=1e-6)
    assert influence["per_modality"]["thermal_map"]["overall"] == pytest.approx(1.0)
    # The sensitivity share is still the fixed weight: it ignores how much a branch varies.
    assert effective_clinical_share(head, probs)["overall"] == pytest.approx(0.7, abs=1e-6)
    # Both branches varying alike: fixed's influence share is its weight.
    same = random_probabilities(rng, y, 1.5)
    assert influence_share(head, {"metadata": same, "thermal_map": same})["overall"] == \
        pytest.approx(0.7, abs=1e-5)


def test_influence_share_averages_inner_models_before_the_norm():
    from fusionlib.models import build_fusion_head
    from fusionlib.explain import influence_share

    rng = np.random.default_rng(4)
    y = rng.choice(3, 300)
    head = build_fusion_head(["metadata", "thermal_map"], "fixed")
    rf, image = random_probabilities(rng, y, 1.0), random_probabilities(rng, y, 1.0)
    one = influence_share(head, {"metadata": rf, "thermal_map": image})["overall"]
    # Two inner models that agree: the same share as one model.
    two = {"metadata": np.vstack([rf, rf]), "thermal_map": np.vstack([image, image])}
    assert influence_share(head, two, n_models=2)["overall"] == pytest.approx(one, abs=1e-6)
    # Two models that disagree symmetrically around the same mean: their disagreement cancels in
    # the averaged output, so it must not count as image influence.
    noise = rng.normal(0, 0.2, image.shape)
    noise -= noise.mean(axis=1, keepdims=True)
    split = {"metadata": np.vstack([rf, rf]), "thermal_map": np.vstack([image + noise, image - noise])}
    assert influence_share(head, split, n_models=2)["overall"] == pytest.approx(one, abs=1e-6)
    assert influence_share(head, split)["overall"] < one - 0.01     # stacked rows: undercounts the RF
