"""Fitting the fusion head: L-BFGS to its penalised optimum, or the early-stopped full-batch loops."""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import ThreadpoolController

from .._tf import keras, set_seed, tf
from ..metrics import qwk
from .objective import training_objective, per_row_loss, head_objective_function, per_row_loss_numpy
from .settings import HeadSettings

logger = logging.getLogger("fusionlib")


_BLAS = []


def one_blas_thread():
    """A context with BLAS limited to one thread: L-BFGS-B calls BLAS on vectors of tens to
    hundreds of entries, where threads only add contention (on 2 busy cores a multi-threaded
    BLAS made each iteration ~200x slower)."""
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def _setulb():
    """scipy's L-BFGS-B step routine ``scipy.optimize._lbfgsb.setulb`` with the message tables,
    where this scipy drives it as :func:`_run_lbfgsb` does (its C version, scipy 1.15 to 1.17),
    else None."""
    import scipy

    try:
        major, minor = (int(part) for part in scipy.__version__.split(".")[:2])
        from scipy.optimize import _lbfgsb
        from scipy.optimize._lbfgsb_py import status_messages, task_messages
    except (ImportError, ValueError):  # pragma: no cover - another scipy layout
        return None
    if (major, minor) < (1, 15) or (major, minor) >= (1, 18):  # pragma: no cover
        return None
    return _lbfgsb.setulb, status_messages, task_messages


def _run_lbfgsb(objective, theta0, penalty: float, max_iter: int, ftol: float,
                gtol: float) -> tuple:
    """``scipy.optimize.minimize(objective, theta0, args=(penalty,), jac=True,
    method="L-BFGS-B", options={"maxiter": max_iter, "ftol": ftol, "gtol": gtol})`` as
    ``(x, fun, jac, nit, message)``.

    The same iterations: scipy's own L-BFGS-B routine driven exactly as ``minimize`` drives it
    (its defaults: 10 corrections, 20 line-search steps, 15000 evaluations at most), without
    ``minimize``'s per-evaluation wrappers (copies, memoisation and checks of ``x``, thousands
    of times per fold); the result is the same, bit for bit (``tests/test_head.py``). Other
    scipy versions go through ``minimize``.
    """
    routine = _setulb()
    if routine is None:  # pragma: no cover - scipy outside the versions above
        result = minimize(objective, theta0, args=(penalty,), jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter, "ftol": ftol, "gtol": gtol})
        return result.x, result.fun, result.jac, result.nit, result.message
    setulb, status_messages, task_messages = routine
    m, maxls, maxfun = 10, 20, 15000
    x = np.array(np.asarray(theta0).ravel(), dtype=np.float64)
    n = x.size
    bound_kind, lower, upper = np.zeros(n, np.int32), np.zeros(n), np.zeros(n)  # unbounded
    f, g = np.array(0.0), np.zeros(n)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m)
    iwa = np.zeros(3 * n, np.int32)
    task, ln_task, lsave = np.zeros(2, np.int32), np.zeros(2, np.int32), np.zeros(4, np.int32)
    isave, dsave = np.zeros(44, np.int32), np.zeros(29)
    factr = ftol / np.finfo(float).eps
    iterations = evaluations = 0
    while True:
        g = g.astype(np.float64)
        setulb(m, x, lower, upper, bound_kind, f, g, factr, gtol, wa, iwa, task, lsave, isave,
               dsave, maxls, ln_task)
        if task[0] == 3:      # FG: evaluate at x
            f, g = objective(x.copy(), penalty)
            evaluations += 1
        elif task[0] == 1:    # NEW_X: an iteration done
            iterations += 1
            if iterations >= max_iter:
                task[0], task[1] = 5, 504
            elif evaluations > maxfun:
                task[0], task[1] = 5, 502
        else:
            break
    return x, f, g, iterations, status_messages[task[0]] + ": " + task_messages[task[1]]


def _lbfgs(objective, penalty: float, max_iter: int, ftol: float, gtol: float,
           theta0: np.ndarray | None = None) -> dict:
    """Minimise ``objective`` from ``theta0`` (default: the head's current weights); the head
    itself is not written (``objective.assign(result["theta"])`` does that)."""
    theta0 = objective.theta() if theta0 is None else theta0
    with one_blas_thread():
        start, _ = objective(theta0, penalty)
        x, fun, jac, nit, message = _run_lbfgsb(objective, theta0, penalty, max_iter, ftol, gtol)
    moved = bool(np.isfinite(fun) and fun <= start and nit > 0)
    theta = x if moved else theta0
    value, grad = (float(fun), jac) if moved else objective(theta0, penalty)
    return {"theta": theta, "train_objective": float(value), "start_objective": float(start),
            "iterations": int(nit) if moved else 0, "grad_max": float(np.abs(grad).max()),
            "max_iter": bool(nit >= max_iter), "message": str(message)}


def _lbfgs_candidate(objective, theta0, x_val, y_val, settings: HeadSettings,
                     penalty: float) -> tuple[np.ndarray, dict]:
    """One penalty candidate with ``optimizer: lbfgs``: the penalised optimum from ``theta0``,
    then its validation scores. Returns ``(theta, history)``; the head is not written."""
    fit = _lbfgs(objective, float(penalty), settings.max_epochs, settings.tolerance, 1e-6, theta0)
    iterations = fit["iterations"]
    history = {"optimizer": "lbfgs", "epoch": [iterations], "train_loss": [fit["train_objective"]],
               "val_loss": [], "val_qwk": [], "best_epoch": iterations,
               "stopped": "max_iter" if fit["max_iter"] else "converged",
               "train_objective": fit["train_objective"],
               "start_objective": fit["start_objective"], "grad_max": fit["grad_max"],
               "penalty": float(penalty)}
    if settings.monitor != "none" and x_val is not None and len(y_val) > 0:
        y_val = np.asarray(y_val, dtype=int)
        proba = objective.val_proba(fit["theta"], x_val)
        rows = per_row_loss_numpy(y_val, proba, settings.loss, settings.focal_gamma)
        history["val_loss"].append(float(rows.mean()))
        history["val_qwk"].append(qwk(y_val, proba.argmax(axis=1)))
        history["val_row_loss"] = rows.tolist()
    if iterations == 0:
        logger.warning("fusion head: L-BFGS did not move the head from its start (%s)",
                       fit["message"])
    return fit["theta"], history


def fit_penalty_candidates(head, x_train: list, y_train, x_val, y_val, settings: HeadSettings,
                           penalties, random_state: int = 0) -> list[tuple]:
    """Every penalty candidate fitted together with ``optimizer: lbfgs``: one objective (data
    prepared once), each candidate minimised from the head's current (seeded) weights.
    Returns ``[(penalty, theta, history)]``; the head keeps its weights (write the chosen
    ``theta`` with :func:`set_head_theta`)."""
    set_seed(random_state)
    objective = head_objective_function(head, x_train, y_train, settings)
    theta0 = objective.theta()
    return [(float(p), *_lbfgs_candidate(objective, theta0, x_val, y_val, settings, p))
            for p in penalties]


def fit_head(head, x_train: list, y_train, x_val: list | None = None, y_val=None,
             settings: HeadSettings | None = None, penalty: float = 0.0,
             random_state: int = 0) -> dict:
    """Fit a fusion head full-batch; returns its history (losses, best epoch, stop reason).

    ``x_train``/``x_val`` are lists of (n, 3) probability arrays in the head's
    input order; ``penalty`` is one strength of the kind ``settings.penalty_kind``. A head
    without trainable weights (``fixed``) is returned as is.

    ``optimizer: lbfgs`` (default) minimises the penalised objective to convergence from the
    head's current weights (no early stopping); the history then holds one entry: ``epoch`` and
    ``best_epoch`` are the L-BFGS iterations (0: the head did not move), ``stopped`` is
    ``"converged"`` or ``"max_iter"``, and with a monitor the final validation loss, QWK and
    per-row losses. ``sgd``/``adam`` run the early-stopped loop, best epoch restored.
    """
    settings = settings or HeadSettings()
    T = tf()
    history = {"epoch": [], "train_loss": [], "val_loss": [], "val_qwk": [],
               "best_epoch": 0, "stopped": "no trainable weights"}
    if not head.trainable_weights:
        return history
    set_seed(random_state)
    if settings.optimizer == "lbfgs":
        objective = head_objective_function(head, x_train, y_train, settings)
        theta, history = _lbfgs_candidate(objective, objective.theta(), x_val, y_val, settings,
                                          penalty)
        objective.assign(theta)
        return history
    rate = settings.learning_rate
    optimizer = (keras().optimizers.SGD(rate, momentum=0.9, nesterov=True)
                 if settings.optimizer == "sgd" else keras().optimizers.Adam(rate))
    variables = head.trainable_weights
    objective = training_objective(head, x_train, y_train, settings, penalty)
    per_row = per_row_loss(settings.loss, settings.focal_gamma)

    @T.function
    def step():
        with T.GradientTape() as tape:
            value = objective()
        optimizer.apply_gradients(zip(tape.gradient(value, variables), variables))
        return value

    use_val = settings.monitor != "none" and x_val is not None and len(y_val) > 0
    if use_val:
        xv = [T.constant(np.asarray(x, dtype="float32")) for x in x_val]
        y_val = np.asarray(y_val, dtype=int)
        yv = T.constant(np.eye(3, dtype="float32")[y_val])
    best_score, best_weights, best_epoch = np.inf, head.get_weights(), 0
    previous_loss = np.inf
    history["stopped"] = "max_epochs"
    # Epoch 0 is the untrained start, so "best = start" is detectable (the old study's trap).
    for epoch in range(0, settings.max_epochs + 1):
        train_loss = float(step()) if epoch else np.nan
        if epoch % settings.eval_every and epoch != settings.max_epochs:
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
            score = val_loss if settings.monitor == "val_loss" else -val_qwk
            if score < best_score - 1e-9:
                best_score, best_weights, best_epoch = score, head.get_weights(), epoch
                # Per-row validation losses of the restored epoch: the one-standard-error rule
                # compares candidates on the same rows (see one_standard_error_choice).
                history["val_row_loss"] = rows.astype(float).tolist()
            elif epoch - best_epoch >= settings.patience:
                history["stopped"] = "early_stopping"
                break
        elif epoch:
            best_weights, best_epoch = head.get_weights(), epoch
            if abs(previous_loss - train_loss) < settings.tolerance * max(1.0, abs(train_loss)):
                history["stopped"] = "converged"
                break
            previous_loss = train_loss
    head.set_weights(best_weights)
    history["best_epoch"] = best_epoch
    history["train_objective"] = float(objective())  # of the restored weights
    if use_val and best_epoch == 0:
        logger.warning("fusion head: no step improved the validation %s on its start; the "
                       "untrained start is kept", settings.monitor)
    return history


def fit_head_converged(head, x_train: list, y_train, settings: HeadSettings | None = None,
                       penalty: float = 0.0, max_iter: int = 2000, tol: float = 1e-10) -> dict:
    """Minimise the head's training objective to convergence, without early stopping.

    The same objective as :func:`fit_head` (class weighting and the kernel penalty of
    ``settings`` included), minimised by L-BFGS over all trainable weights, starting from the
    head's current weights (the machinery of ``optimizer: lbfgs``, with tighter tolerances).
    It answers "what weighting does this head converge to at this penalty?", beside an
    early-stopped head. For ``trainable`` (a convex problem) the result is the optimum
    whatever the start. Returns the objective before and after, iterations and whether it
    converged.
    """
    settings = settings or HeadSettings()
    if not head.trainable_weights:
        return {"train_objective": None, "iterations": 0, "converged": True}
    objective = head_objective_function(head, x_train, y_train, settings)
    fit = _lbfgs(objective, float(penalty), max_iter, tol, 1e-7)
    objective.assign(fit["theta"])
    # A float32 objective often ends L-BFGS on a line-search failure at the optimum; the
    # gradient norm says whether it is one.
    return {"train_objective": fit["train_objective"], "start_objective": fit["start_objective"],
            "iterations": fit["iterations"], "grad_max": fit["grad_max"],
            "converged": bool(not fit["max_iter"] or fit["grad_max"] < 1e-4)}
