"""Baselines scored beside the fused output, on the same cached branch probabilities.

Each entry of :data:`BASELINES` fits on the inner fit rows of a fold (like the head) and
returns ``{name: (test probabilities, inner-validation probabilities)}``; the same decision
rule then decides every baseline. A test case missing a branch gets the fallback of the
other branches (their mean), as the fused output does. Another baseline = one function
and one registry line (its columns appear in predictions.csv as ``<name>_p_I``, ...).
"""

from __future__ import annotations

import numpy as np

from .fusing import FoldData, complete_rows


def stacking(modalities: list, data: FoldData, test_probs: list, test_inputs: list) -> dict:
    """A logistic-regression stacker on the concatenated branch probabilities (2+ branches)."""
    from sklearn.linear_model import LogisticRegression

    if len(modalities) < 2:
        return {}
    stacker = LogisticRegression(max_iter=2000).fit(np.hstack(data.x_fit), data.y_fit)

    def stack(inputs):
        out = np.nanmean(np.stack(inputs), axis=0)
        full = complete_rows(inputs)
        if full.any():
            out[full] = stacker.predict_proba(np.hstack([p[full] for p in inputs]))
        return out

    test = np.mean([stack(inputs) for inputs in test_inputs], axis=0)
    return {"stacking": (test, stack(data.x_val) if len(data.y_val) else np.empty((0, 3)))}


def each_branch_alone(modalities: list, data: FoldData, test_probs: list, test_inputs: list) -> dict:
    """Every branch's own probabilities (``<modality>_only``)."""
    fallback = np.nanmean(np.stack(test_probs), axis=0)
    return {f"{m}_only": (np.where(np.isnan(p), fallback, p), data.x_val[i])
            for i, (m, p) in enumerate(zip(modalities, test_probs))}


BASELINES = {"stacking": stacking, "branch_alone": each_branch_alone}
"""Baseline family -> function; their outputs keep this order in predictions.csv."""


def fit_baselines(modalities: list, data: FoldData, test_probs: list, test_inputs: list) -> tuple:
    """``(test probabilities by name, inner-validation probabilities by name)`` of every baseline."""
    test, validation = {}, {}
    for baseline in BASELINES.values():
        for name, (t, v) in baseline(modalities, data, test_probs, test_inputs).items():
            test[name], validation[name] = t, v
    return test, validation
