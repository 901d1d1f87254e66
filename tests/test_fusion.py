"""The fusion package: registry, variants, parameter counts, options, serialisation, raw weights."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fusionlib import fusion as F
from fusionlib.models import build_fusion_head, fusion_parameter_count

TWO = ["metadata", "thermal_map"]
THREE = ["metadata", "thermal_map", "depth_rgb"]
EXPECTED_PARAMS_TWO = {"fixed": 0, "trainable": 21, "trainable_rf_biased": 21, "mlp": 163,
                       "convex": 1, "per_class_convex": 3, "gated": 7}


def _probs(n, seed):
    x = np.random.default_rng(seed).random((n, 3)).astype("float32") + 0.05
    return x / x.sum(axis=1, keepdims=True)


def test_registry_lists_exactly_the_documented_variants():
    assert set(F.FUSIONS) == set(EXPECTED_PARAMS_TWO)
    for name, spec in F.FUSIONS.items():
        assert spec.name == name and spec.summary
        cls = spec.layer_class()
        assert cls.variant == name
        assert cls.__doc__ and len(cls.__doc__.split()) > 5
        assert sys.modules[cls.__module__].__doc__  # one documented module per variant


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS_TWO))
def test_parameter_count_for_two_modalities(name):
    head = build_fusion_head(TWO, name)
    assert fusion_parameter_count(head) == EXPECTED_PARAMS_TWO[name]
    # The head holds nothing but the fusion.
    assert sum(int(np.prod(w.shape)) for w in head.trainable_weights) == EXPECTED_PARAMS_TWO[name]
    out = np.asarray(head([_probs(5, 1), _probs(5, 2)]))
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert F.detect_fusion(head) == name


def test_parameter_counts_for_three_modalities():
    counts = {name: fusion_parameter_count(build_fusion_head(THREE, name)) for name in F.FUSIONS}
    assert counts == {"fixed": 0, "trainable": 30, "trainable_rf_biased": 30, "mlp": 211,
                      "convex": 3, "per_class_convex": 9, "gated": 30}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS_TWO))
def test_a_head_is_its_inputs_and_one_named_fusion_layer(name):
    head = build_fusion_head(TWO, name)
    assert [layer.name for layer in head.layers] == ["p_metadata", "p_thermal_map", f"{name}_fusion"]
    layer = F.fusion_layer(head)
    assert layer.variant == name and layer.modalities == TWO
    summary = _summary(head)
    assert f"{name}_fusion" in summary and type(layer).__name__ in summary


def _summary(model) -> str:
    lines = []
    model.summary(line_length=160, print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)


def test_the_layer_checks_its_inputs():
    layer = F.get_fusion("convex").build(TWO)
    with pytest.raises(ValueError, match=r"built for 2 modalities"):
        layer([_probs(2, 0)] * 3)
    with pytest.raises(ValueError, match=r"\(n, 3\) class probabilities"):
        layer([np.ones((2, 4), "float32")] * 2)


def test_fixed_rule_default_and_three_weights():
    p0, p1, p2 = _probs(4, 0), _probs(4, 1), _probs(4, 2)
    out = np.asarray(build_fusion_head(TWO, "fixed")([p0, p1]))
    np.testing.assert_allclose(out, 0.7 * p0 + 0.3 * p1, rtol=1e-6)
    out = np.asarray(build_fusion_head(TWO, "fixed", {"weights": 0.6})([p0, p1]))
    np.testing.assert_allclose(out, 0.6 * p0 + 0.4 * p1, rtol=1e-6)
    head = build_fusion_head(THREE, "fixed", {"weights": [0.5, 0.3, 0.2]})
    np.testing.assert_allclose(np.asarray(head([p0, p1, p2])), 0.5 * p0 + 0.3 * p1 + 0.2 * p2,
                               rtol=1e-6)
    default = build_fusion_head(THREE, "fixed")
    assert F.fusion_layer(default).raw_weights()["weights"] == pytest.approx([0.7, 0.15, 0.15])
    images_only = build_fusion_head(["thermal_map", "depth_rgb"], "fixed")
    assert F.fusion_layer(images_only).raw_weights()["weights"] == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match=r"expected 3 weights"):
        build_fusion_head(THREE, "fixed", {"weights": [0.7, 0.3]})
    with pytest.raises(ValueError, match=r"sum to 1"):
        build_fusion_head(THREE, "fixed", {"weights": [0.7, 0.3, 0.3]})


def test_fixed_accepts_a_single_modality_others_do_not():
    p = _probs(3, 0)
    np.testing.assert_allclose(np.asarray(build_fusion_head(["metadata"], "fixed")([p])), p,
                               rtol=1e-6)
    with pytest.raises(ValueError, match=r"at least 2 modalities"):
        build_fusion_head(["metadata"], "convex")


def test_convex_and_per_class_start_at_seventy_thirty():
    p0, p1 = _probs(6, 0), _probs(6, 1)
    for name in ("convex", "per_class_convex"):
        out = np.asarray(build_fusion_head(TWO, name)([p0, p1]))
        np.testing.assert_allclose(out, 0.7 * p0 + 0.3 * p1, atol=1e-6)
    raw = F.fusion_layer(build_fusion_head(TWO, "convex")).raw_weights()
    assert raw["a"] == pytest.approx(0.7, abs=1e-6)
    raw = F.fusion_layer(build_fusion_head(TWO, "per_class_convex")).raw_weights()
    assert raw["a_c"] == pytest.approx([0.7] * 3, abs=1e-6)


def test_per_class_convex_renormalises():
    head = build_fusion_head(TWO, "per_class_convex")
    layer = head.get_layer("per_class_convex_fusion")
    layer.set_weights([np.array([3.0, -2.0, 0.5], dtype="float32")])
    p0, p1 = _probs(8, 3), _probs(8, 4)
    a = 1 / (1 + np.exp(-np.array([3.0, -2.0, 0.5])))
    mix = a * p0 + (1 - a) * p1
    np.testing.assert_allclose(np.asarray(head([p0, p1])), mix / mix.sum(1, keepdims=True),
                               rtol=1e-5)


def test_gated_gate_is_per_sample():
    head = build_fusion_head(TWO, "gated")
    layer = head.get_layer("gated_fusion")
    kernel = np.zeros((6, 1), dtype="float32")
    kernel[0, 0] = 4.0  # gate opens with the RF's class-0 probability
    layer.set_weights([kernel, np.array([-2.0], dtype="float32")])
    p0, p1 = _probs(5, 5), _probs(5, 6)
    a = 1 / (1 + np.exp(-(4.0 * p0[:, :1] - 2.0)))
    np.testing.assert_allclose(np.asarray(head([p0, p1])), a * p0 + (1 - a) * p1, rtol=1e-5)


def test_get_fusion_errors():
    with pytest.raises(ValueError, match=r"unknown fusion 'x'; expected one of fixed, trainable"):
        F.get_fusion("x")
    with pytest.raises(ValueError, match=r"did you mean 'convex'"):
        F.get_fusion("convx")
    with pytest.raises(ValueError, match=r"unknown fusion"):
        build_fusion_head(TWO, "attention")


def test_option_validation():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['temprature'\]"):
        build_fusion_head(TWO, "trainable_rf_biased", {"temprature": 2.0})
    with pytest.raises(ValueError, match=r"temperature.*positive"):
        build_fusion_head(TWO, "trainable_rf_biased", {"temperature": 0})
    with pytest.raises(ValueError, match=r"> 0"):
        build_fusion_head(TWO, "convex", {"weights": [1.0, 0.0]})
    with pytest.raises(ValueError, match=r"hidden_units"):
        build_fusion_head(TWO, "mlp", {"hidden_units": 0})
    with pytest.raises(ValueError, match=r"fusion_options must be a dict"):
        build_fusion_head(TWO, "mlp", [("hidden_units", 4)])
    with pytest.raises(ValueError, match=r"distinct"):
        F.get_fusion("trainable").build(["metadata", "metadata"])


def test_mlp_hidden_units_option():
    head = build_fusion_head(TWO, "mlp", {"hidden_units": 4})
    assert fusion_parameter_count(head) == 6 * 4 + 4 + 4 * 3 + 3


def test_seeded_initialisation_is_reproducible():
    a = build_fusion_head(TWO, "trainable", random_state=3).get_weights()
    b = build_fusion_head(TWO, "trainable", random_state=3).get_weights()
    c = build_fusion_head(TWO, "trainable", random_state=4).get_weights()
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert 0.002 < float(np.std(a[0])) < 0.03  # N(0, 0.01)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS_TWO))
def test_head_round_trips_through_keras_file(name, tmp_path):
    from fusionlib._tf import keras

    keras = keras()
    head = build_fusion_head(THREE if name == "gated" else TWO, name)
    # Move the weights away from their start so the file has to carry them.
    rng = np.random.default_rng(0)
    head.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in head.get_weights()])
    xs = [_probs(16, i) for i in range(len(head.inputs))]
    path = tmp_path / f"{name}.keras"
    head.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(xs)), np.asarray(head(xs)), rtol=1e-6, atol=1e-7)
    assert F.detect_fusion(loaded) == name
    assert F.fusion_layer(loaded).raw_weights() == F.fusion_layer(head).raw_weights()
    assert type(F.fusion_layer(loaded)) is type(F.fusion_layer(head))


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS_TWO))
def test_raw_weights_are_json_plain_lists(name):
    raw = F.fusion_layer(build_fusion_head(TWO, name)).raw_weights()
    assert json.loads(json.dumps(raw)) == raw
    assert raw["fusion"] == name and raw["modalities"] == TWO


def test_raw_weights_content():
    head = build_fusion_head(TWO, "trainable")
    raw = F.fusion_layer(head).raw_weights()
    kernel = head.get_layer("trainable_fusion").get_weights()[0]
    np.testing.assert_allclose(np.array(raw["matrix"]), kernel, rtol=1e-6)
    np.testing.assert_allclose(np.array(raw["blocks"]["thermal_map"]), kernel[3:], rtol=1e-6)
    gated = F.fusion_layer(build_fusion_head(TWO, "gated")).raw_weights()
    assert np.array(gated["kernel"]).shape == (6, 1)


def test_rf_biased_kernel_is_scaled_identity_blocks():
    head = build_fusion_head(TWO, "trainable_rf_biased", {"temperature": 4.0})
    kernel = head.get_layer("trainable_rf_biased_fusion").get_weights()[0]
    expected = np.vstack([4.0 * 0.7 * np.eye(3), 4.0 * 0.3 * np.eye(3)])
    assert np.abs(kernel - expected).max() < 0.06  # N(0, 0.01) noise on top


def test_saved_head_loads_in_a_fresh_process_after_registering_the_layers(tmp_path):
    """``import fusionlib`` and ``import fusionlib.fusion`` (option checks and heatmap views
    included) stay Keras-free; after
    ``fusionlib.fusion.register_layers()`` a bare ``keras.models.load_model`` reads a head."""
    path = tmp_path / "gated.keras"
    build_fusion_head(TWO, "gated").save(path)
    code = (
        "import sys\n"
        "import fusionlib\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "import fusionlib.fusion as F\n"
        "mods = ['metadata', 'thermal_map']\n"
        "assert F.get_fusion('trainable_rf_biased').check(mods, {'temperature': 2})[1]"
        "['temperature'] == 2.0\n"
        "try:\n"
        "    F.get_fusion('mlp').check(mods, {'hidden_units': 0})\n"
        "    raise SystemExit('no error')\n"
        "except ValueError as err:\n"
        "    assert 'hidden_units' in str(err)\n"
        "assert F.heatmap({'fusion': 'convex', 'modalities': mods, 'a': 0.6}).matrix.shape == (1, 1)\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "fusionlib.fusion.register_layers()\n"
        "import keras\n"
        f"m = keras.models.load_model({str(path)!r})\n"
        "print(type(m.get_layer('gated_fusion')).__name__)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("GatedFusion")
