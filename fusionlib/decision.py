"""Decision rules: class probabilities -> one predicted phase per case.

A comparison of fusion variants must measure the weighting, not the decision
rule. The Random Forest is fitted with balanced class weights, so a fixed mix
of its probabilities leans towards the rare phases, while a learned head is
fitted to the class prevalence; scored by argmax, the two differ in their
implicit prior more than in their weighting. So one rule, named by the
``decision`` parameter, turns the probabilities of *every* variant and every
baseline of a run into predictions:

``argmax``
    the most probable phase.
``balanced``
    argmax of the probabilities divided by the training prevalence. For a source
    fitted to the prevalence (a learned head, the CNN) this equalises the phases'
    priors; a source whose prior is already balanced (the clinical model, fitted with balanced
    class weights, and so the fixed mix) is corrected twice, towards the rare phases.
``ordinal``
    the phase ``k`` that minimises the expected quadratic cost
    ``sum_c p_c (k - c)^2`` -- the Bayes rule for the cost that QWK weighs
    disagreements by (it is the rounded expected phase index).
``tuned``
    whichever of the three above gives the best QWK on the inner-validation
    patients of the fold (ties: the order above), chosen for each source from
    its own validation probabilities; no test label is ever seen.

Every rule has the same two methods, ``fit(y_train, proba_val, y_val)`` and
``predict(proba)``, so the experiment treats them alike. Adding a rule is one
class (with ``name`` and ``summary``) and one ``DECISIONS.register(...)`` call (or one entry
in :data:`DECISIONS`).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from pydantic import Field

from .data import N_CLASSES
from .metrics import qwk
from .registry import Registry
from .settings import Settings, choice

_QUADRATIC_COST = (np.arange(N_CLASSES)[:, None] - np.arange(N_CLASSES)[None, :]) ** 2.0


class DecisionRule:
    """Base class: ``fit`` learns what the rule needs from training data; ``predict`` decides."""

    name = "base"
    summary = ""

    def fit(self, y_train, proba_val=None, y_val=None) -> DecisionRule:
        return self

    def predict(self, proba) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        """The rule as it was applied (``tuned`` names its choice)."""
        return self.name


class Argmax(DecisionRule):
    name = "argmax"
    summary = ""

    def predict(self, proba):
        return np.asarray(proba, dtype=float).argmax(axis=1)


class Balanced(DecisionRule):
    """Argmax after dividing by the training prevalence (the same division for every source)."""

    name = "balanced"
    summary = "argmax after dividing by the training prevalence"

    def __init__(self):
        self.prevalence_ = None

    def fit(self, y_train, proba_val=None, y_val=None):
        counts = np.bincount(np.asarray(y_train, dtype=int), minlength=N_CLASSES).astype(float)
        if counts.sum() == 0:
            raise ValueError("balanced decision: no training labels to estimate the prevalence from")
        # Half a case for an absent phase keeps the division finite without inventing a prior.
        self.prevalence_ = np.maximum(counts, 0.5) / counts.sum()
        return self

    def predict(self, proba):
        if self.prevalence_ is None:
            raise ValueError("balanced decision: call fit(y_train) before predict")
        return (np.asarray(proba, dtype=float) / self.prevalence_).argmax(axis=1)


class Ordinal(DecisionRule):
    """The phase with the smallest expected quadratic cost ``sum_c p_c (k - c)^2``."""

    name = "ordinal"
    summary = "least expected quadratic cost"

    def predict(self, proba):
        return (np.asarray(proba, dtype=float) @ _QUADRATIC_COST).argmin(axis=1)


class Tuned(DecisionRule):
    """The candidate rule with the best validation QWK (ties: the earlier candidate)."""

    name = "tuned"
    summary = "the best of the three on the inner-validation patients"
    candidates = ("argmax", "balanced", "ordinal")

    def __init__(self):
        self.chosen_ = None
        self.validation_qwk_ = {}

    def fit(self, y_train, proba_val=None, y_val=None):
        rules = [DECISIONS[name]().fit(y_train) for name in self.candidates]
        if proba_val is None or y_val is None or len(y_val) == 0:
            # Nothing to tune on: fall back to the first candidate, and say so in describe().
            self.chosen_, self.validation_qwk_ = rules[0], {}
            return self
        proba_val = np.asarray(proba_val, dtype=float)
        y_val = np.asarray(y_val, dtype=int)
        ok = np.isfinite(proba_val).all(axis=1)
        self.validation_qwk_ = {r.name: qwk(y_val[ok], r.predict(proba_val[ok])) for r in rules}
        best = max(self.validation_qwk_.values())
        self.chosen_ = next(r for r in rules if self.validation_qwk_[r.name] == best)
        return self

    def predict(self, proba):
        if self.chosen_ is None:
            raise ValueError("tuned decision: call fit(...) before predict")
        return self.chosen_.predict(proba)

    def describe(self):
        return f"tuned:{self.chosen_.name}" if self.chosen_ is not None else "tuned"


DECISIONS: Registry[type[DecisionRule]] = Registry(
    "decision rule", [Argmax, Balanced, Ordinal, Tuned])
"""Every decision rule (a :class:`DecisionRule` subclass) by name; ``decision.rule`` must be
one of these. Another rule: ``DECISIONS.register(MyRule)``."""

DEFAULT_DECISION = "argmax"
"""The default rule; docs/protocol.md gives the measurements behind the choice."""


class DecisionSettings(Settings):
    """Section ``decision``: how probabilities become predictions."""

    rule: Annotated[str, choice(DECISIONS)] = Field(
        DEFAULT_DECISION, description=DECISIONS.describe(
            "the same rule for the fused output and every baseline: {choices}; docs/protocol.md"))


def get_decision(name: str) -> DecisionRule:
    """A new, unfitted rule by name (ValueError naming the choices for an unknown one)."""
    return DECISIONS[name]()


def decide(proba, rule: DecisionRule) -> np.ndarray:
    """Predictions of a fitted rule; rows with a non-finite probability get -1 (no decision)."""
    proba = np.asarray(proba, dtype=float)
    out = np.full(len(proba), -1, dtype=int)
    ok = np.isfinite(proba).all(axis=1)
    if ok.any():
        out[ok] = rule.predict(proba[ok])
    return out
