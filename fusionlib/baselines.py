"""Baselines scored beside the fused output, on the same cached branch probabilities.

Each entry of :data:`BASELINES` fits on the inner fit rows of a fold (like the head) and
returns ``{name: (test probabilities, inner-validation probabilities)}``; the same decision
rule then decides every baseline. A test case missing a branch gets the fallback of the
other branches (their mean), as the fused output does. Another baseline = one function
and one ``BASELINES.register(Baseline(...))`` call (its columns appear in predictions.csv
as ``<name>_p_I``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .fusing import FoldData, complete_rows
from .registry import Registry


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


@dataclass(frozen=True)
class Baseline:
    """A family of baselines: ``fit(modalities, data, test_probs, test_inputs)`` returns
    ``{source: (test probabilities, inner-validation probabilities)}``; ``sources(modalities)``
    names those sources (the ``<source>_p_*`` columns of predictions.csv) without fitting."""

    name: str
    fit: Callable
    sources: Callable
    summary: str = ""


BASELINES: Registry[Baseline] = Registry("baseline", [
    Baseline("stacking", stacking,
             lambda modalities: ["stacking"] if len(modalities) >= 2 else [],
             "a logistic-regression stacker on the branch probabilities"),
    Baseline("branch_alone", each_branch_alone,
             lambda modalities: [f"{m}_only" for m in modalities], "each branch on its own"),
])
"""Baseline family -> :class:`Baseline`; their outputs keep this order in predictions.csv."""


def baseline_sources(modalities: list) -> list[str]:
    """Every baseline's source names for an experiment's ``modalities``, in registry order."""
    return [source for b in BASELINES.values() for source in b.sources(modalities)]


def fit_baselines(modalities: list, data: FoldData, test_probs: list, test_inputs: list) -> tuple:
    """``(test probabilities by name, inner-validation probabilities by name)`` of every baseline."""
    test, validation = {}, {}
    for baseline in BASELINES.values():
        for name, (t, v) in baseline.fit(modalities, data, test_probs, test_inputs).items():
            test[name], validation[name] = t, v
    return test, validation
