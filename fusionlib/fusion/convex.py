"""``convex`` and ``per_class_convex``: a learned convex mix of the modality probabilities,
one implementation with the mix shared by all classes (``convex``) or one per class
(``per_class_convex``, renormalised so rows sum to 1).

Two modalities: ``a = sigmoid(logit)`` and ``a p_clinical + (1 - a) p_img`` -- 1 weight, or
3 (``a_c`` per class).  More: ``softmax`` over the modalities (axis 0) of M logits, or of an
(M, 3) logit matrix.  The logits start at the mix ``weights`` (default 0.70 for the clinical
table and the rest split equally), so the layer starts exactly at ``fixed``.
"""

from __future__ import annotations

import math

import numpy as np

from .base import FusionLayer, as_list, constant, keras, ops, register, weighted_sum
from ..data import N_CLASSES


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype="float64")))


def _softmax(x, axis=-1):
    x = np.asarray(x, dtype="float64")
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@register
class ConvexFusion(FusionLayer):
    """Learned convex mix ``a p_0 + (1 - a) p_1``, ``a = sigmoid(logit)`` (1 weight); for M > 2
    ``sum_m softmax(logits)_m p_m`` (M weights).  Weight ``logits``."""

    variant = "convex"
    per_class = False

    def __init__(self, modalities, weights, **kwargs):
        super().__init__(modalities, **kwargs)
        self.start_weights = [float(w) for w in weights]

    def _start_logits(self, n_modalities: int) -> np.ndarray:
        w = np.asarray(self.start_weights, dtype="float64")
        if n_modalities == 2:
            logit = math.log(w[0] / w[1])
            return np.full((N_CLASSES,), logit) if self.per_class else np.array([logit])
        return np.repeat(np.log(w)[:, None], N_CLASSES, axis=1) if self.per_class else np.log(w)

    def build_fusion(self, n_modalities):
        init = self._start_logits(n_modalities)
        self.logits = self.add_weight(shape=init.shape, name="logits",
                                      initializer=constant(init))

    def mix(self):
        if len(self.start_weights) == 2:
            a = ops.sigmoid(self.logits)
            return [a, 1.0 - a]
        s = ops.softmax(self.logits, axis=0)
        return [s[i] for i in range(len(self.start_weights))]

    def fuse(self, inputs):
        out = weighted_sum(self.mix(), inputs)
        if not self.per_class:
            return out
        total = ops.sum(out, axis=-1, keepdims=True)
        return out / ops.maximum(total, keras.backend.epsilon())

    def get_config(self):
        return {**super().get_config(), "weights": list(self.start_weights)}

    def _raw(self):
        logits = self.get_weights()[0]
        out = {"logits": as_list(logits)}
        if len(self.start_weights) != 2:
            out["weights"] = as_list(_softmax(logits, axis=0))
        elif self.per_class:
            a_c = _sigmoid(logits)
            out.update(a_c=as_list(a_c), weights=as_list(np.stack([a_c, 1.0 - a_c])))
        else:
            a = float(_sigmoid(logits[0]))
            out.update(a=a, weights=[a, 1.0 - a])
        return out


@register
class PerClassConvexFusion(ConvexFusion):
    """Per-class convex mix, renormalised: ``m_c = a_c p_0,c + (1 - a_c) p_1,c`` (3 weights;
    3M for M > 2), output ``m / sum_c m_c``."""

    variant = "per_class_convex"
    per_class = True
