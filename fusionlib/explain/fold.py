"""Explaining a fold's head: what it learned, and how its image inputs compare train vs test.

:func:`explain_weights` reports the raw weights and the shares of the clinical branch
(sensitivity and influence) of the deployed head, of the same head fitted to convergence
and of its untrained start; :func:`image_branch_gap` the train/test consistency of each
image branch's probabilities.
"""

from __future__ import annotations

import numpy as np

from ..fusing import FoldData
from ..fusion.options import CLINICAL
from ..head import fit_head_converged, head_objective
from ..metrics import qwk
from ..models import build_fusion_head
from .weights import (effective_clinical_share, influence_share, modality_jacobians,
                      raw_fusion_weights)


def explain_weights(params, head, start_head, data: FoldData, history: dict,
                    test_inputs: list[list[np.ndarray]], n_params: int) -> dict:
    """What the head learned: raw weights; sensitivity and influence shares of the deployed
    head, of the same head fitted to convergence (same penalty, no early stopping) and of its
    untrained start; the training-objective gap of the deployed head to that optimum. A head
    fitted by ``optimizer: lbfgs`` (and not replaced by Stage 2) is that optimum already: it is
    reused, not fitted again (gap 0, ``converged_fit`` from its history)."""
    modalities, fusion = params.data.modalities, params.fusion
    weights = {"fusion": fusion.variant, "raw": raw_fusion_weights(head, fusion.variant),
               "trainable_fusion_params": n_params}
    # The rows the head meets at test time: the complete cases, one block per inner model.
    stacks = [np.stack([inputs[i] for inputs in test_inputs]) for i in range(len(modalities))]
    complete = ~np.isnan(np.stack(stacks)).any(axis=(0, 1, 3))
    if CLINICAL not in modalities or len(modalities) < 2 or not complete.any():
        return weights
    n_models = len(test_inputs)
    probs = {m: st[:, complete].reshape(-1, 3) for m, st in zip(modalities, stacks)}

    def shares(model, prefix):
        jac = modality_jacobians(model, probs)
        sens = effective_clinical_share(model, probs, jac)
        infl = influence_share(model, probs, jac, n_models=n_models)
        out = {f"{prefix}clinical_share": sens["overall"],
               f"{prefix}clinical_share_per_class": sens["per_class"],
               f"{prefix}influence_clinical_share": infl["overall"],
               f"{prefix}influence_clinical_share_per_class": infl["per_class"]}
        if not prefix:  # every modality's share, for the deployed head only (as before)
            out["modality_share"] = sens["per_modality"]
        return out

    weights.update(shares(head, ""))
    if not n_params:
        return weights
    penalty = history.get("penalty", 0.0)
    if history.get("optimizer") == "lbfgs" and "stage2" not in history:
        # The deployed head already is the converged one at its penalty: reuse it.
        converged, deployed_objective = head, history["train_objective"]
        fit = {"train_objective": history["train_objective"],
               "start_objective": history.get("start_objective"),
               "iterations": history.get("best_epoch", 0), "grad_max": history.get("grad_max"),
               "converged": history.get("stopped") == "converged", "reused": True}
        weights.update({f"converged_{k}": v for k, v in weights.items() if k.startswith(
            ("clinical_share", "influence_clinical_share"))})
    else:
        converged = build_fusion_head(modalities, fusion=fusion.variant,
                                      fusion_options=fusion.options)
        converged.set_weights(head.get_weights())
        fit = fit_head_converged(converged, data.x_fit, data.y_fit, params.head, penalty)
        deployed_objective = head_objective(head, data.x_fit, data.y_fit, params.head, penalty)
        weights.update(shares(converged, "converged_"))
    weights.update(shares(start_head, "start_"))
    weights["converged_raw"] = raw_fusion_weights(converged, fusion.variant)
    weights["train_objective_gap"] = deployed_objective - fit["train_objective"]
    weights["converged_fit"] = fit
    start = np.concatenate([np.ravel(w) for w in start_head.get_weights()])
    now = np.concatenate([np.ravel(w) for w in head.get_weights()])
    weights["moved_from_start"] = float(np.linalg.norm(now - start) / max(np.linalg.norm(start), 1e-12))
    return weights


def image_branch_gap(outputs: dict, modalities: list, y_train, y_test) -> dict:
    """Train/test consistency of each image branch: mean top-class probability and QWK of the
    out-of-fold training rows, of the test rows by the mean of the inner models (what a head
    met before) and by single inner models (what it meets now, averaged over models)."""
    out = {}
    for m in modalities:
        if m == CLINICAL:
            continue
        branch = outputs[m]
        train_ok = branch.train_mask
        per_model = branch.test_proba_per_model()
        ok = ~np.isnan(per_model).any(axis=(0, 2))
        if not train_ok.any() or not ok.any():
            continue
        out[f"{m}_train_top_p"] = float(branch.train_proba[train_ok].max(axis=1).mean())
        out[f"{m}_test_top_p_mean_of_models"] = float(branch.test_proba[ok].max(axis=1).mean())
        out[f"{m}_test_top_p_single_model"] = float(per_model[:, ok].max(axis=2).mean())
        out[f"{m}_train_qwk"] = qwk(y_train[train_ok], branch.train_proba[train_ok].argmax(axis=1))
        out[f"{m}_test_qwk_mean_of_models"] = qwk(y_test[ok], branch.test_proba[ok].argmax(axis=1))
        out[f"{m}_test_qwk_single_model"] = float(np.mean(
            [qwk(y_test[ok], p[ok].argmax(axis=1)) for p in per_model]))
    return out
