"""The fusion-variant registry and its serialisable Keras layers.

A *fusion variant* maps the class probabilities of several modalities -- one
``(n, 3)`` tensor per modality, in the order of ``modalities`` with
``"metadata"`` (the Random-Forest branch) first when present -- to fused
``(n, 3)`` probabilities.  Every variant is one class in :data:`FUSIONS`:

========================  =====================================================  ==============
name                      rule                                                   params (M = 2)
========================  =====================================================  ==============
``fixed``                 ``w p_rf + (1 - w) p_img`` with ``w = 0.70``            0
``trainable``             ``softmax(Dense(3)(concat(p_m)))``                       21
``trainable_rf_biased``   as ``trainable``, started at an effective 70/30 mix     21
``mlp``                   ``Dense(3, softmax)(Dense(16, relu)(concat(p_m)))``      163
``convex``                ``a p_rf + (1 - a) p_img``, ``a = sigmoid(learned)``     1
``per_class_convex``      ``a_c p_rf,c + (1 - a_c) p_img,c``, renormalised         3
``gated``                 ``a(x) p_rf + (1 - a(x)) p_img``, ``a(x)`` from Dense(1) 7
========================  =====================================================  ==============

Adding a variant means writing one :class:`Fusion` subclass and adding it to
the ``_VARIANTS`` tuple at the bottom of this module; nothing else dispatches
on names.

This module imports Keras (quietly, through :mod:`fusionlib._tf`).  Its layer
classes are registered with ``keras.saving`` when it is imported, so after
``import fusionlib.fusion`` a bare ``keras.models.load_model(path)`` reads saved
fusion models.
"""

from __future__ import annotations

import difflib
import math
from numbers import Real

import numpy as np

from ._tf import keras as _keras

keras = _keras()
ops = keras.ops

FIXED_RF_WEIGHT = 0.70
"""The old study's fixed share of the Random-Forest (metadata) probabilities."""

N_CLASSES = 3


# ---------------------------------------------------------------------------
# Keras layers (registered with keras.saving on import)
# ---------------------------------------------------------------------------

_register = keras.saving.register_keras_serializable(package="fusionlib")


def _floats(values) -> list[float]:
    return [float(v) for v in values]


def _constant(values):
    """A Keras initializer returning the array ``values`` (whatever the requested shape)."""
    return lambda shape, dtype=None: ops.convert_to_tensor(values, dtype=dtype)


def _weighted_sum(mix, inputs):
    """``sum_m mix[m] * inputs[m]``."""
    out = mix[0] * inputs[0]
    for a, p in zip(mix[1:], inputs[1:]):
        out = out + a * p
    return out


@_register
class FixedFusion(keras.layers.Layer):
    """Fixed weighted mean ``sum_m w_m p_m`` of the modality probabilities (no weights)."""

    def __init__(self, modality_weights, **kwargs):
        super().__init__(**kwargs)
        self.modality_weights = _floats(modality_weights)

    def call(self, inputs):
        return _weighted_sum(self.modality_weights, inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "modality_weights": list(self.modality_weights)}


class _LearnedMix(keras.layers.Layer):
    """Base of :class:`ConvexFusion` and :class:`PerClassConvexFusion`: learned ``logits``
    started at the mix ``init_weights``.  Two modalities: ``a = sigmoid(logits)`` and
    ``1 - a``; more: ``softmax`` of the logits over the modalities (axis 0)."""

    def __init__(self, init_weights, **kwargs):
        super().__init__(**kwargs)
        self.init_weights = _floats(init_weights)

    def _start_logits(self, w, n_modalities: int) -> np.ndarray:
        raise NotImplementedError

    def build(self, input_shape):
        init = self._start_logits(np.asarray(self.init_weights, dtype="float64"),
                                  len(input_shape))
        self.logits = self.add_weight(shape=init.shape, name="logits",
                                      initializer=_constant(init))

    def mix(self):
        if len(self.init_weights) == 2:
            a = ops.sigmoid(self.logits)
            return [a, 1.0 - a]
        s = ops.softmax(self.logits, axis=0)
        return [s[i] for i in range(len(self.init_weights))]

    def call(self, inputs):
        return _weighted_sum(self.mix(), inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "init_weights": list(self.init_weights)}


@_register
class ConvexFusion(_LearnedMix):
    """Learned convex mix: ``a p_0 + (1 - a) p_1`` with ``a = sigmoid(logit)`` for two
    modalities (1 weight); ``sum_m softmax(logits)_m p_m`` for M > 2 (M weights)."""

    def _start_logits(self, w, n_modalities):
        return np.array([math.log(w[0] / w[1])]) if n_modalities == 2 else np.log(w)


@_register
class PerClassConvexFusion(_LearnedMix):
    """Per-class convex mix, renormalised: ``m_c = a_c p_0,c + (1 - a_c) p_1,c`` with
    ``a_c = sigmoid(logit_c)`` (3 weights); for M > 2 ``m_c = sum_m softmax_m(L)_{m,c} p_m,c``
    (3M weights).  Output ``m / sum_c m_c``."""

    def _start_logits(self, w, n_modalities):
        if n_modalities == 2:
            return np.full((N_CLASSES,), math.log(w[0] / w[1]))
        return np.repeat(np.log(w)[:, None], N_CLASSES, axis=1)

    def call(self, inputs):
        out = super().call(inputs)
        total = ops.sum(out, axis=-1, keepdims=True)
        return out / ops.maximum(total, keras.backend.epsilon())


@_register
class GatedFusion(keras.layers.Layer):
    """Per-sample gate over the concatenated probabilities ``x``: for two modalities
    ``a(x) = sigmoid(x k + b)`` (``3M + 1`` weights) and ``a(x) p_0 + (1 - a(x)) p_1``;
    for M > 2 ``g(x) = softmax(x K + b)`` (``3M*M + M`` weights) and ``sum_m g_m(x) p_m``."""

    def __init__(self, init_weights, stddev=0.01, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.init_weights = _floats(init_weights)
        self.stddev = float(stddev)
        self.seed = int(seed)

    def build(self, input_shape):
        n_mod = len(input_shape)
        w = np.asarray(self.init_weights, dtype="float64")
        width = 1 if n_mod == 2 else n_mod
        bias = np.array([math.log(w[0] / w[1])]) if n_mod == 2 else np.log(w)
        self.kernel = self.add_weight(
            shape=(N_CLASSES * n_mod, width), name="kernel",
            initializer=keras.initializers.RandomNormal(0.0, self.stddev, seed=self.seed))
        self.bias = self.add_weight(shape=(width,), name="bias", initializer=_constant(bias))

    def call(self, inputs):
        x = ops.concatenate(list(inputs), axis=-1)
        z = ops.matmul(x, self.kernel) + self.bias
        if len(inputs) == 2:
            a = ops.sigmoid(z)
            return a * inputs[0] + (1.0 - a) * inputs[1]
        g = ops.softmax(z, axis=-1)
        return _weighted_sum([g[:, i:i + 1] for i in range(len(inputs))], inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "init_weights": list(self.init_weights),
                "stddev": self.stddev, "seed": self.seed}


@_register
class ModalityIdentityInitializer(keras.initializers.Initializer):
    """Kernel start for a Dense(3) over concatenated modality probabilities:
    ``N(0, stddev)`` noise plus ``temperature * w_m * I_3`` on modality ``m``'s 3 rows."""

    def __init__(self, block_weights, temperature=5.0, stddev=0.01, seed=0):
        self.block_weights = _floats(block_weights)
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


def register_layers() -> dict:
    """fusionlib's Keras layer and initializer classes by name, for ``custom_objects`` of
    ``keras.models.load_model`` (they are already registered when this module is imported)."""
    return {cls.__name__: cls for cls in (FixedFusion, ConvexFusion, PerClassConvexFusion,
                                          GatedFusion, ModalityIdentityInitializer)}


# ---------------------------------------------------------------------------
# Option checking
# ---------------------------------------------------------------------------

def default_weights(modalities) -> list[float]:
    """Default per-modality weights: metadata 0.70 and the rest split equally among the
    image modalities; without metadata, equal weights."""
    n = len(modalities)
    if "metadata" in modalities and n >= 2:
        rest = (1.0 - FIXED_RF_WEIGHT) / (n - 1)
        return [FIXED_RF_WEIGHT if m == "metadata" else rest for m in modalities]
    return [1.0 / n] * n


def _check_modalities(modalities, fusion: str, min_modalities: int = 2) -> list[str]:
    if isinstance(modalities, str) or not isinstance(modalities, (list, tuple)):
        raise ValueError(f"modalities must be a list of modality names, got {modalities!r}")
    modalities = list(modalities)
    if not all(isinstance(m, str) for m in modalities):
        raise ValueError(f"modalities must be strings, got {modalities!r}")
    if len(modalities) < min_modalities:
        raise ValueError(f"fusion {fusion!r} needs at least {min_modalities} modalities, got "
                         f"{modalities!r}" + ("; a single modality has nothing to fuse (use "
                                             "fusion 'fixed')" if len(modalities) == 1 else ""))
    dups = sorted({m for m in modalities if modalities.count(m) > 1})
    if dups:
        raise ValueError(f"modalities must be distinct, got {modalities!r} (repeated: {dups})")
    return modalities


def _check_weights(weights, modalities, fusion: str, strictly_positive: bool) -> list[float]:
    n = len(modalities)
    if weights is None:
        return default_weights(modalities)
    if isinstance(weights, Real) and not isinstance(weights, bool):
        if n != 2:
            raise ValueError(f"fusion {fusion!r}: a single weight only works for 2 modalities; "
                             f"give {n} weights for {modalities}, got {weights!r}")
        weights = [float(weights), 1.0 - float(weights)]
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ValueError(f"fusion {fusion!r}: weights must be numbers, one per modality "
                         f"{modalities}, got {weights!r}") from None
    if len(values) != n:
        raise ValueError(f"fusion {fusion!r}: expected {n} weights (one per modality "
                         f"{modalities}), got {len(values)}: {values}")
    lo_ok = (lambda v: v > 0.0) if strictly_positive else (lambda v: v >= 0.0)
    if not all(np.isfinite(v) and lo_ok(v) for v in values):
        bound = "> 0" if strictly_positive else ">= 0"
        raise ValueError(f"fusion {fusion!r}: weights must be finite and {bound}, got {values}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"fusion {fusion!r}: weights must sum to 1, got {values} "
                         f"(sum {sum(values):.6g})")
    return values


def _check_positive(value, what: str, fusion: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not value > 0 or \
            not np.isfinite(value):
        raise ValueError(f"fusion {fusion!r}: option {what!r} must be a positive number, "
                         f"got {value!r}")
    return float(value)


def _check_seed(value, fusion: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"fusion {fusion!r}: random_state must be a non-negative int, "
                         f"got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------
# Model helpers shared with models.py / weights.py
# ---------------------------------------------------------------------------

def model_modalities(model) -> list[str]:
    """Modality order of a fusion head (inputs ``p_{m}``) or multimodal model (``{m}_input``)."""
    names = []
    for t in model.inputs:
        name = t.name.split(":")[0]
        if name.startswith("p_"):
            name = name[2:]
        elif name.endswith("_input"):
            name = name[: -len("_input")]
        names.append(name)
    return names


def iter_layers(model):
    """All layers of ``model``, descending into nested models."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from iter_layers(layer)


def find_layer(model, name: str):
    """The (possibly nested) layer called ``name``, or None."""
    for layer in iter_layers(model):
        if layer.name == name:
            return layer
    return None


def _require_layer(model, name: str, fusion: str):
    layer = find_layer(model, name)
    if layer is None:
        raise ValueError(f"model {model.name!r} has no layer {name!r}; is it a {fusion!r} "
                         f"fusion model?")
    return layer


def _as_list(array) -> list:
    return np.asarray(array, dtype="float64").tolist()


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype="float64")))


def _softmax(x, axis=-1):
    x = np.asarray(x, dtype="float64")
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------
# The variants
# ---------------------------------------------------------------------------

class FusionBlock:
    """The built fusion: a chain of Keras layers; the first takes the list of modality
    probability tensors, each next one the previous output."""

    def __init__(self, fusion: str, modalities: list[str], layers: list):
        self.fusion = fusion
        self.modalities = list(modalities)
        self.layers = list(layers)

    def __call__(self, inputs):
        inputs = list(inputs)
        if len(inputs) != len(self.modalities):
            raise ValueError(f"fusion {self.fusion!r} was built for {len(self.modalities)} "
                             f"modalities {self.modalities}, got {len(inputs)} inputs")
        out = self.layers[0](inputs)
        for layer in self.layers[1:]:
            out = layer(out)
        return out

    def __repr__(self):
        return (f"FusionBlock({self.fusion!r}, modalities={self.modalities}, "
                f"layers={[layer.name for layer in self.layers]})")


class Fusion:
    """Base class of a fusion variant.

    Subclasses set ``name``, ``layer_names`` (the Keras layers the block consists of, in
    call order; used to find the fusion inside a model) and ``defaults`` (the accepted
    options and their defaults), and implement ``_layers`` and ``raw_weights``.
    """

    name: str = ""
    layer_names: tuple[str, ...] = ()
    defaults: dict = {}
    min_modalities: int = 2

    @classmethod
    def build(cls, modalities, **options) -> FusionBlock:
        """Return a :class:`FusionBlock` mapping a list of (n, 3) probability tensors, one
        per modality in ``modalities`` order, to fused (n, 3) probabilities."""
        modalities = _check_modalities(modalities, cls.name, cls.min_modalities)
        unknown = sorted(set(options) - set(cls.defaults))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for fusion {cls.name!r}; expected "
                             f"some of {sorted(cls.defaults)}")
        opts = {**cls.defaults, **options}
        return FusionBlock(cls.name, modalities, cls._layers(modalities, opts))

    @classmethod
    def _layers(cls, modalities, opts) -> list:
        raise NotImplementedError

    @classmethod
    def raw_weights(cls, model) -> dict:
        """The fusion's raw learned weights in ``model`` as JSON-serialisable plain lists."""
        raise NotImplementedError

    @classmethod
    def matches(cls, model) -> bool:
        """Whether ``model`` contains this variant's fusion layers."""
        return all(find_layer(model, n) is not None for n in cls.layer_names)

    @classmethod
    def _header(cls, model) -> dict:
        return {"fusion": cls.name, "modalities": model_modalities(model)}


class FixedFusionVariant(Fusion):
    """``fixed``: the old study's rule ``w p_rf + (1 - w) p_img`` with w = 0.70.

    Option ``weights``: one weight per modality (>= 0, summing to 1), or for two
    modalities a single number (the first modality's weight).  Default: metadata 0.70
    and the remaining 0.30 split equally among image modalities; images only: equal.
    No trainable parameters; one layer ``fixed_fusion``.  Also accepts a single modality
    (weight 1: the identity), the "one branch alone" baseline.
    """

    name = "fixed"
    min_modalities = 1
    layer_names = ("fixed_fusion",)
    defaults = {"weights": None, "random_state": 0}

    @classmethod
    def _layers(cls, modalities, opts):
        weights = _check_weights(opts["weights"], modalities, cls.name, strictly_positive=False)
        return [FixedFusion(weights, name="fixed_fusion")]

    @classmethod
    def raw_weights(cls, model):
        layer = _require_layer(model, "fixed_fusion", cls.name)
        return {**cls._header(model), "weights": list(layer.modality_weights)}


class TrainableFusion(Fusion):
    """``trainable``: ``softmax(concat(p_m) K + b)``, a Dense(3) named ``trainable_fusion``
    over the concatenated probabilities (``fusion_concat``); kernel ~ N(0, 0.01) seeded
    by ``random_state``, zero bias.  3M*3 + 3 parameters (21 for two modalities).
    """

    name = "trainable"
    layer_names = ("fusion_concat", "trainable_fusion")
    defaults = {"random_state": 0}

    @classmethod
    def _kernel_initializer(cls, modalities, opts):
        seed = _check_seed(opts["random_state"], cls.name)
        return keras.initializers.RandomNormal(0.0, 0.01, seed=seed)

    @classmethod
    def _layers(cls, modalities, opts):
        init = cls._kernel_initializer(modalities, opts)
        return [keras.layers.Concatenate(axis=-1, name="fusion_concat"),
                keras.layers.Dense(N_CLASSES, activation="softmax", kernel_initializer=init,
                                   name="trainable_fusion")]

    @classmethod
    def raw_weights(cls, model):
        layer = _require_layer(model, "trainable_fusion", cls.name)
        kernel, bias = layer.get_weights()
        mods = model_modalities(model)
        blocks = {m: _as_list(kernel[N_CLASSES * i: N_CLASSES * (i + 1)])
                  for i, m in enumerate(mods)}
        return {**cls._header(model), "matrix": _as_list(kernel), "bias": _as_list(bias),
                "blocks": blocks}

    @classmethod
    def matches(cls, model):
        layer = find_layer(model, "trainable_fusion")
        return layer is not None and not _has_identity_init(layer)


def _has_identity_init(layer) -> bool:
    init = getattr(layer, "kernel_initializer", None)
    return type(init).__name__ == "ModalityIdentityInitializer"


class TrainableRFBiasedFusion(TrainableFusion):
    """``trainable_rf_biased``: the ``trainable`` Dense(3) (21 parameters for two
    modalities, same layer name ``trainable_fusion``) started near the 70/30 mix.

    Why not "N(0, 0.01) + 0.7/3 on every RF kernel row, 0.3/3 on every image row": each
    modality's probabilities sum to 1, so a constant on all of a modality's kernel
    entries adds the same constant to every logit, which softmax ignores -- that start
    is indistinguishable from ``trainable``.  Instead each modality's 3x3 kernel block
    starts at ``temperature * w_m * I_3`` (plus the N(0, 0.01) noise): the logits are
    ``temperature * sum_m w_m p_m``, a sharpened 70/30 mix whose Jacobian w.r.t. each
    modality is proportional to ``w_m``, so the effective RF share
    (:func:`fusionlib.weights.effective_rf_share`) starts at ~0.70.

    Options: ``weights`` (as for ``fixed``, must be > 0), ``temperature`` (default 5.0),
    ``random_state``.
    """

    name = "trainable_rf_biased"
    defaults = {"weights": None, "temperature": 5.0, "random_state": 0}

    @classmethod
    def _kernel_initializer(cls, modalities, opts):
        weights = _check_weights(opts["weights"], modalities, cls.name, strictly_positive=True)
        temperature = _check_positive(opts["temperature"], "temperature", cls.name)
        seed = _check_seed(opts["random_state"], cls.name)
        return ModalityIdentityInitializer(weights, temperature=temperature, stddev=0.01,
                                           seed=seed)

    @classmethod
    def matches(cls, model):
        layer = find_layer(model, "trainable_fusion")
        return layer is not None and _has_identity_init(layer)


class MLPFusion(Fusion):
    """``mlp``: ``Dense(3, softmax)(Dense(16, relu)(concat(p_m)))`` (layers ``fusion_concat``,
    ``mlp_fusion_hidden``, ``mlp_fusion_out``); 163 parameters for two modalities.
    Options: ``hidden_units`` (16), ``random_state``.
    """

    name = "mlp"
    layer_names = ("fusion_concat", "mlp_fusion_hidden", "mlp_fusion_out")
    defaults = {"hidden_units": 16, "random_state": 0}

    @classmethod
    def _layers(cls, modalities, opts):
        units = opts["hidden_units"]
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"fusion 'mlp': hidden_units must be a positive int, got {units!r}")
        seed = _check_seed(opts["random_state"], cls.name)
        glorot = keras.initializers.GlorotUniform
        return [keras.layers.Concatenate(axis=-1, name="fusion_concat"),
                keras.layers.Dense(int(units), activation="relu", name="mlp_fusion_hidden",
                                   kernel_initializer=glorot(seed=seed)),
                keras.layers.Dense(N_CLASSES, activation="softmax", name="mlp_fusion_out",
                                   kernel_initializer=glorot(seed=seed + 1))]

    @classmethod
    def raw_weights(cls, model):
        hidden = _require_layer(model, "mlp_fusion_hidden", cls.name).get_weights()
        out = _require_layer(model, "mlp_fusion_out", cls.name).get_weights()
        return {**cls._header(model), "hidden_kernel": _as_list(hidden[0]),
                "hidden_bias": _as_list(hidden[1]), "output_kernel": _as_list(out[0]),
                "output_bias": _as_list(out[1])}


class ConvexVariant(Fusion):
    """``convex``: ``a p_rf + (1 - a) p_img`` with one learned ``a = sigmoid(logit)`` in
    (0, 1), started at ``logit(0.70)`` (1 parameter).  For M > 2 modalities the mix is
    ``softmax(logits)`` over the M modalities (M parameters), started at ``log(w)`` of
    the fixed default weights, so it starts exactly at ``fixed``.  Layer
    ``convex_fusion``; option ``weights`` (start, > 0).
    """

    name = "convex"
    layer_names = ("convex_fusion",)
    defaults = {"weights": None, "random_state": 0}

    @classmethod
    def _layers(cls, modalities, opts):
        weights = _check_weights(opts["weights"], modalities, cls.name, strictly_positive=True)
        return [ConvexFusion(weights, name="convex_fusion")]

    @classmethod
    def raw_weights(cls, model):
        layer = _require_layer(model, "convex_fusion", cls.name)
        logits = layer.get_weights()[0]
        out = {**cls._header(model), "logits": _as_list(logits)}
        if len(layer.init_weights) == 2:
            a = float(_sigmoid(logits[0]))
            out.update(a=a, weights=[a, 1.0 - a])
        else:
            out["weights"] = _as_list(_softmax(logits))
        return out


class PerClassConvexVariant(Fusion):
    """``per_class_convex``: per class ``c``, ``m_c = a_c p_rf,c + (1 - a_c) p_img,c`` with
    ``a_c = sigmoid(logit_c)`` started at 0.70 (3 parameters), then ``m / sum_c m_c`` so
    rows sum to 1.  For M > 2: ``a_{m,c} = softmax over modalities`` of a (M, 3) logit
    matrix (3M parameters) started at the fixed default weights.  Layer
    ``per_class_convex_fusion``; option ``weights`` (start, > 0).
    """

    name = "per_class_convex"
    layer_names = ("per_class_convex_fusion",)
    defaults = {"weights": None, "random_state": 0}

    @classmethod
    def _layers(cls, modalities, opts):
        weights = _check_weights(opts["weights"], modalities, cls.name, strictly_positive=True)
        return [PerClassConvexFusion(weights, name="per_class_convex_fusion")]

    @classmethod
    def raw_weights(cls, model):
        layer = _require_layer(model, "per_class_convex_fusion", cls.name)
        logits = layer.get_weights()[0]
        out = {**cls._header(model), "logits": _as_list(logits)}
        if logits.ndim == 1:
            a_c = _sigmoid(logits)
            out.update(a_c=_as_list(a_c), weights=_as_list(np.stack([a_c, 1.0 - a_c])))
        else:
            out["weights"] = _as_list(_softmax(logits, axis=0))
        return out


class GatedVariant(Fusion):
    """``gated``: per-sample ``a(x) = sigmoid(x k + b)`` from the concatenated probabilities
    ``x``, then ``a(x) p_rf + (1 - a(x)) p_img`` (7 parameters for two modalities); bias
    started at ``logit(0.70)``, kernel ~ N(0, 0.01), so it starts near ``fixed``.  For
    M > 2 the gate is ``softmax(x K + b)`` over modalities (3M*M + M parameters), bias
    started at ``log(w)``.  Layer ``gated_fusion``; options ``weights`` (start, > 0),
    ``random_state``.
    """

    name = "gated"
    layer_names = ("gated_fusion",)
    defaults = {"weights": None, "random_state": 0}

    @classmethod
    def _layers(cls, modalities, opts):
        weights = _check_weights(opts["weights"], modalities, cls.name, strictly_positive=True)
        seed = _check_seed(opts["random_state"], cls.name)
        return [GatedFusion(weights, stddev=0.01, seed=seed, name="gated_fusion")]

    @classmethod
    def raw_weights(cls, model):
        layer = _require_layer(model, "gated_fusion", cls.name)
        kernel, bias = layer.get_weights()
        return {**cls._header(model), "kernel": _as_list(kernel), "bias": _as_list(bias)}


_VARIANTS = (FixedFusionVariant, TrainableFusion, TrainableRFBiasedFusion, MLPFusion,
             ConvexVariant, PerClassConvexVariant, GatedVariant)

FUSIONS: dict[str, type[Fusion]] = {cls.name: cls for cls in _VARIANTS}
"""Fusion variants by name."""

FUSION_LAYER_NAMES = frozenset(n for cls in _VARIANTS for n in cls.layer_names)
"""Names of every layer that belongs to some fusion block."""


def get_fusion(name) -> type[Fusion]:
    """The fusion variant called ``name``; ValueError (with a suggestion) when unknown."""
    if isinstance(name, str) and name in FUSIONS:
        return FUSIONS[name]
    msg = f"unknown fusion {name!r}; expected one of {', '.join(FUSIONS)}"
    if isinstance(name, str):
        close = difflib.get_close_matches(name, list(FUSIONS), n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
    raise ValueError(msg)


def detect_fusion(model) -> str:
    """Name of the fusion variant inside ``model`` (found through its layer names)."""
    found = [name for name, cls in FUSIONS.items() if cls.matches(model)]
    # A variant whose layer set contains another's (mlp vs trainable) wins by specificity.
    found.sort(key=lambda n: -len(FUSIONS[n].layer_names))
    if not found:
        raise ValueError(f"model {model.name!r} contains no fusion layer; expected one of "
                         f"{sorted(FUSION_LAYER_NAMES)}")
    return found[0]
