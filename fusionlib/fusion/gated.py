"""``gated``: a per-sample gate from the concatenated probabilities ``x``.

Two modalities: ``a(x) = sigmoid(x k + b)`` and ``a(x) p_clinical + (1 - a(x)) p_img``
(``3M + 1`` = 7 weights); bias started at ``logit(w_0)`` (0.70 by default), kernel
N(0, 0.01) seeded ``random_state``, so it starts near ``fixed``.  For M > 2 the gate is
``softmax(x K + b)`` over modalities (``3M*M + M`` weights), bias started at ``log(w)``.
"""

from __future__ import annotations

import math

import numpy as np

from .base import FusionLayer, as_list, constant, keras, ops, register, weighted_sum
from ..data import N_CLASSES


@register
class GatedFusion(FusionLayer):
    """Per-sample gated mix; weights ``kernel`` (3M, 1 or M) and ``bias``."""

    variant = "gated"
    stddev = 0.01

    def __init__(self, modalities, weights, **kwargs):
        super().__init__(modalities, **kwargs)
        self.start_weights = [float(w) for w in weights]

    def build_fusion(self, n_mod):
        w = np.asarray(self.start_weights, dtype="float64")
        width = 1 if n_mod == 2 else n_mod
        bias = np.array([math.log(w[0] / w[1])]) if n_mod == 2 else np.log(w)
        self.kernel = self.add_weight(
            shape=(N_CLASSES * n_mod, width), name="kernel",
            initializer=keras.initializers.RandomNormal(0.0, self.stddev, seed=self.random_state))
        self.bias = self.add_weight(shape=(width,), name="bias", initializer=constant(bias))

    def fuse(self, inputs):
        x = ops.concatenate(list(inputs), axis=-1)
        z = ops.matmul(x, self.kernel) + self.bias
        if len(inputs) == 2:
            a = ops.sigmoid(z)
            return a * inputs[0] + (1.0 - a) * inputs[1]
        g = ops.softmax(z, axis=-1)
        return weighted_sum([g[:, i:i + 1] for i in range(len(inputs))], inputs)

    def get_config(self):
        return {**super().get_config(), "weights": list(self.start_weights)}

    def _raw(self):
        kernel, bias = self.get_weights()
        return {"kernel": as_list(kernel), "bias": as_list(bias)}
