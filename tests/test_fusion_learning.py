"""The fusion heads really learn: the optimum is reached, and known truths are recovered.

The preset tests run the whole protocol (RF and CNN branches, Stage 1) on small
synthetic cohorts whose per-class signal is known, with reduced epochs so the
module stays within a few minutes on two CPU cores. Trainable against fixed, determinism and
Stage 2 are in tests/test_fusion_learning_runs.py (a file of their own, so that the two
pytest-xdist workers share the training).
"""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from fusionlib.synthetic import generate_cohort
from fusionlib.data import load_cohort
from fusionlib.experiment import run_experiment
from fusionlib.models import build_fusion_head
from fusionlib.params import validate
from fusionlib.head import HeadSettings, fit_head, head_log_loss
from helpers import random_probabilities

FAST = {"protocol": {"folds": 3}, "image": {"epochs": 12, "patience": 4, "inner_folds": 2},
        "clinical": {"options": {"n_estimators": 60}, "inner_folds": 3},
        "head": {"max_epochs": 1500, "patience": 200}}
# The preset-recovery tests train the CNN as the default run does: a CNN cut short looks like an
# uninformative branch, and the head would then rightly switch it off.
PRESET = {"clinical": {"options": {"n_estimators": 100}, "inner_folds": 3}}
LOG_LOSS_MARGIN = 0.1


def _fast(**sections) -> dict:
    """FAST with some keys of some sections changed."""
    return {**FAST, **{name: {**FAST.get(name, {}), **keys} for name, keys in sections.items()}}


def test_sgd_trainable_head_reaches_the_logistic_regression_optimum():
    # The default optimiser (lbfgs) reaches it within 1e-4 (tests/test_head.py); the
    # full-batch SGD loop, kept for who sets it, still gets within 1 %.
    rng = np.random.default_rng(0)
    y = rng.choice(3, 600, p=[0.31, 0.56, 0.13])
    p_rf, p_img = random_probabilities(rng, y, 1.0), random_probabilities(rng, y, 1.5)
    x = np.hstack([p_rf, p_img])
    reference = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=20000, tol=1e-10).fit(x, y)
    optimum = log_loss(y, reference.predict_proba(x))
    head = build_fusion_head(["metadata", "thermal_map"], "trainable", random_state=0)
    start = head_log_loss(head, [p_rf, p_img], y)
    history = fit_head(head, [p_rf, p_img], y, settings=HeadSettings(optimizer="sgd", monitor="none",
                                                                    max_epochs=4000))
    final = head_log_loss(head, [p_rf, p_img], y)
    print(f"log-loss: start {start:.4f}, head {final:.4f}, sklearn optimum {optimum:.4f}, "
          f"stopped: {history['stopped']} at {history['best_epoch']}")
    assert start > optimum * 1.1            # the start is far from the optimum ...
    assert final <= optimum * 1.01          # ... and training gets within 1 % of it


def test_early_stopping_restores_a_trained_head_not_the_start():
    rng = np.random.default_rng(1)
    y = rng.choice(3, 500, p=[0.31, 0.56, 0.13])
    p_rf, p_img = random_probabilities(rng, y, 0.3), random_probabilities(rng, y, 2.0)
    head = build_fusion_head(["metadata", "thermal_map"], "trainable", random_state=0)
    history = fit_head(head, [p_rf[:400], p_img[:400]], y[:400], [p_rf[400:], p_img[400:]], y[400:],
                       settings=HeadSettings(optimizer="sgd"))   # early stopping: sgd (lbfgs has none)
    assert history["epoch"][0] == 0                      # the untrained start is scored too
    assert history["best_epoch"] > 0
    assert min(history["val_loss"]) < history["val_loss"][0] - 0.5   # far better than the start
    assert history["stopped"] == "early_stopping"


def _experiment(tmp_path_factory, preset, fusion, folds=3, n_patients=120, **extra):
    root = tmp_path_factory.getbasetemp() / f"cohort_{preset}_{n_patients}"
    if not (root / "cohort.json").exists():
        generate_cohort(root, preset=preset, random_state=0, n_patients=n_patients)
    params = validate({"name": f"{preset}_{fusion}", "fusion": {"variant": fusion}, **PRESET,
                       "protocol": {"folds": folds}, **extra})
    cache = tmp_path_factory.getbasetemp() / f"cache_{preset}"
    return run_experiment(params, cohort=load_cohort(root), cache_dir=cache, progress=False)


@pytest.mark.slow
def test_images_without_signal_make_the_head_trust_the_rf(tmp_path_factory):
    # 300 patients: with fewer, one fold's validation split is too small to tell noise from signal.
    result = _experiment(tmp_path_factory, "images_uninformative", "trainable", n_patients=300)
    table = result.fold_table()
    print("clinical share per fold, sensitivity:", table["clinical_share"].round(3).tolist(),
          "influence:", table["influence_clinical_share"].round(3).tolist())
    # The influence share is the headline "what weighting did it learn" (docs/protocol.md).
    assert table["influence_clinical_share"].mean() > 0.9


@pytest.mark.slow
def test_clinical_table_without_signal_makes_the_head_trust_the_images(tmp_path_factory):
    result = _experiment(tmp_path_factory, "clinical_uninformative", "trainable", n_patients=300)
    table = result.fold_table()
    print("clinical share per fold, sensitivity:", table["clinical_share"].round(3).tolist(),
          "influence:", table["influence_clinical_share"].round(3).tolist())
    # Influence, not sensitivity: the blind RF's probabilities barely vary, so the weights that
    # fit their noise are large per unit of probability yet move the output little.
    assert table["influence_clinical_share"].mean() < 0.1


@pytest.mark.slow
def test_clinical_features_weak_for_r_lower_the_clinical_share_for_r(tmp_path_factory):
    table = _experiment(tmp_path_factory, "clinical_weak_for_R", "trainable").fold_table()
    means = table[["clinical_share_I", "clinical_share_P", "clinical_share_R"]].mean()
    print("per-class clinical share:", means.round(3).to_dict())
    assert means["clinical_share_R"] < means["clinical_share_I"] - 0.1
    assert means["clinical_share_R"] < means["clinical_share_P"] - 0.1
