"""The head fitter's L-BFGS machinery (``head.optimizer: lbfgs``, the default).

The exact NumPy objective of linear-softmax heads against the TensorFlow definition
(``training_objective``) and its tape gradient; the optimum against scikit-learn's logistic
regression; the compiled generic path against the NumPy path; the penalty search, the
``.keras`` round trip, and the early-stopped ``sgd`` optimiser kept for who sets it.
"""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from fusionlib import head as H
from fusionlib._tf import tf
from fusionlib.head import HeadSettings, fit_head, head_log_loss, head_objective_function
from fusionlib.head import objective as O
from fusionlib.head import optimisers
from fusionlib.models import build_fusion_head
from helpers import random_probabilities

TWO = ["metadata", "thermal_map"]
THREE = ["metadata", "thermal_map", "depth_map"]


def _data(n=240, seed=0, modalities=2):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=[0.31, 0.56, 0.13])
    strengths = (1.0, 1.5, 0.2)[:modalities]
    return [random_probabilities(rng, y, s) for s in strengths], y


def _tf_value_and_grad(head, x, y, settings, penalty):
    T = tf()
    objective = O.training_objective(head, x, y, settings, penalty)
    with T.GradientTape() as tape:
        value = objective()
    grads = tape.gradient(value, head.trainable_weights)
    return float(value), np.concatenate([np.asarray(g, dtype="float64").ravel() for g in grads])


@pytest.mark.parametrize("variant", ["trainable", "trainable_rf_biased"])
@pytest.mark.parametrize("loss,class_weight,kind", [
    ("cross_entropy", None, "group"), ("cross_entropy", "balanced", "l2"),
    ("focal", None, "l2"), ("focal", "balanced", "group")])
@pytest.mark.parametrize("penalty", [0.0, 0.03])
def test_numpy_objective_and_gradient_equal_the_tensorflow_definition(variant, loss, class_weight,
                                                                      kind, penalty):
    modalities = THREE if kind == "group" and loss == "focal" else TWO
    x, y = _data(modalities=len(modalities), seed=3)
    head = build_fusion_head(modalities, variant, random_state=1)
    rng = np.random.default_rng(5)
    for v in head.trainable_weights:  # away from the start, so every term matters
        v.assign((np.asarray(v) + rng.normal(0, 0.7, v.shape)).astype("float32"))
    settings = HeadSettings(loss=loss, class_weight=class_weight, penalty_kind=kind, focal_gamma=1.5)
    objective = head_objective_function(head, x, y, settings)
    assert type(objective).__name__ == "_LinearSoftmaxObjective"
    value, grad = objective(objective.theta(), penalty)
    tf_value, tf_grad = _tf_value_and_grad(head, x, y, settings, penalty)
    assert value == pytest.approx(tf_value, abs=1e-5)
    np.testing.assert_allclose(grad, tf_grad, atol=1e-5)


def test_group_penalty_gradient_is_finite_where_a_block_is_zero():
    x, y = _data()
    head = build_fusion_head(TWO, "trainable", random_state=0)
    kernel = np.asarray(head.trainable_weights[0]).copy()
    kernel[3:] = 0.0
    head.trainable_weights[0].assign(kernel)
    objective = head_objective_function(head, x, y, HeadSettings())
    value, grad = objective(objective.theta(), 0.1)
    tf_value, tf_grad = _tf_value_and_grad(head, x, y, HeadSettings(), 0.1)
    assert np.isfinite(grad).all()
    assert value == pytest.approx(tf_value, abs=1e-5)
    np.testing.assert_allclose(grad, tf_grad, atol=1e-5)


def test_lbfgs_head_reaches_the_logistic_regression_optimum():
    x, y = _data(n=600)
    reference = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=20000, tol=1e-10)
    optimum = log_loss(y, reference.fit(np.hstack(x), y).predict_proba(np.hstack(x)))
    head = build_fusion_head(TWO, "trainable", random_state=0)
    start = head_log_loss(head, x, y)
    history = fit_head(head, x, y)                      # default: lbfgs, penalty 0
    assert history["optimizer"] == "lbfgs" and history["stopped"] == "converged"
    assert history["best_epoch"] > 0 and history["epoch"] == [history["best_epoch"]]
    assert start > optimum * 1.1
    assert abs(head_log_loss(head, x, y) - optimum) < 1e-4
    assert history["train_objective"] == pytest.approx(head_log_loss(head, x, y), abs=1e-5)


def test_compiled_generic_path_reaches_the_numpy_optimum_on_trainable():
    x, y = _data(seed=4)
    settings = HeadSettings(penalty_kind="group")
    values = {}
    for path in ("numpy", "compiled"):
        head = build_fusion_head(TWO, "trainable", random_state=2)
        objective = (head_objective_function(head, x, y, settings) if path == "numpy"
                     else O._CompiledObjective(head, x, y, settings))
        fit = optimisers._lbfgs(objective, 0.01, 2000, 1e-12, 1e-7)
        values[path] = fit["train_objective"]
    assert values["compiled"] == pytest.approx(values["numpy"], abs=1e-6)


@pytest.mark.parametrize("variant", ["mlp", "gated"])
def test_flat_compiled_call_equals_the_tensorflow_definition(variant, monkeypatch):
    # The flat call into the compiled function gives what the public tf.function call gives,
    # bit for bit, and that is the training objective and its tape gradient.
    T = tf()
    x, y = _data(seed=8)
    head = build_fusion_head(TWO, variant, random_state=3)
    settings = HeadSettings(class_weight="balanced")
    objective = O._CompiledObjective(head, x, y, settings)
    theta = objective.theta() + 0.1
    objective.assign(theta)
    monkeypatch.setattr(O, "_flat_call", lambda function: function)
    public = O._compile(head, len(x), settings)[0]   # the tf.function itself
    assert hasattr(public, "get_concrete_function")
    for penalty in (0.0, 0.02):
        value, grad = objective(theta, penalty)
        ref_value, ref_grad = public(T.constant(theta, T.float32), objective.xs, objective.yt,
                                     objective.wt, T.constant(penalty, T.float32))
        assert value == float(ref_value)
        np.testing.assert_array_equal(grad, np.asarray(ref_grad, dtype="float64"))
        tf_value, tf_grad = _tf_value_and_grad(head, x, y, settings, penalty)
        assert value == pytest.approx(tf_value, abs=1e-5)
        np.testing.assert_allclose(grad, tf_grad, atol=1e-5)


@pytest.mark.parametrize("variant", ["trainable", "mlp", "gated"])
def test_lbfgsb_loop_is_scipy_minimize_bit_for_bit(variant):
    from scipy.optimize import minimize

    x, y = _data(seed=6)
    head = build_fusion_head(TWO, variant, random_state=0)
    objective = head_objective_function(head, x, y, HeadSettings())
    theta0 = objective.theta()
    for penalty in (0.0, 0.01):
        with optimisers.one_blas_thread():
            ours = optimisers._run_lbfgsb(objective, theta0, penalty, 3000, 1e-7, 1e-6)
            ref = minimize(objective, theta0, args=(penalty,), jac=True, method="L-BFGS-B",
                           options={"maxiter": 3000, "ftol": 1e-7, "gtol": 1e-6})
        assert ref.nit > 5
        np.testing.assert_array_equal(ours[0], ref.x)
        np.testing.assert_array_equal(ours[2], ref.jac)
        assert (ours[1], ours[3], ours[4]) == (ref.fun, ref.nit, ref.message)
    capped = optimisers._run_lbfgsb(objective, theta0, 0.0, 3, 1e-7, 1e-6)
    assert capped[3] == 3 and "ITERATIONS REACHED LIMIT" in capped[4]


def test_lbfgsb_loop_reaches_minimize_optimum_on_a_quadratic():
    # A problem with a known minimum, independent of the heads.
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 8))
    hessian, b = a @ a.T + np.eye(8), rng.normal(size=8)

    def f(theta, strength):
        return 0.5 * theta @ hessian @ theta - b @ theta + strength * theta @ theta, \
            hessian @ theta - b + 2 * strength * theta

    x, fun, _, nit, message = optimisers._run_lbfgsb(f, np.zeros(8), 0.0, 500, 1e-14, 1e-10)
    np.testing.assert_allclose(x, np.linalg.solve(hessian, b), atol=1e-6)
    ref = minimize(f, np.zeros(8), args=(0.0,), jac=True, method="L-BFGS-B",
                   options={"maxiter": 500, "ftol": 1e-14, "gtol": 1e-10})
    np.testing.assert_array_equal(x, ref.x)
    assert (fun, nit, message) == (ref.fun, ref.nit, ref.message)


@pytest.mark.parametrize("variant", ["mlp", "convex", "gated"])
def test_generic_variant_decreases_its_objective_and_converges(variant):
    x, y = _data(seed=6)
    settings = HeadSettings()
    first = build_fusion_head(TWO, variant, random_state=0)
    history = fit_head(first, [a[:200] for a in x], y[:200], [a[200:] for a in x], y[200:],
                       settings, 0.003)
    assert history["stopped"] == "converged" and history["best_epoch"] > 0
    assert history["train_objective"] < history["start_objective"] - 1e-3
    assert history["train_objective"] == pytest.approx(
        H.head_objective(first, [a[:200] for a in x], y[:200], settings, 0.003), abs=1e-5)
    assert len(history["val_row_loss"]) == 40 and history["val_loss"][0] == pytest.approx(
        np.mean(history["val_row_loss"]))
    # Compiled once per architecture: another seed (another fold) reuses the function.
    compiled = len(O._COMPILED)
    fit_head(build_fusion_head(TWO, variant, random_state=7), [a[:200] for a in x], y[:200],
             settings=settings, penalty=0.01)
    assert len(O._COMPILED) == compiled


def test_fitted_head_round_trips_through_a_keras_file(tmp_path):
    from fusionlib.models import load_model

    x, y = _data()
    for variant in ("trainable", "mlp"):
        head = build_fusion_head(TWO, variant, random_state=0)
        fit_head(head, x, y, penalty=0.01)
        path = tmp_path / f"{variant}.keras"
        head.save(path)
        loaded = load_model(path)
        np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(head(x)))


def test_penalty_search_keeps_the_chosen_candidates_optimum():
    from types import SimpleNamespace

    x, y = _data(n=320, seed=8)
    groups = np.repeat(np.arange(40), 2)
    data = SimpleNamespace(x_fit=[a[:240] for a in x], y_fit=y[:240], x_val=[a[240:] for a in x],
                           y_val=y[240:], groups_val=groups)
    settings = HeadSettings(penalty=[0.0, 0.01, 0.1])
    head, history = H.fit_head_with_penalty_search(
        settings, data, lambda: build_fusion_head(TWO, "trainable", random_state=3), 3)
    assert history["penalty"] in (0.0, 0.01, 0.1) and set(history["penalty_table"]) == \
        {"0.0", "0.01", "0.1"}
    again = build_fusion_head(TWO, "trainable", random_state=3)
    alone = fit_head(again, data.x_fit, data.y_fit, data.x_val, data.y_val, settings,
                     history["penalty"])
    for a, b in zip(head.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert alone["val_row_loss"] == history["val_row_loss"]
    # monitor none: no validation, the first (smallest) candidate, as with sgd.
    _, none = H.fit_head_with_penalty_search(
        settings.model_copy(update={"monitor": "none"}), data,
        lambda: build_fusion_head(TWO, "trainable", random_state=3), 3)
    assert none["penalty"] == 0.0 and none["val_loss"] == []
    # monitor val_qwk: the candidate of the best validation QWK.
    _, by_qwk = H.fit_head_with_penalty_search(
        settings.model_copy(update={"monitor": "val_qwk"}), data,
        lambda: build_fusion_head(TWO, "trainable", random_state=3), 3)
    qwks = {p: fit_head(build_fusion_head(TWO, "trainable", random_state=3), data.x_fit,
                        data.y_fit, data.x_val, data.y_val, settings, p)["val_qwk"][0]
            for p in settings.penalty}
    assert qwks[by_qwk["penalty"]] == max(qwks.values())


def test_fit_head_converged_uses_the_same_optimum():
    x, y = _data(seed=9)
    settings = HeadSettings(loss="focal")
    a = build_fusion_head(TWO, "trainable", random_state=0)
    fitted = fit_head(a, x, y, settings=settings, penalty=0.01)
    b = build_fusion_head(TWO, "trainable", random_state=0)
    converged = H.fit_head_converged(b, x, y, settings, 0.01)
    assert converged["converged"]
    assert converged["train_objective"] == pytest.approx(fitted["train_objective"], abs=1e-6)


def test_sgd_optimiser_still_early_stops():
    x, y = _data(n=500, seed=1)
    head = build_fusion_head(TWO, "trainable", random_state=0)
    history = fit_head(head, [a[:400] for a in x], y[:400], [a[400:] for a in x], y[400:],
                       HeadSettings(optimizer="sgd", max_epochs=600, patience=100))
    assert "optimizer" not in history
    assert history["epoch"][0] == 0 and history["epoch"][1] == 10
    assert history["best_epoch"] > 0
    assert history["stopped"] in ("early_stopping", "max_epochs")


def test_explain_reuses_the_lbfgs_head_as_its_converged_head():
    from fusionlib.branches import BranchOutput
    from fusionlib.experiment import run_fold
    from fusionlib.params import validate
    from fusionlib.splits import patient_folds
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 2)
    y = rng.choice(3, len(groups), p=[0.31, 0.56, 0.13])
    cohort = SimpleNamespace(y=y, groups=groups)
    fold = patient_folds(y, groups, 3, 0)[0]
    outputs = {m: BranchOutput(fold.train, fold.test, random_probabilities(rng, y[fold.train], s),
                               random_probabilities(rng, y[fold.test], s))
               for m, s in (("metadata", 1.0), ("thermal_map", 1.5))}
    weights = {}
    for optimizer in ("lbfgs", "sgd"):
        params = validate({"fusion": {"variant": "trainable"},
                           "head": {"optimizer": optimizer, "max_epochs": 300, "patience": 50,
                                    "penalty": [0.0, 0.01]}})
        weights[optimizer] = run_fold(cohort, params, fold, outputs, log=lambda *_: None).weights
    reused = weights["lbfgs"]
    assert reused["train_objective_gap"] == 0.0 and reused["converged_fit"]["reused"]
    assert reused["converged_fit"]["converged"] and reused["converged_fit"]["iterations"] > 0
    assert reused["converged_clinical_share"] == reused["clinical_share"]
    assert reused["converged_influence_clinical_share"] == reused["influence_clinical_share"]
    assert reused["converged_raw"] == reused["raw"]
    # An early-stopped head is still compared with a freshly converged one.
    fitted = weights["sgd"]
    assert "reused" not in fitted["converged_fit"] and fitted["train_objective_gap"] >= -1e-6
    assert set(fitted) == set(reused)
