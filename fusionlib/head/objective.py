"""The fusion head's training objective (what :mod:`fusionlib.head.optimisers` minimises).

The objective is the mean (class-weighted) per-row loss on the training rows plus a penalty on
the Dense kernels (group norm over each modality's block of rows, or L2). Two implementations
of the same function: exact float64 NumPy with an analytic gradient for heads whose fusion
layer is linear-softmax (``FusionLayer.linear_softmax``: multinomial logistic regression), and
a TensorFlow value-and-gradient traced once per head architecture and loss settings for every
other head. Both are minimised by scipy's L-BFGS-B with BLAS on one thread (vectors of tens of
entries: threads only add contention).
"""

from __future__ import annotations

import json

import numpy as np

from .._tf import tf
from ..fusion import linear_softmax_dense
from .settings import HeadSettings


def class_weights(y, n_classes: int = 3) -> np.ndarray:
    """'balanced' class weights n / (k * count_c); absent classes get weight 0."""
    counts = np.bincount(np.asarray(y, dtype=int), minlength=n_classes).astype(float)
    return np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)


def _kernel_penalty(kernel, n_modalities: int, group: bool):
    """Group norm over per-modality row blocks (a kernel fed the concatenation), else L2."""
    T = tf()
    if group and kernel.shape[0] == 3 * n_modalities:
        blocks = T.reshape(kernel, (n_modalities, -1))
        # The small constant keeps the gradient finite when a block reaches zero.
        return T.reduce_sum(T.sqrt(T.reduce_sum(T.square(blocks), axis=1) + 1e-12))
    return T.reduce_sum(T.square(kernel))


def per_row_loss(kind: str, gamma: float):
    def loss(y_onehot, proba):
        proba = tf().clip_by_value(proba, 1e-7, 1.0)
        ce = -tf().reduce_sum(y_onehot * tf().math.log(proba), axis=1)
        if kind == "focal":
            p_true = tf().reduce_sum(y_onehot * proba, axis=1)
            ce = ce * tf().pow(1.0 - p_true, gamma)
        return ce
    return loss


def training_objective(head, x_train: list, y_train, settings: HeadSettings, penalty: float):
    """A zero-argument callable: the head's training objective at its current weights.

    Mean (class-weighted) per-row loss on the training rows plus the penalty on the Dense
    kernels only (biases and mixing logits stay free). One definition for the early-stopped
    fit, the converged fit and the reported objective gap.
    """
    T = tf()
    y_train = np.asarray(y_train, dtype=int)
    xs = [T.constant(np.asarray(x, dtype="float32")) for x in x_train]
    yt = T.constant(np.eye(3, dtype="float32")[y_train])
    weights = class_weights(y_train) if settings.class_weight == "balanced" else np.ones(3)
    wt = T.constant(weights[y_train].astype("float32"))
    per_row = per_row_loss(settings.loss, settings.focal_gamma)
    kernels = [v for v in head.trainable_weights if v.path.endswith("kernel")]
    strength, group = float(penalty), settings.penalty_kind == "group"

    def value():
        out = T.reduce_sum(wt * per_row(yt, head(xs, training=True))) / T.reduce_sum(wt)
        if strength and kernels:
            out += strength * T.add_n([_kernel_penalty(k, len(xs), group) for k in kernels])
        return out

    return value


# --------------------------------------------------------------------------- for L-BFGS
# The penalised objective of `training_objective` as f(theta) -> (value, gradient) over the flat
# vector of the head's trainable weights (in ``head.trainable_weights`` order), for scipy's
# L-BFGS-B (fusionlib.head.optimisers). Two implementations: exact float64 NumPy for a
# linear-softmax head, and a TensorFlow function compiled once per (architecture, loss settings)
# for every other head.


def _row_weights(y, settings: HeadSettings) -> np.ndarray:
    weights = class_weights(y) if settings.class_weight == "balanced" else np.ones(3)
    return weights[np.asarray(y, dtype=int)]


def per_row_loss_numpy(y, proba, kind: str = "cross_entropy", gamma: float = 2.0) -> np.ndarray:
    """:func:`per_row_loss` in NumPy (same 1e-7 clip): each row's loss for its true class."""
    y = np.asarray(y, dtype=int)
    q = np.clip(np.asarray(proba, dtype="float64"), 1e-7, 1.0)[np.arange(len(y)), y]
    out = -np.log(q)
    if kind == "focal":
        out = out * (1.0 - q) ** gamma
    return out


def _group_blocks(kernel_shape, n_modalities: int, group: bool) -> bool:
    return group and kernel_shape[0] == 3 * n_modalities


def linear_softmax(x, kernel, bias) -> np.ndarray:
    """``softmax(x K + b)`` per row, each row's logits shifted by their largest first: a
    linear-softmax head's output in float64 (its objective here, its Jacobians in
    :mod:`fusionlib.explain.weights`)."""
    z = x @ kernel + bias
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class _LinearSoftmaxObjective:
    """Exact float64 objective and gradient of ``softmax(concat(x) K + b)`` heads."""

    def __init__(self, head, dense, x_train, y_train, settings: HeadSettings):
        self.variables = [dense.kernel, dense.bias]
        self.x = np.hstack([np.asarray(a, dtype="float64") for a in x_train])
        self.y = np.asarray(y_train, dtype=int)
        w = _row_weights(self.y, settings)
        self.w = w / w.sum()
        self.onehot = np.eye(3)[self.y]
        self.focal = settings.loss == "focal"
        self.gamma = float(settings.focal_gamma)
        self.n_modalities = len(x_train)
        self.shape = tuple(dense.kernel.shape)
        self.group = _group_blocks(self.shape, self.n_modalities, settings.penalty_kind == "group")

    def theta(self) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype="float64").ravel() for v in self.variables])

    def proba(self, theta, x=None) -> np.ndarray:
        return linear_softmax(self.x if x is None else x, theta[:-3].reshape(self.shape),
                              theta[-3:])

    def __call__(self, theta, strength: float):
        k = theta[:-3].reshape(self.shape)
        p = self.proba(theta)
        rows = np.arange(len(self.y))
        p_true = p[rows, self.y]
        q = np.clip(p_true, 1e-7, 1.0)
        log_q = np.log(q)
        if self.focal:
            one_minus = 1.0 - q
            loss = -(one_minus ** self.gamma) * log_q
            d_q = -(one_minus ** self.gamma) / q
            if self.gamma:  # d/dq of (1 - q)^gamma, 0 where q = 1 (as the loss is there)
                safe = np.where(one_minus > 0, one_minus, 1.0)
                d_q = d_q + self.gamma * safe ** (self.gamma - 1) * log_q * (one_minus > 0)
        else:
            loss, d_q = -log_q, -1.0 / q
        # d q / d z = p_true (onehot - p) where the clip is inactive, 0 where it clips.
        scale = self.w * d_q * p_true * (p_true >= 1e-7)
        g_z = scale[:, None] * (self.onehot - p)
        value = float(self.w @ loss)
        g_k, g_b = self.x.T @ g_z, g_z.sum(axis=0)
        if strength:
            if self.group:
                blocks = k.reshape(self.n_modalities, -1)
                norms = np.sqrt((blocks ** 2).sum(axis=1) + 1e-12)
                value += strength * norms.sum()
                g_k = g_k + strength * (blocks / norms[:, None]).reshape(self.shape)
            else:
                value += strength * float((k ** 2).sum())
                g_k = g_k + 2.0 * strength * k
        return value, np.concatenate([g_k.ravel(), g_b])

    def assign(self, theta) -> None:
        self.variables[0].assign(theta[:-3].reshape(self.shape).astype("float32"))
        self.variables[1].assign(theta[-3:].astype("float32"))

    def val_proba(self, theta, x_val) -> np.ndarray:
        return self.proba(theta, np.hstack([np.asarray(a, dtype="float64") for a in x_val]))


_COMPILED: dict = {}
"""Compiled value-and-gradient functions of :class:`_CompiledObjective`, one per head
architecture and loss settings in this process (keyed by :func:`_architecture_key`)."""


def strip_seeds(config):
    if isinstance(config, dict):
        return {k: strip_seeds(v) for k, v in config.items() if k not in ("random_state", "seed")}
    if isinstance(config, (list, tuple)):
        return [strip_seeds(v) for v in config]
    return config


def _architecture_key(head, settings: HeadSettings) -> str:
    """The head's config without its seeds (a seed changes the start, not the function),
    its weights' shapes and paths, and the loss settings the compiled function bakes in."""
    return json.dumps({
        "config": strip_seeds(head.get_config()), "class": type(head).__name__,
        "weights": [(v.path, list(v.shape)) for v in head.trainable_weights],
        "non_trainable": [np.asarray(v).tolist() for v in head.non_trainable_variables],
        "loss": settings.loss,
        "gamma": float(settings.focal_gamma) if settings.loss == "focal" else 0,
        "penalty_kind": settings.penalty_kind}, sort_keys=True, default=str)


def _compile(head, n_inputs: int, settings: HeadSettings):
    """``(value_and_grad, forward)`` over the stateless call of ``head`` (its architecture only:
    the weights are ``theta``): ``value_and_grad([theta, *xs, y_onehot, row_weight, strength])
    -> (value, gradient)`` (a flat list of tensors, :func:`_flat_call`) and the tf.function
    ``forward(theta, xs) -> proba``."""
    T = tf()
    variables = head.trainable_weights
    shapes = [tuple(v.shape) for v in variables]
    sizes = [int(np.prod(s)) for s in shapes]
    kernels = [i for i, v in enumerate(variables) if v.path.endswith("kernel")]
    group = settings.penalty_kind == "group"
    non_trainable = [v.value for v in head.non_trainable_variables]
    per_row = per_row_loss(settings.loss, settings.focal_gamma)
    rows = T.TensorSpec([None, 3], T.float32)

    @T.function(autograph=False,
                input_signature=[T.TensorSpec([sum(sizes)], T.float32), [rows] * n_inputs, rows,
                                 T.TensorSpec([None], T.float32), T.TensorSpec([], T.float32)])
    def value_and_grad(theta, xs, y_onehot, row_weight, strength):
        with T.GradientTape() as tape:
            tape.watch(theta)
            parts = [T.reshape(p, s) for p, s in zip(T.split(theta, sizes), shapes)]
            proba, _ = head.stateless_call(parts, non_trainable, list(xs), training=True)
            value = T.reduce_sum(row_weight * per_row(y_onehot, proba)) / T.reduce_sum(row_weight)
            if kernels:
                value += strength * T.add_n([_kernel_penalty(parts[i], n_inputs, group)
                                             for i in kernels])
        return value, tape.gradient(value, theta)

    @T.function(autograph=False,
                input_signature=[T.TensorSpec([sum(sizes)], T.float32), [rows] * n_inputs])
    def forward(theta, xs):
        parts = [T.reshape(p, s) for p, s in zip(T.split(theta, sizes), shapes)]
        return head.stateless_call(parts, non_trainable, list(xs), training=False)[0]

    return _flat_call(value_and_grad), forward


def _flat_call(function):
    """``function`` (a tf.function with an ``input_signature``) as ``call(flat_tensors)``: its one
    concrete function run on the flat list of its input tensors, in signature order.

    L-BFGS calls the value-and-gradient a few thousand times per fold on a graph that runs in
    tenths of a millisecond; a ``tf.function`` call first binds, canonicalises and type-checks
    its nested arguments against the signature in Python, which costs about as much as the
    graph itself. The flat call skips that binding and runs the same graph on the same tensors
    (the tape and captured inputs handled as in the public call); where a TensorFlow version
    lacks it, the public call of the concrete function is used.
    """
    concrete = function.get_concrete_function()
    captured = list(concrete.captured_inputs)
    call_flat = getattr(concrete, "_call_flat", None)
    if call_flat is None:  # pragma: no cover - private API of TensorFlow 2.x
        structure = function.input_signature
        T = tf()
        return lambda flat: concrete(*T.nest.pack_sequence_as(structure, flat))
    return lambda flat: call_flat(flat, captured)


class _CompiledObjective:
    """The objective of any head through a TensorFlow function compiled once per architecture."""

    def __init__(self, head, x_train, y_train, settings: HeadSettings):
        T = tf()
        self.variables = head.trainable_weights
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        key = _architecture_key(head, settings)
        if key not in _COMPILED:
            _COMPILED[key] = _compile(head, len(x_train), settings)
        self.value_and_grad, self.forward = _COMPILED[key]
        y = np.asarray(y_train, dtype=int)
        self.xs = [T.constant(np.asarray(a, dtype="float32")) for a in x_train]
        self.yt = T.constant(np.eye(3, dtype="float32")[y])
        self.wt = T.constant(_row_weights(y, settings).astype("float32"))
        self._strength = (None, None)

    def theta(self) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype="float64").ravel() for v in self.variables])

    def __call__(self, theta, strength: float):
        T = tf()
        if strength != self._strength[0]:  # one tensor per penalty candidate, not per call
            self._strength = (strength, T.constant(strength, T.float32))
        value, grad = self.value_and_grad([T.constant(theta, T.float32), *self.xs, self.yt,
                                           self.wt, self._strength[1]])
        # float64 for scipy; the objective itself is float32, like the model.
        return float(value), np.asarray(grad, dtype="float64")

    def assign(self, theta) -> None:
        for v, part, shape in zip(self.variables, np.split(theta, np.cumsum(self.sizes)[:-1]),
                                  self.shapes):
            v.assign(part.reshape(shape).astype("float32"))

    def val_proba(self, theta, x_val) -> np.ndarray:
        T = tf()
        xs = [T.constant(np.asarray(a, dtype="float32")) for a in x_val]
        return np.asarray(self.forward(T.constant(theta, T.float32), xs), dtype="float64")


def head_objective_function(head, x_train: list, y_train, settings: HeadSettings | None = None):
    """The penalised training objective of :func:`fit_head` as ``f(theta, penalty) -> (value,
    gradient)`` over the flat vector of ``head.trainable_weights``; ``.theta()`` is the head's
    current vector, ``.assign(theta)`` writes one into the head. Exact float64 NumPy for a head
    whose fusion layer says it is linear-softmax (``FusionLayer.linear_softmax``), else a
    TensorFlow function compiled once per architecture and loss settings."""
    settings = settings or HeadSettings()
    dense = linear_softmax_dense(head)
    if dense is not None:
        return _LinearSoftmaxObjective(head, dense, x_train, y_train, settings)
    return _CompiledObjective(head, x_train, y_train, settings)



def set_head_theta(head, theta) -> None:
    """Write a flat vector (``head.trainable_weights`` order) into the head's weights."""
    offset = 0
    for v in head.trainable_weights:
        size = int(np.prod(v.shape))
        v.assign(np.asarray(theta[offset:offset + size]).reshape(tuple(v.shape)).astype("float32"))
        offset += size


def head_objective(head, x_train: list, y_train, settings: HeadSettings | None = None,
                   penalty: float = 0.0) -> float:
    """The training objective of :func:`fit_head` (weighted loss + penalty) at the head's weights."""
    return float(training_objective(head, x_train, y_train, settings or HeadSettings(), penalty)())



def head_log_loss(head, x: list, y) -> float:
    """Mean cross-entropy of a head's probabilities (for the optimum check)."""
    proba = np.clip(np.asarray(head([np.asarray(a, dtype="float32") for a in x], training=False),
                               dtype=float), 1e-12, 1)
    return float(-np.mean(np.log(proba[np.arange(len(y)), np.asarray(y, dtype=int)])))

