"""Training: the image CNN, and the fusion head on cached branch probabilities.

The fusion head is tiny (tens of parameters) and its inputs are cached
probabilities, so it is trained full-batch in a compiled loop rather than with
``model.fit``: thousands of steps take about a second, which is what lets the
head actually reach its optimum (Dense(6->3, softmax) under cross-entropy is
multinomial logistic regression, a convex problem) instead of stopping near
its random start. Early stopping watches the inner-validation patients only,
restores the best weights, and warns when the best step is the first one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from ._tf import keras, set_seed, tf
from .metrics import qwk

logger = logging.getLogger("fusionlib")

LOSSES = ("cross_entropy", "focal")
PENALTIES = ("group", "l2")
OPTIMIZERS = ("sgd", "adam")
MONITORS = ("val_loss", "val_qwk", "none")


def class_weights(y, n_classes: int = 3) -> np.ndarray:
    """'balanced' class weights n / (k * count_c); absent classes get weight 0."""
    counts = np.bincount(np.asarray(y, dtype=int), minlength=n_classes).astype(float)
    return np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)


@dataclass
class HeadTrainer:
    """How a fusion head is fitted on cached probabilities.

    Parameters
    ----------
    loss : {"cross_entropy", "focal"}
        Default cross-entropy, the loss under which the ``trainable`` head is
        logistic regression. Focal loss (``focal_gamma``) down-weights easy rows.
    class_weight : {None, "balanced"}
        Default None: the head learns the mix, not a re-balancing.
    optimizer, learning_rate, max_epochs :
        Full batch; one epoch is one step over all training rows. The default is
        gradient descent with Nesterov momentum: it moves each weight in
        proportion to its gradient, so weights on an uninformative modality stay
        near zero while informative ones grow. Adam normalises every coordinate
        to a similar step, which lets noise directions grow as fast as signal
        ones early on (and early stopping then freezes that noise).
    monitor : {"val_loss", "val_qwk", "none"}
        Early-stopping signal on the inner-validation rows (default: log-loss,
        which is smooth, unlike QWK that is flat around a near-uniform start).
        "none" trains for ``max_epochs`` or until the training loss stops moving.
    patience, eval_every :
        Stop after ``patience`` epochs without improvement, checking every
        ``eval_every`` epochs.
    penalty, penalty_kind :
        Strength and kind of the penalty on the Dense kernels (0 = none: the
        head is then plain multinomial logistic regression). ``"group"`` adds
        ``penalty * sum_m ||W_m||_F`` over each modality's block of input rows,
        which can switch a whole uninformative modality off while shrinking an
        informative block only by a constant; ``"l2"`` adds ``penalty * ||W||^2``,
        which shrinks every weight in proportion. Other kernels get the L2 form.
    """

    loss: str = "cross_entropy"
    focal_gamma: float = 2.0
    class_weight: str | None = None
    optimizer: str = "sgd"
    learning_rate: float = 1.0
    max_epochs: int = 3000
    patience: int = 300
    eval_every: int = 10
    monitor: str = "val_loss"
    penalty: float = 0.0
    penalty_kind: str = "group"
    tolerance: float = 1e-7

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, got {self.monitor!r}")
        if self.penalty_kind not in PENALTIES:
            raise ValueError(f"penalty_kind must be one of {PENALTIES}, got {self.penalty_kind!r}")
        if self.penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {self.penalty!r}")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")
        for name in ("max_epochs", "patience", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    def settings(self) -> dict:
        return asdict(self)


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


def _objective(head, x_train: list, y_train, trainer: HeadTrainer):
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
    strength, group = float(trainer.penalty), trainer.penalty_kind == "group"

    def value():
        out = T.reduce_sum(wt * per_row(yt, head(xs, training=True))) / T.reduce_sum(wt)
        if strength and kernels:
            out += strength * T.add_n([_kernel_penalty(k, len(xs), group) for k in kernels])
        return out

    return value


def fit_head(head, x_train: list, y_train, x_val: list | None = None, y_val=None,
             trainer: HeadTrainer | None = None, random_state: int = 0) -> dict:
    """Fit a fusion head full-batch; returns its history (losses, best epoch, stop reason).

    ``x_train``/``x_val`` are lists of (n, 3) probability arrays in the head's
    input order. A head without trainable weights (``fixed``) is returned as is.
    """
    trainer = trainer or HeadTrainer()
    T = tf()
    history = {"epoch": [], "train_loss": [], "val_loss": [], "val_qwk": [],
               "best_epoch": 0, "stopped": "no trainable weights"}
    if not head.trainable_weights:
        return history
    set_seed(random_state)
    optimizer = (keras().optimizers.SGD(trainer.learning_rate, momentum=0.9, nesterov=True)
                 if trainer.optimizer == "sgd" else keras().optimizers.Adam(trainer.learning_rate))
    variables = head.trainable_weights
    objective = _objective(head, x_train, y_train, trainer)
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


def fit_head_converged(head, x_train: list, y_train, trainer: HeadTrainer | None = None,
                       max_iter: int = 2000, tol: float = 1e-10) -> dict:
    """Minimise the head's training objective to convergence, without early stopping.

    The same objective as :func:`fit_head` (class weighting and the kernel penalty of
    ``trainer`` included), minimised by L-BFGS over all trainable weights, starting from the
    head's current weights. It answers "what weighting does this head converge to at this
    penalty?", beside the early-stopped head that is deployed. For ``trainable`` (a convex
    problem) the result is the optimum whatever the start. Returns the objective before and
    after, iterations and scipy's convergence flag.
    """
    from scipy.optimize import minimize

    trainer = trainer or HeadTrainer()
    T = tf()
    variables = head.trainable_weights
    if not variables:
        return {"train_objective": None, "iterations": 0, "converged": True}
    objective = _objective(head, x_train, y_train, trainer)
    shapes = [tuple(v.shape) for v in variables]
    sizes = [int(np.prod(shape)) for shape in shapes]

    @T.function
    def value_and_grad():
        with T.GradientTape() as tape:
            value = objective()
        return value, tape.gradient(value, variables)

    def assign(theta):
        for v, part, shape in zip(variables, np.split(theta, np.cumsum(sizes)[:-1]), shapes):
            v.assign(part.reshape(shape).astype("float32"))

    def fun(theta):
        assign(theta)
        value, grads = value_and_grad()
        # float64 for scipy; the objective itself is evaluated in float32 like the training loop.
        return float(value), np.concatenate([np.asarray(g, dtype="float64").ravel() for g in grads])

    theta0 = np.concatenate([np.asarray(v, dtype="float64").ravel() for v in variables])
    before = fun(theta0)[0]
    result = minimize(fun, theta0, jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "ftol": tol, "gtol": 1e-7})
    best = result.x if result.fun <= before else theta0
    value, grad = fun(best)
    # float32 objectives often end L-BFGS on a line-search failure at the optimum; the
    # gradient norm says whether it is one.
    return {"train_objective": value, "start_objective": float(before),
            "iterations": int(result.nit), "grad_max": float(np.abs(grad).max()),
            "converged": bool(result.success or np.abs(grad).max() < 1e-4)}


def head_objective(head, x_train: list, y_train, trainer: HeadTrainer | None = None) -> float:
    """The training objective of :func:`fit_head` (weighted loss + penalty) at the head's weights."""
    return float(_objective(head, x_train, y_train, trainer or HeadTrainer())())


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


# --------------------------------------------------------------------------- image CNN


class _CaseQWKStopping:
    """Early stopping on inner-validation QWK at case level, restoring the best weights."""

    def __init__(self, images, image_case, y, val_rows, patience, batch_size):
        from .branches import case_probabilities

        self.score = lambda model: (qwk(y[val_rows], np.nan_to_num(case_probabilities(
            model, images, image_case, val_rows, batch_size)).argmax(axis=1)),
            -_case_loss(model, images, image_case, y, val_rows, batch_size))
        self.patience = patience

    def callback(self):
        outer = self

        class Callback(keras().callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.best, self.best_epoch, self.weights, self.scores = None, -1, None, []

            def on_epoch_end(self, epoch, logs=None):
                score = outer.score(self.model)  # (QWK, -loss): loss breaks QWK ties
                self.scores.append(score[0])
                if self.best is None or score > self.best:
                    self.best, self.best_epoch, self.weights = score, epoch, self.model.get_weights()
                elif epoch - self.best_epoch >= outer.patience:
                    self.model.stop_training = True

            def on_train_end(self, logs=None):
                if self.weights is not None:
                    self.model.set_weights(self.weights)

        return Callback()


def _case_loss(model, images, image_case, y, rows, batch_size):
    from .branches import case_probabilities

    proba = case_probabilities(model, images, image_case, rows, batch_size)
    ok = ~np.isnan(proba).any(axis=1)
    if not ok.any():
        return 0.0
    picked = np.clip(proba[ok, y[rows][ok]], 1e-7, 1)
    return float(-np.mean(np.log(picked)))


def train_image_classifier(config, images, image_case, y, fit_rows, val_rows, random_state=0):
    """Train one CNN on the images of ``fit_rows`` cases; early stopping on ``val_rows`` cases.

    ``config`` is an :class:`fusionlib.branches.ImageBranch` (size, backbone,
    epochs, ...). Returns ``(model, history)``; ``history['val_qwk']`` holds the
    validation QWK per epoch and ``history['best_epoch']`` the restored one.
    """
    from .models import build_image_branch
    from .splits import resample_training_rows

    set_seed(random_state)
    y = np.asarray(y, dtype=int)
    fit_rows = np.asarray(fit_rows)
    # Resample at case level, then take every image of each drawn case.
    drawn = fit_rows[resample_training_rows(y[fit_rows], config.sampling, random_state)]
    image_rows = [np.flatnonzero(image_case == case) for case in drawn]
    idx = np.concatenate(image_rows) if image_rows else np.array([], dtype=int)
    if len(idx) == 0:
        raise ValueError(f"no {config.modality} images among the training cases")
    x, t = images[idx], y[image_case[idx]]
    if config.augment:  # mirrored copies: deterministic augmentation, no extra randomness
        x, t = np.concatenate([x, x[:, :, ::-1, :]]), np.concatenate([t, t])
    model = build_image_branch(config.modality, images.shape[1:], backbone=config.backbone,
                               weights=config.backbone_weights, random_state=random_state)
    for layer in model.layers:  # standardise with training-image statistics only
        if isinstance(layer, keras().layers.Normalization):
            layer.adapt(x)
    model.compile(optimizer=keras().optimizers.Adam(config.learning_rate),
                  loss="sparse_categorical_crossentropy")
    stopper = _CaseQWKStopping(images, image_case, y, np.asarray(val_rows), config.patience,
                               config.batch_size).callback()
    model.fit(x, t, epochs=config.epochs, batch_size=config.batch_size, shuffle=True,
              verbose=0, callbacks=[stopper])
    history = {"val_qwk": [float(s) for s in stopper.scores], "best_epoch": stopper.best_epoch + 1,
               "best_val_qwk": float(stopper.best[0]) if stopper.best else 0.0,
               "epochs_run": len(stopper.scores)}
    return model, history


# --------------------------------------------------------------------------- Stage 2


def build_end_to_end(head, cnn_models, image_shape, image_modality: str):
    """Functional model: (RF probabilities, image) -> each inner CNN -> the fusion head -> mean.

    The inner CNNs are cloned with their weights, so fine-tuning never changes
    the cached Stage-1 models.
    """
    k = keras()
    p_meta = k.Input(shape=(3,), name="metadata_input")
    image = k.Input(shape=tuple(image_shape), name=f"{image_modality}_input")
    clones = []
    for i, model in enumerate(cnn_models):
        clone = k.models.clone_model(model)
        clone.set_weights(model.get_weights())
        clone.name = f"{image_modality}_cnn{i}"
        clones.append(clone(image))
    head_copy = k.models.clone_model(head)
    head_copy.set_weights(head.get_weights())
    # Each CNN's probabilities go through the (shared) head, then the fused outputs are
    # averaged: the same rule as Stage 1's test-time fusion (experiment.fuse_per_model).
    fused = [head_copy([p_meta, p]) for p in clones]
    fused = fused[0] if len(fused) == 1 else k.layers.Average(name="fused_ensemble")(fused)
    return k.Model([p_meta, image], fused, name="end_to_end"), head_copy


def fine_tune_end_to_end(head, cnn_models, images, image_case, meta_proba: dict, y, fit_rows, val_rows,
                         image_modality: str, epochs: int = 10, learning_rate: float = 1e-4,
                         batch_size: int = 32, random_state: int = 0):
    """Stage 2: fine-tune CNNs and fusion head together at a low learning rate.

    ``meta_proba`` maps a case position to its (out-of-fold) RF probabilities.
    Every image of a fit case is one training row. Returns the end-to-end model,
    its fused head, and case-level validation QWK per epoch (epoch 0 = Stage 1),
    so the caller keeps Stage 2 only if validation QWK improves.
    """
    set_seed(random_state)
    y = np.asarray(y, dtype=int)
    model, fused_head = build_end_to_end(head, cnn_models, images.shape[1:], image_modality)

    def rows_of(cases):
        keep = np.isin(image_case, [c for c in cases if c in meta_proba])
        idx = np.flatnonzero(keep)
        return idx, np.stack([meta_proba[c] for c in image_case[idx]]).astype("float32")

    fit_idx, fit_meta = rows_of(fit_rows)
    val_idx, val_meta = rows_of(val_rows)

    def val_qwk():
        if not len(val_idx):
            return 0.0
        proba = np.asarray(model([val_meta, images[val_idx]], training=False))
        cases = image_case[val_idx]
        order = np.unique(cases)
        mean = np.stack([proba[cases == c].mean(axis=0) for c in order])
        return qwk(y[order], mean.argmax(axis=1))

    model.compile(optimizer=keras().optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")
    scores, best, best_weights = [val_qwk()], 0, model.get_weights()
    for epoch in range(1, epochs + 1):
        model.fit([fit_meta, images[fit_idx]], y[image_case[fit_idx]], epochs=1, batch_size=batch_size,
                  shuffle=True, verbose=0)
        scores.append(val_qwk())
        if scores[-1] > scores[best]:
            best, best_weights = epoch, model.get_weights()
    model.set_weights(best_weights)
    return model, fused_head, {"val_qwk": scores, "best_epoch": best}
