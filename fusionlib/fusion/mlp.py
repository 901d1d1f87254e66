"""``mlp``: ``Dense(3, softmax)(Dense(16, relu)(concat(p_m)))``; 163 weights for two
modalities.  Options ``hidden_units`` (16) and ``random_state`` (Glorot-uniform kernels
seeded ``random_state`` and ``random_state + 1``)."""

from __future__ import annotations

from .base import FusionLayer, as_list, keras, register
from ..data import N_CLASSES


@register
class MLPFusion(FusionLayer):
    """One hidden ReLU layer over the concatenated probabilities: sublayers ``concat``,
    ``hidden`` and ``out``."""

    variant = "mlp"

    def __init__(self, modalities, hidden_units=16, **kwargs):
        super().__init__(modalities, **kwargs)
        self.hidden_units = int(hidden_units)

    def build_fusion(self, n_modalities):
        glorot = keras.initializers.GlorotUniform
        seed = self.random_state
        self.concat = keras.layers.Concatenate(axis=-1, name="concat")
        self.hidden = keras.layers.Dense(self.hidden_units, activation="relu",
                                         name="hidden",
                                         kernel_initializer=glorot(seed=seed))
        self.out = keras.layers.Dense(N_CLASSES, activation="softmax", name="out",
                                      kernel_initializer=glorot(seed=seed + 1))
        self.hidden.build((None, N_CLASSES * n_modalities))
        self.out.build((None, self.hidden_units))

    def fuse(self, inputs):
        return self.out(self.hidden(self.concat(inputs)))

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}

    def _raw(self):
        hidden, out = self.hidden.get_weights(), self.out.get_weights()
        return {"hidden_kernel": as_list(hidden[0]), "hidden_bias": as_list(hidden[1]),
                "output_kernel": as_list(out[0]), "output_bias": as_list(out[1])}
