"""The base layer of every fusion variant (in the manner of Keras' ``layers/merging/base_merge``).

A fusion layer takes a list of per-modality ``(n, 3)`` class probabilities, one per name in
``modalities`` (the clinical table's ``"metadata"`` first when present), and returns fused
``(n, 3)`` probabilities.  The base checks the inputs once, gives the output shape and the
config, and reports the learned weights: :meth:`FusionLayer.raw_weights` (what
``weights.json`` stores as ``"raw"``; the matrix figures show is the registry's view of
them, :func:`fusionlib.fusion.heatmap`, so a layer never asks its registry).  A variant
implements ``build_fusion`` (its weights), ``fuse`` (its rule), ``_raw`` and, when it has
options, ``get_config``.
"""

from __future__ import annotations

import numpy as np

from .._tf import keras as _keras
from ..data import N_CLASSES

keras = _keras()
ops = keras.ops

register = keras.saving.register_keras_serializable(package="fusionlib")
"""Decorator of every variant layer: a saved ``.keras`` head is read back by its class."""


def as_list(array) -> list:
    """A weight array as JSON-ready nested float lists."""
    return np.asarray(array, dtype="float64").tolist()


def weighted_sum(mix, inputs):
    """``sum_m mix[m] * inputs[m]`` (left to right: the float order every variant relies on)."""
    out = mix[0] * inputs[0]
    for a, p in zip(mix[1:], inputs[1:]):
        out = out + a * p
    return out


def constant(values):
    """A Keras initializer returning the array ``values`` (whatever the requested shape)."""
    return lambda shape, dtype=None: ops.convert_to_tensor(values, dtype=dtype)


class FusionLayer(keras.layers.Layer):
    """Base of the fusion variants; ``variant`` is the registry name of the subclass.

    ``modalities``: the input names, in input order.  ``random_state``: the seed of the
    variant's random start (every variant accepts it; deterministic starts ignore it).
    """

    variant: str = ""
    custom_objects: tuple = ()
    """Other Keras objects a saved layer of this variant needs to load (its initializers)."""

    def __init__(self, modalities, random_state=0, **kwargs):
        kwargs.setdefault("name", f"{self.variant}_fusion")
        super().__init__(**kwargs)
        self.modalities = [str(m) for m in modalities]
        self.random_state = int(random_state)

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    # -- shape logic, once for every variant
    def _check_shapes(self, input_shape):
        shapes = list(input_shape) if isinstance(input_shape, (list, tuple)) else []
        if not shapes or not all(isinstance(s, (list, tuple)) for s in shapes):
            raise ValueError(f"{self.name}: expects a list of {self.n_modalities} (n, 3) "
                             f"probability inputs {self.modalities}, got shape {input_shape}")
        if len(shapes) != self.n_modalities:
            raise ValueError(f"fusion {self.variant!r} was built for {self.n_modalities} "
                             f"modalities {self.modalities}, got {len(shapes)} inputs")
        bad = [tuple(s) for s in shapes if len(s) != 2 or s[-1] != N_CLASSES]
        if bad:
            raise ValueError(f"{self.name}: every input must be (n, {N_CLASSES}) class "
                             f"probabilities, got shapes {[tuple(s) for s in shapes]}")
        return shapes

    def build(self, input_shape):
        self._check_shapes(input_shape)
        self.build_fusion(self.n_modalities)
        self.built = True

    def call(self, inputs):
        inputs = list(inputs)
        if len(inputs) != self.n_modalities:
            raise ValueError(f"fusion {self.variant!r} was built for {self.n_modalities} "
                             f"modalities {self.modalities}, got {len(inputs)} inputs")
        return self.fuse(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(self._check_shapes(input_shape)[0])

    def get_config(self):
        return {**super().get_config(), "modalities": list(self.modalities),
                "random_state": self.random_state}

    # -- what a variant implements
    def build_fusion(self, n_modalities: int) -> None:
        """Create the variant's weights (none by default)."""

    def fuse(self, inputs: list):
        raise NotImplementedError

    def _raw(self) -> dict:
        raise NotImplementedError

    def linear_softmax(self):
        """The Dense layer when this layer computes exactly ``softmax(concat(inputs) K + b)``
        with that Dense's kernel and bias as its only weights, else None (the default).  The
        head fitter (:func:`fusionlib.head.head_objective_function`) then minimises an exact
        float64 NumPy objective (multinomial logistic regression) instead of a compiled
        TensorFlow one, and writes the result back into the Dense."""
        return None

    # -- reports
    def raw_weights(self) -> dict:
        """The learned weights as JSON-ready plain lists: ``fusion``, ``modalities``, then the
        variant's own keys (the ``"raw"`` entry of ``weights.json``)."""
        return {"fusion": self.variant, "modalities": list(self.modalities), **self._raw()}
