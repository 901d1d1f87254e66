"""Fusion variants: each is one Keras layer mapping the class probabilities of several
modalities -- one ``(n, 3)`` tensor per modality, the clinical table's ``"metadata"``
first when present -- to fused ``(n, 3)`` probabilities.

========================  =====================================================  ==============
name                      rule                                                   params (M = 2)
========================  =====================================================  ==============
``fixed``                 ``w p_clinical + (1 - w) p_img`` with ``w = 0.70``      0
``trainable``             ``softmax(Dense(3)(concat(p_m)))``                       21
``trainable_rf_biased``   as ``trainable``, started at an effective 70/30 mix     21
``mlp``                   ``Dense(3, softmax)(Dense(16, relu)(concat(p_m)))``      163
``convex``                ``a p_clinical + (1 - a) p_img``, ``a = sigmoid(learned)``  1
``per_class_convex``      ``a_c p_clinical,c + (1 - a_c) p_img,c``, renormalised   3
``gated``                 ``a(x) p_clinical + (1 - a(x)) p_img``, ``a(x)`` learned  7
========================  =====================================================  ==============

Layout: :mod:`.registry` (names, options, checks; Keras-free), :mod:`.options` (the option
checks), :mod:`.views` (the matrix a figure shows), :mod:`.base` (the base layer), then one
module per variant (``fixed``, ``trainable``, ``mlp``, ``convex``, ``gated``).  Adding a
variant is one module with a :class:`~.base.FusionLayer` subclass and one
:class:`~.registry.FusionSpec` line in :data:`FUSIONS`.

Importing this package does not import Keras: a variant's module is imported when a layer
is first built (or by :func:`register_layers`, which ``fusionlib.models.load_model`` calls
so saved heads are read back by their class).
"""

from ..data import N_CLASSES
from .options import CLINICAL, FIXED_CLINICAL_WEIGHT, FIXED_RF_WEIGHT, default_weights
from .registry import (FUSIONS, FusionSpec, detect_fusion, find_layer, fusion_layer,
                       get_fusion, is_fusion_layer, iter_layers, linear_softmax_dense,
                       model_modalities, register, register_layers)
from .views import Heatmap

__all__ = ["CLINICAL", "FIXED_CLINICAL_WEIGHT", "FIXED_RF_WEIGHT", "FUSIONS", "N_CLASSES",
           "FusionSpec", "Heatmap", "default_weights", "detect_fusion", "find_layer",
           "fusion_layer", "get_fusion", "heatmap", "is_fusion_layer", "iter_layers",
           "linear_softmax_dense", "model_modalities", "register", "register_layers"]


def heatmap(raw, names=None) -> Heatmap:
    """The matrix figures show for one ``"raw"`` entry of ``weights.json`` (no Keras);
    ``names``: row labels of modalities, e.g. the clinical model's (:mod:`.views`)."""
    return get_fusion(raw["fusion"]).heatmap(raw, names)
