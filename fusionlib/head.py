"""Fitting the fusion head on cached probabilities, and choosing its penalty.

The fusion head is tiny (tens of parameters) and its inputs are cached probabilities, so
its whole training objective fits in memory. By default (``optimizer: lbfgs``) each
penalty candidate's objective is minimised to convergence by scipy's L-BFGS-B from the
head's seeded start -- for ``trainable`` (Dense(6->3, softmax) under cross-entropy:
multinomial logistic regression, a convex problem) in exact float64 NumPy
(:class:`_LinearSoftmaxObjective`), for other variants through a TensorFlow
value-and-gradient compiled once per architecture (:class:`_CompiledObjective`) -- and the
penalty is chosen on the inner-validation patients. The result is written into the Keras
layer. The earlier full-batch loops (``sgd``, ``adam``) remain: early stopping watches the
inner-validation patients only, restores the best weights, and warns when the best step
is the first one. TensorFlow is imported only when a head is fitted, so the settings
section (:class:`HeadSettings`) validates without it.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
from pydantic import Field, field_validator

from ._tf import keras, set_seed, tf
from .metrics import qwk
from .settings import Settings, fail, one_of

logger = logging.getLogger("fusionlib")

LOSSES = ("cross_entropy", "focal")
PENALTIES = ("group", "l2")
OPTIMIZERS = ("lbfgs", "sgd", "adam")
MONITORS = ("val_loss", "val_qwk", "none")
PENALTY_RULES = ("one_se", "min")


def class_weights(y, n_classes: int = 3) -> np.ndarray:
    """'balanced' class weights n / (k * count_c); absent classes get weight 0."""
    counts = np.bincount(np.asarray(y, dtype=int), minlength=n_classes).astype(float)
    return np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)


class HeadSettings(Settings):
    """Section ``head``: how the fusion head is fitted on cached probabilities.

    Parameters
    ----------
    loss : {"cross_entropy", "focal"}
        Default cross-entropy, the loss under which the ``trainable`` head is
        logistic regression. Focal loss (``focal_gamma``) down-weights easy rows.
    class_weight : {None, "balanced"}
        Default None: the head learns the mix, not a re-balancing.
    optimizer : {"lbfgs", "sgd", "adam"}
        Default ``lbfgs``: the head's penalised training objective (loss, class
        weighting and penalty below) is minimised to convergence by scipy's
        L-BFGS-B from the head's seeded start, with no early stopping; the penalty
        candidates are the regulariser, chosen on the inner-validation rows. For
        ``trainable`` and ``trainable_rf_biased`` (``softmax(x K + b)``, logistic
        regression) objective and gradient are exact float64 NumPy; other variants
        use a TensorFlow value-and-gradient compiled once per head architecture and
        loss settings in a process. ``sgd`` (Nesterov momentum) and ``adam`` are the
        early-stopped full-batch loops of earlier versions: one epoch is one step over
        all training rows. SGD moves each weight in proportion to its gradient; Adam
        normalises every coordinate to a similar step, which lets noise directions
        grow as fast as signal ones early on (and early stopping then freezes that
        noise).
    learning_rate, max_epochs :
        The step size of ``sgd``/``adam``; ``max_epochs`` is their number of steps at
        most, and the L-BFGS iterations at most for ``lbfgs``.
    monitor : {"val_loss", "val_qwk", "none"}
        Signal on the inner-validation rows: with ``sgd``/``adam`` the early-stopping
        signal, with every optimiser the one the penalty is chosen by (default:
        log-loss, which is smooth, unlike QWK that is flat around a near-uniform start).
        "none": no validation; ``sgd``/``adam`` train for ``max_epochs`` or until the
        training loss stops moving, and the first (smallest) penalty is kept.
    patience, eval_every :
        ``sgd``/``adam`` only: stop after ``patience`` epochs without improvement,
        checking every ``eval_every`` epochs.
    penalty, penalty_kind, penalty_rule :
        Candidate strengths (one is chosen per fold, :func:`fit_head_with_penalty_search`) and kind of the penalty on the Dense kernels (0 = none: the
        head is then plain multinomial logistic regression). ``"group"`` adds
        ``penalty * sum_m ||W_m||_F`` over each modality's block of input rows,
        which can switch a whole uninformative modality off while shrinking an
        informative block only by a constant; ``"l2"`` adds ``penalty * ||W||^2``,
        which shrinks every weight in proportion. Other kernels get the L2 form.
    """

    loss: str = Field("cross_entropy", description="fusion-head loss: `cross_entropy` or `focal`")
    focal_gamma: float = Field(2.0, ge=0, description="focusing parameter of the focal loss")
    class_weight: Optional[str] = Field(None, description="class weighting of the head's loss: null or `balanced`")
    optimizer: str = Field("lbfgs", description=(
        "optimiser of the head: `lbfgs` (penalised objective minimised to convergence, no early "
        "stopping), or the early-stopped full-batch `sgd` (Nesterov momentum) or `adam`"))
    learning_rate: float = Field(1.0, gt=0, description="learning rate of `sgd` and `adam`")
    max_epochs: int = Field(3000, ge=1, description="full-batch steps (`sgd`, `adam`) or L-BFGS "
                            "iterations (`lbfgs`) at most")
    patience: int = Field(300, ge=1, description="early stopping on the inner-validation patients "
                          "(`sgd`, `adam`)")
    eval_every: int = Field(10, ge=1, description="steps between two validation checks (`sgd`, "
                            "`adam`)")
    monitor: str = Field("val_loss", description=(
        "validation signal that chooses the penalty (and early-stops `sgd`/`adam`): `val_loss`, "
        "`val_qwk` or `none`"))
    penalty: list[float] = Field([0.0, 0.003, 0.01, 0.03], description=(
        "candidate penalty strengths on the head's Dense kernels; one is chosen per fold on the "
        "inner-validation patients"))
    penalty_kind: str = Field("group", description=(
        "`group` (norm of each modality's block of kernel rows) or `l2` (ridge)"))
    penalty_rule: str = Field("one_se", description=(
        "`one_se`: strongest penalty whose validation loss exceeds the best by at most one "
        "standard error of the paired, patient-clustered difference; `min`: the best"))
    tolerance: float = Field(1e-7, gt=0, description="relative change of the training objective "
                             "that counts as converged (`lbfgs`; `sgd`/`adam` with monitor `none`)")

    @field_validator("loss")
    @classmethod
    def _loss(cls, value):
        return one_of(value, LOSSES)

    @field_validator("class_weight")
    @classmethod
    def _class_weight(cls, value):
        return one_of(value, [None, "balanced"])

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, value):
        return one_of(value, OPTIMIZERS)

    @field_validator("monitor")
    @classmethod
    def _monitor(cls, value):
        return one_of(value, MONITORS)

    @field_validator("penalty")
    @classmethod
    def _penalty(cls, value):
        if not value or any(v < 0 for v in value):
            fail(f"must be a non-empty list of numbers >= 0, got {value}")
        return value

    @field_validator("penalty_kind")
    @classmethod
    def _penalty_kind(cls, value):
        return one_of(value, PENALTIES)

    @field_validator("penalty_rule")
    @classmethod
    def _penalty_rule(cls, value):
        return one_of(value, PENALTY_RULES)


def _kernel_penalty(kernel, n_modalities: int, group: bool):
    """Group norm over per-modality row blocks (a kernel fed the concatenation), else L2."""
    T = tf()
    if group and kernel.shape[0] == 3 * n_modalities:
        blocks = T.reshape(kernel, (n_modalities, -1))
        # The small constant keeps the gradient finite when a block reaches zero.
        return T.reduce_sum(T.sqrt(T.reduce_sum(T.square(blocks), axis=1) + 1e-12))
    return T.reduce_sum(T.square(kernel))


def _per_row_loss(kind: str, gamma: float):
    def loss(y_onehot, proba):
        proba = tf().clip_by_value(proba, 1e-7, 1.0)
        ce = -tf().reduce_sum(y_onehot * tf().math.log(proba), axis=1)
        if kind == "focal":
            p_true = tf().reduce_sum(y_onehot * proba, axis=1)
            ce = ce * tf().pow(1.0 - p_true, gamma)
        return ce
    return loss


def _objective(head, x_train: list, y_train, trainer: HeadSettings, penalty: float):
    """A zero-argument callable: the head's training objective at its current weights.

    Mean (class-weighted) per-row loss on the training rows plus the penalty on the Dense
    kernels only (biases and mixing logits stay free). One definition for the early-stopped
    fit, the converged fit and the reported objective gap.
    """
    T = tf()
    y_train = np.asarray(y_train, dtype=int)
    xs = [T.constant(np.asarray(x, dtype="float32")) for x in x_train]
    yt = T.constant(np.eye(3, dtype="float32")[y_train])
    weights = class_weights(y_train) if trainer.class_weight == "balanced" else np.ones(3)
    wt = T.constant(weights[y_train].astype("float32"))
    per_row = _per_row_loss(trainer.loss, trainer.focal_gamma)
    kernels = [v for v in head.trainable_weights if v.path.endswith("kernel")]
    strength, group = float(penalty), trainer.penalty_kind == "group"

    def value():
        out = T.reduce_sum(wt * per_row(yt, head(xs, training=True))) / T.reduce_sum(wt)
        if strength and kernels:
            out += strength * T.add_n([_kernel_penalty(k, len(xs), group) for k in kernels])
        return out

    return value


# --------------------------------------------------------------------------- L-BFGS machinery
# The penalised objective of `_objective` as f(theta) -> (value, gradient) over the flat vector
# of the head's trainable weights (in ``head.trainable_weights`` order), for scipy's L-BFGS-B.
# Two implementations: exact float64 NumPy for a linear-softmax head, and a TensorFlow function
# compiled once per (architecture, loss settings) for every other head.


def _row_weights(y, trainer: HeadSettings) -> np.ndarray:
    weights = class_weights(y) if trainer.class_weight == "balanced" else np.ones(3)
    return weights[np.asarray(y, dtype=int)]


def per_row_loss_numpy(y, proba, kind: str = "cross_entropy", gamma: float = 2.0) -> np.ndarray:
    """:func:`_per_row_loss` in NumPy (same 1e-7 clip): each row's loss for its true class."""
    y = np.asarray(y, dtype=int)
    q = np.clip(np.asarray(proba, dtype="float64"), 1e-7, 1.0)[np.arange(len(y)), y]
    out = -np.log(q)
    if kind == "focal":
        out = out * (1.0 - q) ** gamma
    return out


def _group_blocks(kernel_shape, n_modalities: int, group: bool) -> bool:
    return group and kernel_shape[0] == 3 * n_modalities


class _LinearSoftmaxObjective:
    """Exact float64 objective and gradient of ``softmax(concat(x) K + b)`` heads."""

    def __init__(self, head, dense, x_train, y_train, trainer: HeadSettings):
        self.variables = [dense.kernel, dense.bias]
        self.x = np.hstack([np.asarray(a, dtype="float64") for a in x_train])
        self.y = np.asarray(y_train, dtype=int)
        w = _row_weights(self.y, trainer)
        self.w = w / w.sum()
        self.onehot = np.eye(3)[self.y]
        self.focal = trainer.loss == "focal"
        self.gamma = float(trainer.focal_gamma)
        self.n_modalities = len(x_train)
        self.shape = tuple(dense.kernel.shape)
        self.group = _group_blocks(self.shape, self.n_modalities, trainer.penalty_kind == "group")

    def theta(self) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype="float64").ravel() for v in self.variables])

    def proba(self, theta, x=None) -> np.ndarray:
        k = theta[:-3].reshape(self.shape)
        z = (self.x if x is None else x) @ k + theta[-3:]
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

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


def _strip_seeds(config):
    if isinstance(config, dict):
        return {k: _strip_seeds(v) for k, v in config.items() if k not in ("random_state", "seed")}
    if isinstance(config, (list, tuple)):
        return [_strip_seeds(v) for v in config]
    return config


def _architecture_key(head, trainer: HeadSettings) -> str:
    """The head's config without its seeds (a seed changes the start, not the function),
    its weights' shapes and paths, and the loss settings the compiled function bakes in."""
    import json

    return json.dumps({
        "config": _strip_seeds(head.get_config()), "class": type(head).__name__,
        "weights": [(v.path, list(v.shape)) for v in head.trainable_weights],
        "non_trainable": [np.asarray(v).tolist() for v in head.non_trainable_variables],
        "loss": trainer.loss, "gamma": float(trainer.focal_gamma) if trainer.loss == "focal" else 0,
        "penalty_kind": trainer.penalty_kind}, sort_keys=True, default=str)


def _compile(head, n_inputs: int, trainer: HeadSettings):
    """A tf.function ``(theta, xs, y_onehot, row_weight, strength) -> (value, gradient)`` over the
    stateless call of ``head`` (its architecture only: the weights are ``theta``)."""
    T = tf()
    variables = head.trainable_weights
    shapes = [tuple(v.shape) for v in variables]
    sizes = [int(np.prod(s)) for s in shapes]
    kernels = [i for i, v in enumerate(variables) if v.path.endswith("kernel")]
    group = trainer.penalty_kind == "group"
    non_trainable = [v.value for v in head.non_trainable_variables]
    per_row = _per_row_loss(trainer.loss, trainer.focal_gamma)
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

    return value_and_grad, forward


class _CompiledObjective:
    """The objective of any head through a TensorFlow function compiled once per architecture."""

    def __init__(self, head, x_train, y_train, trainer: HeadSettings):
        T = tf()
        self.variables = head.trainable_weights
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        key = _architecture_key(head, trainer)
        if key not in _COMPILED:
            _COMPILED[key] = _compile(head, len(x_train), trainer)
        self.value_and_grad, self.forward = _COMPILED[key]
        y = np.asarray(y_train, dtype=int)
        self.xs = [T.constant(np.asarray(a, dtype="float32")) for a in x_train]
        self.yt = T.constant(np.eye(3, dtype="float32")[y])
        self.wt = T.constant(_row_weights(y, trainer).astype("float32"))

    def theta(self) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype="float64").ravel() for v in self.variables])

    def __call__(self, theta, strength: float):
        T = tf()
        value, grad = self.value_and_grad(T.constant(theta, T.float32), self.xs, self.yt, self.wt,
                                          T.constant(strength, T.float32))
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


def head_objective_function(head, x_train: list, y_train, trainer: HeadSettings | None = None):
    """The penalised training objective of :func:`fit_head` as ``f(theta, penalty) -> (value,
    gradient)`` over the flat vector of ``head.trainable_weights``; ``.theta()`` is the head's
    current vector, ``.assign(theta)`` writes one into the head. Exact float64 NumPy for a head
    whose fusion layer says it is linear-softmax (``FusionLayer.linear_softmax``), else a
    TensorFlow function compiled once per architecture and loss settings."""
    from .fusion import fusion_layer

    trainer = trainer or HeadSettings()
    try:
        dense = fusion_layer(head).linear_softmax()
    except (ValueError, AttributeError):
        dense = None
    if dense is not None and [id(v) for v in head.trainable_weights] == \
            [id(dense.kernel), id(dense.bias)]:
        return _LinearSoftmaxObjective(head, dense, x_train, y_train, trainer)
    return _CompiledObjective(head, x_train, y_train, trainer)


_BLAS = []


def one_blas_thread():
    """A context with BLAS limited to one thread: L-BFGS-B calls BLAS on vectors of tens to
    hundreds of entries, where threads only add contention (on 2 busy cores a multi-threaded
    BLAS made each iteration ~200x slower)."""
    if not _BLAS:
        from threadpoolctl import ThreadpoolController

        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def _lbfgs(objective, penalty: float, max_iter: int, ftol: float, gtol: float,
           theta0: np.ndarray | None = None) -> dict:
    """Minimise ``objective`` from ``theta0`` (default: the head's current weights); the head
    itself is not written (``objective.assign(result["theta"])`` does that)."""
    from scipy.optimize import minimize

    theta0 = objective.theta() if theta0 is None else theta0
    with one_blas_thread():
        start, _ = objective(theta0, penalty)
        result = minimize(objective, theta0, args=(penalty,), jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter, "ftol": ftol, "gtol": gtol})
    moved = bool(np.isfinite(result.fun) and result.fun <= start and result.nit > 0)
    theta = result.x if moved else theta0
    value, grad = (float(result.fun), result.jac) if moved else objective(theta0, penalty)
    return {"theta": theta, "train_objective": float(value), "start_objective": float(start),
            "iterations": int(result.nit) if moved else 0, "grad_max": float(np.abs(grad).max()),
            "max_iter": bool(result.nit >= max_iter), "message": str(result.message)}


def _lbfgs_candidate(objective, theta0, x_val, y_val, trainer: HeadSettings,
                     penalty: float) -> tuple[np.ndarray, dict]:
    """One penalty candidate with ``optimizer: lbfgs``: the penalised optimum from ``theta0``,
    then its validation scores. Returns ``(theta, history)``; the head is not written."""
    fit = _lbfgs(objective, float(penalty), trainer.max_epochs, trainer.tolerance, 1e-6, theta0)
    iterations = fit["iterations"]
    history = {"optimizer": "lbfgs", "epoch": [iterations], "train_loss": [fit["train_objective"]],
               "val_loss": [], "val_qwk": [], "best_epoch": iterations,
               "stopped": "max_iter" if fit["max_iter"] else "converged",
               "train_objective": fit["train_objective"],
               "start_objective": fit["start_objective"], "grad_max": fit["grad_max"],
               "penalty": float(penalty)}
    if trainer.monitor != "none" and x_val is not None and len(y_val) > 0:
        y_val = np.asarray(y_val, dtype=int)
        proba = objective.val_proba(fit["theta"], x_val)
        rows = per_row_loss_numpy(y_val, proba, trainer.loss, trainer.focal_gamma)
        history["val_loss"].append(float(rows.mean()))
        history["val_qwk"].append(qwk(y_val, proba.argmax(axis=1)))
        history["val_row_loss"] = rows.tolist()
    if iterations == 0:
        logger.warning("fusion head: L-BFGS did not move the head from its start (%s)",
                       fit["message"])
    return fit["theta"], history


def fit_penalty_candidates(head, x_train: list, y_train, x_val, y_val, trainer: HeadSettings,
                           penalties, random_state: int = 0) -> list[tuple]:
    """Every penalty candidate fitted together with ``optimizer: lbfgs``: one objective (data
    prepared once), each candidate minimised from the head's current (seeded) weights.
    Returns ``[(penalty, theta, history)]``; the head keeps its weights (write the chosen
    ``theta`` with :func:`set_head_theta`)."""
    set_seed(random_state)
    objective = head_objective_function(head, x_train, y_train, trainer)
    theta0 = objective.theta()
    return [(float(p), *_lbfgs_candidate(objective, theta0, x_val, y_val, trainer, p))
            for p in penalties]


def set_head_theta(head, theta) -> None:
    """Write a flat vector (``head.trainable_weights`` order) into the head's weights."""
    offset = 0
    for v in head.trainable_weights:
        size = int(np.prod(v.shape))
        v.assign(np.asarray(theta[offset:offset + size]).reshape(tuple(v.shape)).astype("float32"))
        offset += size


def fit_head(head, x_train: list, y_train, x_val: list | None = None, y_val=None,
             trainer: HeadSettings | None = None, penalty: float = 0.0,
             random_state: int = 0) -> dict:
    """Fit a fusion head full-batch; returns its history (losses, best epoch, stop reason).

    ``x_train``/``x_val`` are lists of (n, 3) probability arrays in the head's
    input order; ``penalty`` is one strength of the kind ``trainer.penalty_kind``. A head
    without trainable weights (``fixed``) is returned as is.

    ``optimizer: lbfgs`` (default) minimises the penalised objective to convergence from the
    head's current weights (no early stopping); the history then holds one entry: ``epoch`` and
    ``best_epoch`` are the L-BFGS iterations (0: the head did not move), ``stopped`` is
    ``"converged"`` or ``"max_iter"``, and with a monitor the final validation loss, QWK and
    per-row losses. ``sgd``/``adam`` run the early-stopped loop, best epoch restored.
    """
    trainer = trainer or HeadSettings()
    T = tf()
    history = {"epoch": [], "train_loss": [], "val_loss": [], "val_qwk": [],
               "best_epoch": 0, "stopped": "no trainable weights"}
    if not head.trainable_weights:
        return history
    set_seed(random_state)
    if trainer.optimizer == "lbfgs":
        objective = head_objective_function(head, x_train, y_train, trainer)
        theta, history = _lbfgs_candidate(objective, objective.theta(), x_val, y_val, trainer,
                                          penalty)
        objective.assign(theta)
        return history
    optimizer = (keras().optimizers.SGD(trainer.learning_rate, momentum=0.9, nesterov=True)
                 if trainer.optimizer == "sgd" else keras().optimizers.Adam(trainer.learning_rate))
    variables = head.trainable_weights
    objective = _objective(head, x_train, y_train, trainer, penalty)
    per_row = _per_row_loss(trainer.loss, trainer.focal_gamma)

    @T.function
    def step():
        with T.GradientTape() as tape:
            value = objective()
        optimizer.apply_gradients(zip(tape.gradient(value, variables), variables))
        return value

    use_val = trainer.monitor != "none" and x_val is not None and len(y_val) > 0
    if use_val:
        xv = [T.constant(np.asarray(x, dtype="float32")) for x in x_val]
        y_val = np.asarray(y_val, dtype=int)
        yv = T.constant(np.eye(3, dtype="float32")[y_val])
    best_score, best_weights, best_epoch = np.inf, head.get_weights(), 0
    previous_loss = np.inf
    history["stopped"] = "max_epochs"
    # Epoch 0 is the untrained start, so "best = start" is detectable (the old study's trap).
    for epoch in range(0, trainer.max_epochs + 1):
        train_loss = float(step()) if epoch else np.nan
        if epoch % trainer.eval_every and epoch != trainer.max_epochs:
            continue
        history["epoch"].append(epoch)
        history["train_loss"].append(train_loss)
        if use_val:
            proba = head(xv, training=False)
            rows = np.asarray(per_row(yv, proba))
            val_loss = float(rows.mean())
            val_qwk = qwk(y_val, np.asarray(proba).argmax(axis=1))
            history["val_loss"].append(val_loss)
            history["val_qwk"].append(val_qwk)
            score = val_loss if trainer.monitor == "val_loss" else -val_qwk
            if score < best_score - 1e-9:
                best_score, best_weights, best_epoch = score, head.get_weights(), epoch
                # Per-row validation losses of the restored epoch: the one-standard-error rule
                # compares candidates on the same rows (see one_standard_error_choice).
                history["val_row_loss"] = rows.astype(float).tolist()
            elif epoch - best_epoch >= trainer.patience:
                history["stopped"] = "early_stopping"
                break
        elif epoch:
            best_weights, best_epoch = head.get_weights(), epoch
            if abs(previous_loss - train_loss) < trainer.tolerance * max(1.0, abs(train_loss)):
                history["stopped"] = "converged"
                break
            previous_loss = train_loss
    head.set_weights(best_weights)
    history["best_epoch"] = best_epoch
    history["train_objective"] = float(objective())  # of the restored weights
    if use_val and best_epoch == 0:
        logger.warning("fusion head: no step improved the validation %s on its start; the "
                       "untrained start is kept", trainer.monitor)
    return history


def fit_head_converged(head, x_train: list, y_train, trainer: HeadSettings | None = None,
                       penalty: float = 0.0, max_iter: int = 2000, tol: float = 1e-10) -> dict:
    """Minimise the head's training objective to convergence, without early stopping.

    The same objective as :func:`fit_head` (class weighting and the kernel penalty of
    ``trainer`` included), minimised by L-BFGS over all trainable weights, starting from the
    head's current weights (the machinery of ``optimizer: lbfgs``, with tighter tolerances).
    It answers "what weighting does this head converge to at this penalty?", beside an
    early-stopped head. For ``trainable`` (a convex problem) the result is the optimum
    whatever the start. Returns the objective before and after, iterations and whether it
    converged.
    """
    trainer = trainer or HeadSettings()
    if not head.trainable_weights:
        return {"train_objective": None, "iterations": 0, "converged": True}
    objective = head_objective_function(head, x_train, y_train, trainer)
    fit = _lbfgs(objective, float(penalty), max_iter, tol, 1e-7)
    objective.assign(fit["theta"])
    # A float32 objective often ends L-BFGS on a line-search failure at the optimum; the
    # gradient norm says whether it is one.
    return {"train_objective": fit["train_objective"], "start_objective": fit["start_objective"],
            "iterations": fit["iterations"], "grad_max": fit["grad_max"],
            "converged": bool(not fit["max_iter"] or fit["grad_max"] < 1e-4)}


def head_objective(head, x_train: list, y_train, trainer: HeadSettings | None = None,
                   penalty: float = 0.0) -> float:
    """The training objective of :func:`fit_head` (weighted loss + penalty) at the head's weights."""
    return float(_objective(head, x_train, y_train, trainer or HeadSettings(), penalty)())


def one_standard_error_choice(strengths, val_row_loss, groups, rule: str = "one_se") -> tuple:
    """The penalty strength chosen from validation losses of several candidates.

    ``val_row_loss[k]`` holds candidate ``k``'s per-row validation losses, all on the
    same rows, whose patients are ``groups``. ``rule="min"`` takes the lowest mean loss.
    ``rule="one_se"`` takes the strongest penalty whose mean loss exceeds the best one by
    at most one standard error *of that difference*: the rows are shared, so the noise
    that matters is that of the paired per-row difference, and visits of one patient are
    not independent, so the SE is clustered by patient::

        d_p = sum over rows of patient p of (loss_k - loss_best)
        mean = sum_p d_p / n_rows
        SE = sqrt(P / (P - 1) * sum_p (d_p - n_p * mean)^2) / n_rows

    Returns ``(chosen strength, {strength: (mean difference to the best, its SE)})``.
    """
    strengths = [float(s) for s in strengths]
    losses = [np.asarray(v, dtype=float) for v in val_row_loss]
    if len(strengths) != len(losses) or not strengths:
        raise ValueError(f"need one loss vector per strength, got {len(strengths)} strengths "
                         f"and {len(losses)} loss vectors")
    means = [v.mean() for v in losses]
    best = int(np.argmin(means))
    if rule == "min":
        return strengths[best], {s: (float(m - means[best]), 0.0) for s, m in zip(strengths, means)}
    if rule != "one_se":
        raise ValueError(f"rule must be 'one_se' or 'min', got {rule!r}")
    patients, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_rows, n_pat = len(inverse), len(patients)
    per_patient_rows = np.bincount(inverse, minlength=n_pat).astype(float)
    table = {}
    for s, v in zip(strengths, losses):
        if len(v) != n_rows:
            raise ValueError(f"loss vector of strength {s} has {len(v)} rows, groups has {n_rows}")
        diff = v - losses[best]
        mean = diff.sum() / n_rows
        d_p = np.bincount(inverse, weights=diff, minlength=n_pat)
        se = (np.sqrt(n_pat / (n_pat - 1) * np.sum((d_p - per_patient_rows * mean) ** 2)) / n_rows
              if n_pat > 1 else 0.0)
        table[s] = (float(mean), float(se))
    chosen = max(s for s in strengths if table[s][0] <= table[s][1] + 1e-12)
    return chosen, table


def head_log_loss(head, x: list, y) -> float:
    """Mean cross-entropy of a head's probabilities (for the optimum check)."""
    proba = np.clip(np.asarray(head([np.asarray(a, dtype="float32") for a in x], training=False),
                               dtype=float), 1e-12, 1)
    return float(-np.mean(np.log(proba[np.arange(len(y)), np.asarray(y, dtype=int)])))


def fit_head_with_penalty_search(settings: HeadSettings, data, new_head, seed: int):
    """Fit one head per candidate penalty; keep the one the penalty rule chooses.

    The penalty is chosen on the inner-validation patients (with ``sgd``/``adam`` like the
    stopping epoch; with ``lbfgs`` each candidate is fitted to its penalised optimum first).
    ``one_se`` takes the strongest penalty whose validation loss is within one standard
    error of the best (the SE of the paired, patient-clustered difference,
    :func:`one_standard_error_choice`): smaller differences are noise,
    and the stronger penalty is the one that does not fit noise in an uninformative branch.
    ``min`` takes the best. Returns ``(head, history)``; ``history['penalty_table']`` holds
    each candidate's validation-loss difference to the best and its SE.
    """
    from .models import fusion_parameter_count

    head = new_head()
    candidates = sorted(set(settings.penalty)) if fusion_parameter_count(head) else [0.0]
    fitted = []
    if settings.optimizer == "lbfgs" and head.trainable_weights:
        # All candidates together on one head: each starts from the same seeded weights (what
        # a new head would hold); the chosen optimum is written back into it.
        fitted = fit_penalty_candidates(head, data.x_fit, data.y_fit, data.x_val, data.y_val,
                                        settings, candidates, random_state=seed)
    else:
        for strength in candidates:
            candidate = new_head() if fitted else head
            history = fit_head(candidate, data.x_fit, data.y_fit, data.x_val, data.y_val,
                               settings, strength, random_state=seed)
            fitted.append((strength, candidate, history))
    losses = [h.get("val_row_loss") for _, _, h in fitted]
    if settings.monitor == "val_loss" and all(v is not None for v in losses):
        chosen, table = one_standard_error_choice(candidates, losses, data.groups_val,
                                                  settings.penalty_rule)
    else:  # no validation losses to compare (monitor none or val_qwk): the selection score
        scores = [_selection_score(h, settings.monitor) for _, _, h in fitted]
        chosen, table = candidates[int(np.argmin(scores))], {}
    _, kept, history = next(f for f in fitted if f[0] == chosen)
    if settings.optimizer == "lbfgs" and head.trainable_weights:
        set_head_theta(head, kept)
    else:
        head = kept
    history["penalty"] = chosen
    history["penalty_table"] = {str(k): list(v) for k, v in table.items()}
    return head, history


def _selection_score(history: dict, monitor: str) -> float:
    """Lower is better: the restored epoch's validation loss (or minus its QWK)."""
    if monitor == "none" or not history["val_loss"]:
        return 0.0
    i = history["epoch"].index(history["best_epoch"])
    return history["val_loss"][i] if monitor == "val_loss" else -history["val_qwk"][i]
