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
from .head_objectives import (_lbfgs, _lbfgs_candidate, _objective, _per_row_loss,
                              fit_penalty_candidates, head_objective_function, set_head_theta)

logger = logging.getLogger("fusionlib")

LOSSES = ("cross_entropy", "focal")
PENALTIES = ("group", "l2")
OPTIMIZERS = ("lbfgs", "sgd", "adam")
MONITORS = ("val_loss", "val_qwk", "none")
PENALTY_RULES = ("one_se", "min")


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
