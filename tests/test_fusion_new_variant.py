"""Adding a fusion variant is one layer class and one registry line: this test adds one.

``tempered_mean`` fuses the equal-weight mean of the modality probabilities and sharpens or
flattens it with one learned temperature: ``softmax(log(mean_m p_m) / T)``.  Below, the class
stands for the variant's file and ``register(FusionSpec(...))`` for its line in
``fusionlib.fusion.registry.FUSIONS``; nothing else in fusionlib is touched.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusionlib import fusion as F
from fusionlib.fusion import FusionSpec, views
from fusionlib.fusion import options as opt
from fusionlib.fusion.base import FusionLayer, keras, ops
from fusionlib.models import build_fusion_head, fusion_parameter_count, load_model
from fusionlib.explain import effective_clinical_share, raw_fusion_weights

TWO = ["metadata", "thermal_map"]


# --- the variant's file -------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="fusionlib_test")
class TemperedMeanFusion(FusionLayer):
    """``softmax(log(mean_m p_m) / T)`` with one learned ``log_temperature`` started at
    ``log(temperature)``."""

    variant = "tempered_mean"

    def __init__(self, modalities, temperature=1.0, **kwargs):
        super().__init__(modalities, **kwargs)
        self.temperature = float(temperature)

    def build_fusion(self, n_modalities):
        start = np.log(np.array([self.temperature]))
        self.log_temperature = self.add_weight(
            shape=(1,), name="log_temperature",
            initializer=lambda shape, dtype=None: ops.convert_to_tensor(start, dtype=dtype))

    def fuse(self, inputs):
        mean = sum(inputs[1:], inputs[0]) / len(inputs)
        return ops.softmax(ops.log(ops.maximum(mean, 1e-7)) / ops.exp(self.log_temperature))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}

    def _raw(self):
        return {"temperature": float(np.exp(self.get_weights()[0][0]))}


def _temperature_view(raw) -> views.Heatmap:  # Keras-free, as plots need it
    return views.Heatmap("kernel", np.array([[raw["temperature"]]]), ["T"], ["temperature"])


# --- its registry line ----------------------------------------------------------------------
SPEC = FusionSpec("tempered_mean", f"{__name__}:TemperedMeanFusion", "softmax(log(mean p) / T)",
                  {"temperature": (1.0, opt.positive), "random_state": (0, opt.seed)},
                  _temperature_view)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(F.FUSIONS, SPEC.name, SPEC)
    return SPEC


def _data(n=240, seed=0):
    """Two modalities that agree with the truth; their mean is under-confident, so the
    fitted temperature must fall below its start of 1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    xs = []
    for _ in TWO:
        logits = rng.normal(0, 0.3, (n, 3))
        logits[np.arange(n), y] += 1.0
        p = np.exp(logits)
        xs.append((p / p.sum(1, keepdims=True)).astype("float32"))
    return xs, y


def test_a_variant_added_by_one_class_and_one_registry_line(registered, tmp_path):
    # Options are checked by the registry line alone (no Keras layer needed).
    assert F.get_fusion("tempered_mean").check(TWO, {"temperature": 2})[1] == \
        {"temperature": 2.0, "random_state": 0}
    with pytest.raises(ValueError, match=r"temperature.*positive"):
        build_fusion_head(TWO, "tempered_mean", {"temperature": -1.0})

    head = build_fusion_head(TWO, "tempered_mean")
    assert F.detect_fusion(head) == "tempered_mean"
    assert fusion_parameter_count(head) == 1
    assert [layer.name for layer in head.layers][-1] == "tempered_mean_fusion"

    xs, y = _data()
    head.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    head.fit(xs, y, epochs=60, batch_size=len(y), verbose=0)
    raw = raw_fusion_weights(head, "tempered_mean")
    assert raw["fusion"] == "tempered_mean" and raw["modalities"] == TWO
    assert raw["temperature"] < 0.9  # it learned to sharpen the under-confident mean
    assert json.loads(json.dumps(raw)) == raw

    view = F.heatmap(F.fusion_layer(head).raw_weights())   # the registry's view of the layer
    assert view.matrix.shape == (1, 1) and view.matrix[0, 0] == pytest.approx(raw["temperature"])
    assert F.heatmap(raw).matrix[0, 0] == view.matrix[0, 0]  # what plots get from weights.json

    path = tmp_path / "tempered.keras"
    head.save(path)
    for loaded in (keras.models.load_model(path), load_model(path)):
        assert type(F.fusion_layer(loaded)) is TemperedMeanFusion
        np.testing.assert_allclose(np.asarray(loaded(xs)), np.asarray(head(xs)), rtol=1e-6)
        assert raw_fusion_weights(loaded) == raw

    # The weight analysis reads it like any built-in variant: equal weights, share 0.5.
    share = effective_clinical_share(head, dict(zip(TWO, xs)))
    assert share["overall"] == pytest.approx(0.5, abs=1e-6)


def test_the_figure_draws_the_new_variant(registered):
    from fusionlib import plots

    entries = [{"fold": f, "fusion": "tempered_mean",
                "raw": {"fusion": "tempered_mean", "modalities": TWO, "temperature": t}}
               for f, t in enumerate([0.6, 0.7])]
    assert len(plots.to_base64_png(plots.fusion_weight_heatmaps(entries), dpi=30)) > 100
