"""Cases missing a modality: every fusion variant predicts every test case by the documented
rule (head for complete cases, mean of the present modalities otherwise), and the run summary
counts cases by modality availability and scores the complete cases apart."""

from __future__ import annotations

import numpy as np
import pytest

from fusionlib.experiment import fuse_with_missing
from fusionlib.fusion import FUSIONS
from fusionlib.models import build_fusion_head

N = 40
MISSING = np.zeros(N, bool)
MISSING[[1, 4, 5, 11, 20, 33, 39]] = True


def _probs(rng, n):
    logits = rng.normal(0, 1.5, size=(n, 3))
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def branch_probs():
    rng = np.random.default_rng(11)
    rf, img = _probs(rng, N), _probs(rng, N).astype(float)
    img[MISSING] = np.nan
    return rf, img


@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_every_variant_predicts_every_case_by_the_rule(fusion, branch_probs):
    rf, img = branch_probs
    head = build_fusion_head(["metadata", "thermal_map"], fusion=fusion, random_state=3)
    out = fuse_with_missing(head, [rf, img])
    assert out.shape == (N, 3) and not np.isnan(out).any()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    # Cases without an image: exactly the RF probabilities.
    np.testing.assert_array_equal(out[MISSING], rf[MISSING].astype(float))
    # Complete cases: the head's output.
    full = ~MISSING
    expected = np.asarray(head([rf[full], img[full].astype("float32")], training=False))
    np.testing.assert_allclose(out[full], expected, rtol=0, atol=1e-6)


def test_fixed_rule_numerically(branch_probs):
    rf, img = branch_probs
    head = build_fusion_head(["metadata", "thermal_map"], fusion="fixed")
    out = fuse_with_missing(head, [rf, img])
    full = ~MISSING
    np.testing.assert_allclose(out[full], 0.7 * rf[full] + 0.3 * img[full], atol=1e-6)
    np.testing.assert_array_equal(out[MISSING], rf[MISSING].astype(float))
    # With equal weights the rule is renormalising the weights over the present modalities.
    equal = build_fusion_head(["metadata", "thermal_map"], fusion="fixed",
                              fusion_options={"weights": [0.5, 0.5]})
    out_equal = fuse_with_missing(equal, [rf, img])
    np.testing.assert_allclose(out_equal[full], 0.5 * rf[full] + 0.5 * img[full], atol=1e-6)
    np.testing.assert_array_equal(out_equal[MISSING], rf[MISSING].astype(float))


def test_trainable_rule_numerically(branch_probs):
    rf, img = branch_probs
    head = build_fusion_head(["metadata", "thermal_map"], fusion="trainable", random_state=0)
    dense = [layer for layer in head.layers if layer.get_weights()]
    kernel, bias = dense[-1].get_weights()
    full = ~MISSING
    logits = np.hstack([rf[full], img[full]]) @ kernel + bias
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    out = fuse_with_missing(head, [rf, img])
    np.testing.assert_allclose(out[full], softmax, atol=1e-5)
    np.testing.assert_array_equal(out[MISSING], rf[MISSING].astype(float))


def test_three_modalities_take_the_mean_of_those_present():
    rng = np.random.default_rng(5)
    rf, a, b = _probs(rng, 6), _probs(rng, 6).astype(float), _probs(rng, 6).astype(float)
    a[[1, 3]] = np.nan
    b[[2, 3]] = np.nan
    head = build_fusion_head(["metadata", "thermal_map", "depth_map"], fusion="fixed")
    out = fuse_with_missing(head, [rf, a, b])
    np.testing.assert_allclose(out[1], (rf[1] + b[1]) / 2, atol=1e-7)
    np.testing.assert_allclose(out[2], (rf[2] + a[2]) / 2, atol=1e-7)
    np.testing.assert_allclose(out[3], rf[3], atol=1e-7)


def test_run_summary_counts_cases_by_modality_and_scores_complete_cases(tmp_path):
    """run_fold on fake cached branch outputs for a cohort where some cases have no image."""
    from fusionlib.branches import BranchOutput
    from fusionlib.synthetic import generate_cohort
    from fusionlib.data import load_cohort
    from fusionlib.experiment import ExperimentResult, run_fold
    from fusionlib.params import validate
    from fusionlib.splits import patient_folds

    cohort = load_cohort(generate_cohort(tmp_path / "c", n_patients=24, random_state=2,
                                         no_image_fraction=0.3))
    has_image = cohort.has_modality("thermal_map")
    assert 0 < (~has_image).sum() < cohort.n_cases
    rng = np.random.default_rng(0)
    rf_all = _probs(rng, cohort.n_cases).astype(float)
    img_all = _probs(rng, cohort.n_cases).astype(float)
    img_all[~has_image] = np.nan
    folds = patient_folds(cohort.y, cohort.groups, 3, 0)
    for fusion in FUSIONS:
        params = validate({"name": f"t_{fusion}", "fusion": {"variant": fusion},
                           "protocol": {"folds": 3}, "head": {"max_epochs": 20, "patience": 5}})
        results = []
        for fold in folds:
            outputs = {m: BranchOutput(fold.train, fold.test, p[fold.train], p[fold.test])
                       for m, p in (("metadata", rf_all), ("thermal_map", img_all))}
            results.append(run_fold(cohort, params, fold, outputs, log=lambda *_: None))
        result = ExperimentResult(params, cohort, results, {})
        predictions = result.predictions()
        assert len(predictions) == cohort.n_cases and not predictions[["p_I", "p_P", "p_R"]].isna().any().any()
        no_image = predictions["thermal_map_p_I"].isna().to_numpy()
        np.testing.assert_allclose(predictions.loc[no_image, ["p_I", "p_P", "p_R"]].to_numpy(),
                                   predictions.loc[no_image, ["metadata_p_I", "metadata_p_P",
                                                              "metadata_p_R"]].to_numpy())
        summary = result.summary()
        assert summary["modality_counts"] == {"metadata+thermal_map": int(has_image.sum()),
                                              "metadata only": int((~has_image).sum())}
        assert summary["scores_complete_cases"]["n"] == int(has_image.sum())
        assert summary["pooled"]["n"] == cohort.n_cases
