"""``trainable`` and ``trainable_rf_biased``: ``softmax(concat(p_m) K + b)``, one Dense(3) over
the concatenated probabilities; 3M*3 + 3 weights (21 for two modalities).

``trainable`` starts its kernel at N(0, 0.01) seeded by ``random_state``, bias zero.

``trainable_rf_biased`` is the same layer started near the 70/30 mix.  Why not "N(0, 0.01)
+ 0.7/3 on every clinical kernel row, 0.3/3 on every image row": each modality's
probabilities sum to 1, so a constant on all of a modality's kernel entries adds the same
constant to every logit, which softmax ignores -- that start is indistinguishable from
``trainable``.  Instead each modality's 3x3 kernel block starts at ``temperature * w_m * I_3``
(plus the N(0, 0.01) noise): the logits are ``temperature * sum_m w_m p_m``, a sharpened
70/30 mix whose Jacobian w.r.t. each modality is proportional to ``w_m``, so the effective
clinical share (:func:`fusionlib.explain.effective_clinical_share`) starts at ~0.70.
"""

from __future__ import annotations

import numpy as np

from .base import FusionLayer, as_list, keras, ops, register
from ..data import N_CLASSES


@register
class ModalityIdentityInitializer(keras.initializers.Initializer):
    """Kernel start for a Dense(3) over concatenated modality probabilities:
    ``N(0, stddev)`` noise plus ``temperature * w_m * I_3`` on modality ``m``'s 3 rows."""

    def __init__(self, block_weights, temperature=5.0, stddev=0.01, seed=0):
        self.block_weights = [float(w) for w in block_weights]
        self.temperature = float(temperature)
        self.stddev = float(stddev)
        self.seed = int(seed)

    def __call__(self, shape, dtype=None):
        expected = (N_CLASSES * len(self.block_weights), N_CLASSES)
        if tuple(shape) != expected:
            raise ValueError(f"ModalityIdentityInitializer expects kernel shape {expected} "
                             f"for {len(self.block_weights)} modalities, got {tuple(shape)}")
        base = np.vstack([self.temperature * w * np.eye(N_CLASSES) for w in self.block_weights])
        noise = keras.initializers.RandomNormal(0.0, self.stddev, seed=self.seed)(shape, dtype)
        return ops.convert_to_tensor(base, dtype=dtype) + noise

    def get_config(self):
        return {"block_weights": list(self.block_weights), "temperature": self.temperature,
                "stddev": self.stddev, "seed": self.seed}


@register
class TrainableFusion(FusionLayer):
    """``softmax(concat(p_m) K + b)``: sublayers ``concat`` and ``dense``."""

    variant = "trainable"

    def kernel_initializer(self):
        return keras.initializers.RandomNormal(0.0, 0.01, seed=self.random_state)

    def build_fusion(self, n_modalities):
        self.concat = keras.layers.Concatenate(axis=-1, name="concat")
        self.dense = keras.layers.Dense(N_CLASSES, activation="softmax",
                                        kernel_initializer=self.kernel_initializer(),
                                        name="dense")
        self.dense.build((None, N_CLASSES * n_modalities))

    def fuse(self, inputs):
        return self.dense(self.concat(inputs))

    def linear_softmax(self):
        return self.dense

    def _raw(self):
        kernel, bias = self.dense.get_weights()
        blocks = {m: as_list(kernel[N_CLASSES * i: N_CLASSES * (i + 1)])
                  for i, m in enumerate(self.modalities)}
        return {"matrix": as_list(kernel), "bias": as_list(bias), "blocks": blocks}


@register
class TrainableRFBiasedFusion(TrainableFusion):
    """The ``trainable`` layer with its kernel started at ``temperature * w_m * I_3`` blocks."""

    variant = "trainable_rf_biased"
    custom_objects = (ModalityIdentityInitializer,)   # its saved kernel initializer

    def __init__(self, modalities, weights, temperature=5.0, **kwargs):
        super().__init__(modalities, **kwargs)
        self.start_weights = [float(w) for w in weights]
        self.temperature = float(temperature)

    def kernel_initializer(self):
        return ModalityIdentityInitializer(self.start_weights, temperature=self.temperature,
                                           stddev=0.01, seed=self.random_state)

    def get_config(self):
        return {**super().get_config(), "weights": list(self.start_weights),
                "temperature": self.temperature}
