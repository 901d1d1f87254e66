"""Section ``head`` of a parameters file: how the fusion head is fitted (no TensorFlow)."""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import Field, field_validator

from ..settings import Settings, choice, fail

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

    loss: Annotated[str, choice(LOSSES)] = Field("cross_entropy", description=(
        "fusion-head loss: `cross_entropy` or `focal`"))
    focal_gamma: float = Field(2.0, ge=0, description="focusing parameter of the focal loss")
    class_weight: Annotated[Optional[str], choice((None, "balanced"))] = Field(None, description=(
        "class weighting of the head's loss: null or `balanced`"))
    optimizer: Annotated[str, choice(OPTIMIZERS)] = Field("lbfgs", description=(
        "optimiser of the head: `lbfgs` (penalised objective minimised to convergence, no early "
        "stopping), or the early-stopped full-batch `sgd` (Nesterov momentum) or `adam`"))
    learning_rate: float = Field(1.0, gt=0, description="learning rate of `sgd` and `adam`")
    max_epochs: int = Field(3000, ge=1, description="full-batch steps (`sgd`, `adam`) or L-BFGS "
                            "iterations (`lbfgs`) at most")
    patience: int = Field(300, ge=1, description="early stopping on the inner-validation patients "
                          "(`sgd`, `adam`)")
    eval_every: int = Field(10, ge=1, description="steps between two validation checks (`sgd`, "
                            "`adam`)")
    monitor: Annotated[str, choice(MONITORS)] = Field("val_loss", description=(
        "validation signal that chooses the penalty (and early-stops `sgd`/`adam`): `val_loss`, "
        "`val_qwk` or `none`"))
    penalty: list[float] = Field([0.0, 0.003, 0.01, 0.03], description=(
        "candidate penalty strengths on the head's Dense kernels; one is chosen per fold on the "
        "inner-validation patients"))
    penalty_kind: Annotated[str, choice(PENALTIES)] = Field("group", description=(
        "`group` (norm of each modality's block of kernel rows) or `l2` (ridge)"))
    penalty_rule: Annotated[str, choice(PENALTY_RULES)] = Field("one_se", description=(
        "`one_se`: strongest penalty whose validation loss exceeds the best by at most one "
        "standard error of the paired, patient-clustered difference; `min`: the best"))
    tolerance: float = Field(1e-7, gt=0, description="relative change of the training objective "
                             "that counts as converged (`lbfgs`; `sgd`/`adam` with monitor `none`)")

    @field_validator("penalty")
    @classmethod
    def _penalty(cls, value):
        if not value or any(v < 0 for v in value):
            fail(f"must be a non-empty list of numbers >= 0, got {value}")
        return value
