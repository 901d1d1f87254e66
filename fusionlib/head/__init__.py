"""The fusion head: fitting it on cached probabilities, and choosing its penalty.

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

Layout, each module building only on those before it: :mod:`.settings` (section ``head``,
:class:`HeadSettings`; no TensorFlow), :mod:`.objective` (the penalised training objective,
NumPy or TensorFlow), :mod:`.optimisers` (L-BFGS to the optimum, the early-stopped
``sgd``/``adam`` loops), :mod:`.penalty` (the penalty candidates and the one-SE choice).
"""

from .objective import (class_weights, head_log_loss, head_objective, head_objective_function,
                        per_row_loss_numpy, set_head_theta)
from .optimisers import fit_head, fit_head_converged, fit_penalty_candidates, one_blas_thread
from .penalty import fit_head_with_penalty_search, one_standard_error_choice
from .settings import LOSSES, MONITORS, OPTIMIZERS, PENALTIES, PENALTY_RULES, HeadSettings

__all__ = ["LOSSES", "MONITORS", "OPTIMIZERS", "PENALTIES", "PENALTY_RULES", "HeadSettings",
           "class_weights", "fit_head", "fit_head_converged", "fit_head_with_penalty_search",
           "fit_penalty_candidates", "head_log_loss", "head_objective", "head_objective_function",
           "one_blas_thread", "one_standard_error_choice", "per_row_loss_numpy", "set_head_theta"]
