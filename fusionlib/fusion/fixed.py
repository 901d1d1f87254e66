"""``fixed``: the old study's rule ``w p_clinical + (1 - w) p_img`` with ``w = 0.70``.

Option ``weights``: one weight per modality (>= 0, summing to 1), or for two modalities a
single number (the first modality's weight).  Default: the clinical table 0.70 and the
remaining 0.30 split equally among image modalities; images only: equal.  No trainable
weights.  Also accepts a single modality (weight 1: the identity), the "one branch alone"
baseline.
"""

from __future__ import annotations

from .base import FusionLayer, register, weighted_sum


@register
class FixedFusion(FusionLayer):
    """Fixed weighted mean ``sum_m w_m p_m`` of the modality probabilities (no weights)."""

    variant = "fixed"

    def __init__(self, modalities, weights, **kwargs):
        super().__init__(modalities, **kwargs)
        self.weights_ = [float(w) for w in weights]

    def fuse(self, inputs):
        return weighted_sum(self.weights_, inputs)

    def get_config(self):
        return {**super().get_config(), "weights": list(self.weights_)}

    def _raw(self):
        return {"weights": list(self.weights_)}
