"""The effective clinical share and raw fusion weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusionlib.models import build_fusion_head, build_multimodal_model
from fusionlib.explain import effective_clinical_share, modality_jacobians, raw_fusion_weights

TWO = ["metadata", "thermal_map"]


def _probs(n, seed):
    x = np.random.default_rng(seed).dirichlet([1.0, 1.0, 1.0], size=n).astype("float32")
    return x


@pytest.fixture(scope="module")
def probs2():
    return {"metadata": _probs(300, 0), "thermal_map": _probs(300, 1)}


def _check_share(share, expected, atol):
    assert share["overall"] == pytest.approx(expected, abs=atol)
    assert share["per_class"] == pytest.approx([expected] * 3, abs=atol)


def test_fixed_reads_exactly_its_weight(probs2):
    share = effective_clinical_share(build_fusion_head(TWO, "fixed"), probs2)
    _check_share(share, 0.70, 1e-6)
    assert share["per_modality"]["thermal_map"]["overall"] == pytest.approx(0.30, abs=1e-6)
    assert share["n_rows"] == 300 and share["modalities"] == TWO
    share = effective_clinical_share(build_fusion_head(TWO, "fixed", {"weights": 0.55}), probs2)
    _check_share(share, 0.55, 1e-6)
    assert json.loads(json.dumps(share)) == share


def test_fixed_three_modalities_reads_each_weight(probs2):
    probs3 = {**probs2, "depth_rgb": _probs(300, 2)}
    mods = ["metadata", "thermal_map", "depth_rgb"]
    share = effective_clinical_share(build_fusion_head(mods, "fixed", {"weights": [0.5, 0.3, 0.2]}),
                               probs3)
    _check_share(share, 0.5, 1e-6)
    for m, w in zip(mods, [0.5, 0.3, 0.2]):
        assert share["per_modality"][m]["per_class"] == pytest.approx([w] * 3, abs=1e-6)


def test_convex_reads_its_learned_a(probs2):
    head = build_fusion_head(TWO, "convex")
    _check_share(effective_clinical_share(head, probs2), 0.70, 1e-5)
    a = 0.42
    head.get_layer("convex_fusion").logits.assign(np.array([np.log(a / (1 - a))], dtype="float32"))
    _check_share(effective_clinical_share(head, probs2), a, 1e-5)
    assert raw_fusion_weights(head, "convex")["a"] == pytest.approx(a, abs=1e-6)
    assert raw_fusion_weights(head)["a"] == pytest.approx(a, abs=1e-6)  # detected


def test_per_class_convex_moves_only_its_class(probs2):
    head = build_fusion_head(TWO, "per_class_convex")
    share0 = effective_clinical_share(head, probs2)
    head.get_layer("per_class_convex_fusion").logits.assign(
        np.array([np.log(0.7 / 0.3), np.log(0.7 / 0.3), 3.0], dtype="float32"))
    share1 = effective_clinical_share(head, probs2)
    assert share1["per_class"][2] > share0["per_class"][2] + 0.1
    assert share1["overall"] > share0["overall"]


def _trainable_head(seed=0):
    head = build_fusion_head(TWO, "trainable", random_state=seed)
    layer = head.get_layer("trainable_fusion")
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 1.0, (6, 3)).astype("float32")
    bias = rng.normal(0, 0.5, 3).astype("float32")
    layer.set_weights([kernel, bias])
    return head, layer, kernel, bias


def test_trainable_share_ignores_invisible_directions(probs2):
    head, layer, kernel, bias = _trainable_head()
    base = effective_clinical_share(head, probs2)
    assert 0.05 < base["overall"] < 0.95
    # A constant on all logits (the bias) ...
    layer.set_weights([kernel, bias + 2.5])
    assert effective_clinical_share(head, probs2)["overall"] == pytest.approx(base["overall"],
                                                                             abs=1e-5)
    # ... or on every entry of one modality's kernel rows ...
    shifted = kernel.copy()
    shifted[:3] += 1.7
    shifted[3:] -= 0.9
    layer.set_weights([shifted, bias])
    share = effective_clinical_share(head, probs2)
    assert share["overall"] == pytest.approx(base["overall"], abs=1e-5)
    assert share["per_class"] == pytest.approx(base["per_class"], abs=1e-5)
    # ... or on one kernel row (input p_m,i adds the same amount to every logit).
    shifted = kernel.copy()
    shifted[1] += 3.0
    layer.set_weights([shifted, bias])
    assert effective_clinical_share(head, probs2)["overall"] == pytest.approx(base["overall"],
                                                                             abs=1e-5)


def test_naive_seventy_thirty_rows_are_invisible(probs2):
    """The literal '0.7/3 on RF rows, 0.3/3 on image rows' start changes nothing."""
    head, layer, kernel, bias = _trainable_head(1)
    base = effective_clinical_share(head, probs2)
    naive = kernel.copy()
    naive[:3] += 0.7 / 3
    naive[3:] += 0.3 / 3
    layer.set_weights([naive, bias])
    assert effective_clinical_share(head, probs2)["overall"] == pytest.approx(base["overall"],
                                                                             abs=1e-5)


def test_zero_image_rows_read_one(probs2):
    head, layer, kernel, bias = _trainable_head(2)
    kernel[3:] = 0.0
    layer.set_weights([kernel, bias])
    _check_share(effective_clinical_share(head, probs2), 1.0, 1e-9)
    kernel[:3] = 0.0
    layer.set_weights([kernel, bias])
    share = effective_clinical_share(head, probs2)
    assert np.isnan(share["overall"])  # nothing moves the output: undefined, not a number


def test_rf_biased_starts_near_seventy(probs2):
    for seed in (0, 1):
        share = effective_clinical_share(
            build_fusion_head(TWO, "trainable_rf_biased", random_state=seed), probs2)
        assert abs(share["overall"] - 0.70) < 0.05
        assert all(abs(s - 0.70) < 0.05 for s in share["per_class"])
    share = effective_clinical_share(
        build_fusion_head(TWO, "trainable_rf_biased", {"weights": [0.4, 0.6]}), probs2)
    assert abs(share["overall"] - 0.40) < 0.05
    # The plain trainable head has no such start.
    plain = effective_clinical_share(build_fusion_head(TWO, "trainable"), probs2)
    assert abs(plain["overall"] - 0.70) > 0.05


def test_gated_starts_near_seventy(probs2):
    share = effective_clinical_share(build_fusion_head(TWO, "gated"), probs2)
    assert abs(share["overall"] - 0.70) < 0.02


@pytest.mark.parametrize("make_head,modality,column", [
    (lambda: _trainable_head(3)[0], "metadata", 1),        # closed form (linear-softmax)
    (lambda: build_fusion_head(TWO, "mlp", random_state=4), "thermal_map", 2)])  # traced
def test_jacobians_match_finite_differences(probs2, make_head, modality, column):
    head = make_head()
    small = {m: p[:4] for m, p in probs2.items()}
    jac = modality_jacobians(head, small)
    eps = 1e-3
    base = np.asarray(head([small[m] for m in TWO]), dtype="float64")
    bumped = {**small, modality: small[modality].copy()}
    bumped[modality][:, column] += eps
    moved = np.asarray(head([bumped[m] for m in TWO]), dtype="float64")
    np.testing.assert_allclose((moved - base) / eps, jac[modality][:, :, column], atol=2e-3)


@pytest.mark.parametrize("variant,modalities", [
    ("trainable", TWO), ("trainable_rf_biased", TWO),
    ("trainable", ["metadata", "thermal_map", "depth_rgb"])])
def test_linear_softmax_jacobians_are_the_traced_ones_in_float64(variant, modalities):
    """A linear-softmax head's Jacobians are computed in closed form, without TensorFlow; the
    traced batch_jacobian every other head uses agrees with them to float32 rounding."""
    from fusionlib.explain import weights as W
    from fusionlib._tf import tf

    rng = np.random.default_rng(7)
    head = build_fusion_head(modalities, variant, random_state=2)
    head.set_weights([w + rng.normal(0, 1.0, w.shape).astype(w.dtype) for w in head.get_weights()])
    probs = {m: _probs(57, i + 10) for i, m in enumerate(modalities)}
    traced_before = len(W._JACOBIANS)
    exact = modality_jacobians(head, probs)
    assert len(W._JACOBIANS) == traced_before           # nothing traced for this head
    traced = W._jacobian_function(head, len(modalities))(
        [v.value for v in head.trainable_variables], [],
        [tf().constant(probs[m]) for m in modalities])
    for m, jac in zip(modalities, traced):
        assert exact[m].dtype == np.float64 and exact[m].shape == (57, 3, 3)
        np.testing.assert_allclose(exact[m], np.asarray(jac, dtype="float64"), atol=2e-6)


def test_images_only_head_has_no_clinical_share(probs2):
    head = build_fusion_head(["thermal_map", "depth_rgb"], "fixed")
    share = effective_clinical_share(head, {"thermal_map": probs2["thermal_map"],
                                      "depth_rgb": probs2["metadata"]})
    assert share["overall"] is None and share["per_class"] is None
    assert share["per_modality"]["depth_rgb"]["overall"] == pytest.approx(0.5, abs=1e-6)


def test_full_model_is_read_through_its_fusion_block(probs2):
    model = build_multimodal_model(TWO, {"thermal_map": (32, 32, 3)}, fusion="convex")
    _check_share(effective_clinical_share(model, probs2), 0.70, 1e-5)
    assert raw_fusion_weights(model)["a"] == pytest.approx(0.70, abs=1e-6)


def test_input_validation(probs2):
    head = build_fusion_head(TWO, "fixed")
    with pytest.raises(ValueError, match=r"missing \['thermal_map'\]"):
        effective_clinical_share(head, {"metadata": probs2["metadata"]})
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        effective_clinical_share(head, {"metadata": probs2["metadata"][:, :2],
                                  "thermal_map": probs2["thermal_map"]})
    with pytest.raises(ValueError, match=r"same number of rows"):
        effective_clinical_share(head, {"metadata": probs2["metadata"][:5],
                                  "thermal_map": probs2["thermal_map"]})
    with pytest.raises(ValueError, match=r"unknown fusion"):
        raw_fusion_weights(head, "fixd")
