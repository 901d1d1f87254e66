"""Fusing branch probabilities: the head's inputs of one fold, and the rule for missing ones.

:func:`split_training_rows` gives the head its inner fit / validation rows (complete cases
only); :func:`fuse_with_missing` and :func:`fuse_per_model` turn test-row branch
probabilities into fused ones, cases missing a modality included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .splits import inner_validation_split, resample_training_rows


def fuse_with_missing(head, probs: list[np.ndarray]) -> np.ndarray:
    """Fused probabilities, with the documented rule for cases missing a modality.

    Cases with every modality go through the head. A case missing some
    modalities gets the mean of the probabilities of the modalities it has (for
    two modalities: the available branch's probabilities). For ``fixed`` fusion
    this is exactly renormalising the weights over the present modalities when
    they are equal, and for every variant it means no case is dropped.
    """
    stacked = np.stack(probs)                       # (M, n, 3)
    present = ~np.isnan(stacked).any(axis=2)        # (M, n)
    out = np.full(stacked.shape[1:], np.nan)
    full = present.all(axis=0)
    if full.any():
        out[full] = np.asarray(head([p[full].astype("float32") for p in probs], training=False))
    partial = ~full & present.any(axis=0)
    if partial.any():
        out[partial] = np.nanmean(stacked[:, partial], axis=0)
    return out


def fuse_per_model(head, probs_per_model: list[list[np.ndarray]]) -> np.ndarray:
    """The head's fused probabilities averaged over the branches' inner models.

    ``probs_per_model[k]`` is the list of modality inputs built from inner model ``k``.
    The head was fitted on training rows whose image probabilities each came from one inner
    CNN, so at test time it meets one CNN's probabilities at a time too (the same kind and
    strength of input) and the fused outputs are averaged. For a linear head such as
    ``fixed`` this equals fusing the mean of the models' probabilities.
    """
    return np.mean([fuse_with_missing(head, probs) for probs in probs_per_model], axis=0)


def per_model_inputs(outputs: dict, modalities: list, keep: np.ndarray) -> list[list[np.ndarray]]:
    """Test inputs per inner model: ``[[p_m of model k for m in modalities] for k]``.

    A single-model branch (the clinical one) gives the same array to every ``k``.
    """
    stacks = {m: outputs[m].test_proba_per_model()[:, keep] for m in modalities}
    n_models = max(len(v) for v in stacks.values())
    return [[stacks[m][k % len(stacks[m])] for m in modalities] for k in range(n_models)]


@dataclass
class FoldData:
    """One outer fold's training inputs for the head, split into inner fit and validation."""

    fit_rows: np.ndarray
    val_rows: np.ndarray
    x_fit: list
    y_fit: np.ndarray
    x_val: list
    y_val: np.ndarray
    groups_val: np.ndarray
    y_train: np.ndarray             # every training row's label (for the decision rules' priors)


def complete_rows(probs) -> np.ndarray:
    return ~np.isnan(np.stack(probs)).any(axis=(0, 2))


def split_training_rows(cohort, params, fold, outputs: dict) -> FoldData:
    """Inner fit / validation patients and the branch probabilities of their complete cases."""
    y = cohort.y
    protocol = params.protocol
    fit_rows, val_rows = inner_validation_split(y, cohort.groups, fold.train,
                                                protocol.validation_fraction,
                                                protocol.seed + 7919 * fold.repeat + fold.index)
    pos = {row: i for i, row in enumerate(fold.train)}

    def train_probs(rows):
        return [outputs[m].train_proba[[pos[r] for r in rows]] for m in params.data.modalities]

    p_fit, p_val = train_probs(fit_rows), train_probs(val_rows)
    ok_fit, ok_val = complete_rows(p_fit), complete_rows(p_val)
    resampled = resample_training_rows(y[fit_rows][ok_fit], protocol.sampling,
                                       protocol.seed + fold.index)
    return FoldData(fit_rows, val_rows, [p[ok_fit][resampled] for p in p_fit],
                    y[fit_rows][ok_fit][resampled], [p[ok_val] for p in p_val], y[val_rows][ok_val],
                    cohort.groups[val_rows][ok_val], y[fold.train])
