"""THE list of metrics: every per-fold number a run reports, where it comes from and where it shows.

One :class:`Metric` per column of ``metrics.json``'s ``folds`` (the stage scores aside). The
writer (:class:`fusionlib.results.ExperimentResult`: the fold scores, the fold table, the
summary), the report's tables (:mod:`fusionlib.report.tables`) and both notebooks' column
lists read this list, so a new metric is one :func:`register` call (or one entry below).

A metric is either *scored* from a fold's test cases, ``compute(y_true, proba, pred)``
(``pred`` decided by the run's rule, ``proba`` the fused probabilities), or *read* from the
fold's weight analysis (``read(weights)``, see :func:`fusionlib.experiment.explain_weights`).
The order of the list is the order of the columns in ``metrics.json`` (scored metrics first,
in the fold's ``scores``; read ones after the stage scores) and of the summary.

A *headline* metric is also compared variant against ``fixed`` in the report's verdict and
pooled-case tables, docs/results.md's comparisons and the planner, in list order, its
direction honoured; the first of them (:data:`HEADLINE`, QWK) is the one the question is
answered by. :data:`METRICS` is a :class:`fusionlib.registry.Registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..data import LABELS, N_CLASSES
from ..metrics import (Paired, brier_score, case_brier, case_log_loss,
                       expected_calibration_error, f1_per_class, log_loss, qwk, qwk_from_confusion)
from ..registry import Registry

TABLES = {
    "folds": "the experiment notebook's per-fold scores",
    "fold_shares": "the experiment notebook's per-fold learned-weight table",
    "runs": "the report's runs table (kappa-table)",
    "calibration": "the report's calibration table",
    "shares": "the report's learned-weight table (its HTML id: rf-share-table)",
    "metadata_cv": "`fusionlib metadata-cv`'s per-seed scores and their summary over seeds",
}
"""Where a metric can be shown: table name -> what it is."""

CLINICAL_PLACEHOLDER = "{clinical}"
"""In a metric's label: the clinical model's short label ("RF"), filled in per report."""

HEADLINE = "qwk"
"""The first headline metric, the one the question is answered by: the report's runs table
gives it mean ± SD, t-interval and pooled value."""


@dataclass(frozen=True)
class Metric:
    """One per-fold metric.

    ``label`` heads its column in the report's tables (``table_labels`` overrides it for
    one table); :data:`CLINICAL_PLACEHOLDER` in it stands for the run's clinical model
    (:meth:`label_in` fills it in: "RF share", "GB share"); ``higher_is_better`` is None
    for descriptions (counts, shares);
    ``summarised``: mean, SD and t-interval over folds in ``metrics.json``'s summary;
    ``tables``: the tables of :data:`TABLES` that show it; ``extra``: further columns of
    the report's runs frame (``"sd"``: the SD over folds, ``"pooled"``: its value on the
    pooled predictions); ``per_class``: its per-class companions ``<name>_I`` etc. exist and
    the learned-weight table shows them beside it.

    ``headline``: compared variant against ``fixed`` in the verdict and the paired tables
    (needs a direction, and either ``of_confusion`` -- the same score of flattened 3x3
    confusion counts, vectorised ``(..., 9) -> (...)``, for a metric of the decided classes --
    or ``per_case`` -- ``(y_true, proba)`` to per-case values whose mean it is); ``margin``:
    its equivalence margin in the verdict (the report's settings override QWK's and
    log-loss's).
    """

    name: str
    label: str
    description: str
    higher_is_better: bool | None = True
    compute: Callable | None = None          # (y_true, proba, pred) -> number
    read: Callable | None = None             # (fold weights dict) -> number or None
    summarised: bool = True
    tables: tuple = ()
    table_labels: dict = field(default_factory=dict)
    extra: tuple = ()
    per_class: bool = False
    headline: bool = False
    of_confusion: Callable | None = None     # (..., 9) confusion counts -> score
    per_case: Callable | None = None         # (y_true, proba) -> per-case values
    margin: float | None = None

    def __post_init__(self):
        if (self.compute is None) == (self.read is None):
            raise ValueError(f"metric {self.name!r}: give exactly one of compute= or read=")
        unknown = [t for t in (*self.tables, *self.table_labels) if t not in TABLES]
        if unknown:
            raise ValueError(f"metric {self.name!r}: unknown table(s) {unknown}; "
                             f"expected some of {sorted(TABLES)}")
        if self.headline and (self.compute is None or self.higher_is_better is None
                              or (self.of_confusion is None) == (self.per_case is None)):
            raise ValueError(f"headline metric {self.name!r}: give compute=, higher_is_better= "
                             f"and exactly one of of_confusion= or per_case=")

    @property
    def scored(self) -> bool:
        """True when computed from the test cases (else read from the weight analysis)."""
        return self.compute is not None

    def label_in(self, table: str, clinical: str = "clinical") -> str:
        """The label in ``table``, with ``clinical`` (the clinical model's short label, e.g.
        ``ClinicalNames.short``) for :data:`CLINICAL_PLACEHOLDER`."""
        return self.table_labels.get(table, self.label).replace(CLINICAL_PLACEHOLDER, clinical)

    @property
    def paired(self) -> Paired:
        """How the paired comparisons resample this (headline) metric."""
        score = None if self.of_confusion is None else (lambda y, d: self.compute(y, None, d))
        return Paired(self.name, self.label, bool(self.higher_is_better), score,
                      self.of_confusion)


METRICS: Registry[Metric] = Registry("metric", summary=lambda m: m.description)
"""name -> Metric, in column order."""


def register(metric: Metric, replace: bool = False) -> Metric:
    """Add ``metric`` to the end of :data:`METRICS` (``replace`` an existing one in place)."""
    return METRICS.register(metric, replace=replace)


def headline_metrics() -> list[Metric]:
    """The metrics the verdict and paired tables compare, in list order (:data:`HEADLINE`
    first)."""
    return sorted((m for m in METRICS.values() if m.headline), key=lambda m: m.name != HEADLINE)


def metrics_in(table: str) -> list[Metric]:
    """The metrics ``table`` shows, in list order."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(TABLES)}")
    return [m for m in METRICS.values() if table in m.tables]


def summarised_metrics() -> list[str]:
    """Names summarised over folds in ``metrics.json`` (mean, SD, t-interval)."""
    return [m.name for m in METRICS.values() if m.summarised]


def classification_scores(y_true, proba, y_pred=None) -> dict:
    """Every scored metric of ``y_pred`` (decided classes; argmax of ``proba`` when None) and of
    the probabilities ``proba``, by name in list order. Proper scores never depend on the
    decision rule."""
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    y_pred = proba.argmax(axis=1) if y_pred is None else np.asarray(y_pred, dtype=int)
    return {m.name: m.compute(y_true, proba, y_pred) for m in METRICS.values() if m.scored}


# --------------------------------------------------------------------------- the built-in list


def _f1_per_class(y_true, y_pred) -> np.ndarray:
    return f1_per_class(y_true, y_pred)


def _f1(j: int):
    return lambda y, p, d: float(_f1_per_class(y, d)[j])


def _weight(key: str, index: int | None = None):
    """A reader of the fold's weight analysis: ``weights[key]`` (``[index]`` of a per-class list)."""
    if index is None:
        return lambda w: w.get(key)
    return lambda w: (w.get(key) or [None] * N_CLASSES)[index]


def _builtin() -> list[Metric]:
    scores = [
        Metric("qwk", "QWK", "quadratic-weighted kappa of the decided phases (ordinal)",
               compute=lambda y, p, d: qwk(y, d), tables=("folds", "metadata_cv"),
               headline=True, of_confusion=qwk_from_confusion, margin=0.02),
        Metric("accuracy", "accuracy", "share of correctly decided cases",
               compute=lambda y, p, d: float(np.mean(np.asarray(y) == np.asarray(d))),
               tables=("folds", "runs", "metadata_cv")),
        Metric("macro_f1", "macro-F1", "mean of the per-class F1 scores",
               compute=lambda y, p, d: float(np.mean(_f1_per_class(y, d))),
               tables=("folds", "runs", "metadata_cv")),
        *[Metric(f"f1_{c}", f"F1 {c}", f"F1 score of phase {c}", compute=_f1(j),
                 tables=("folds", "runs", "metadata_cv")) for j, c in enumerate(LABELS)],
        Metric("log_loss", "log-loss", "mean cross-entropy of the true phase (proper score)",
               higher_is_better=False, compute=lambda y, p, d: log_loss(y, p),
               tables=("folds", "runs"), extra=("pooled",), headline=True,
               per_case=case_log_loss, margin=0.02),
        Metric("brier", "Brier", "multi-class Brier score (proper score)", higher_is_better=False,
               compute=lambda y, p, d: brier_score(y, p), tables=("folds", "runs", "calibration"),
               per_case=case_brier),
        Metric("ece", "ECE", "top-label expected calibration error, 10 equal-width bins",
               higher_is_better=False, compute=lambda y, p, d: expected_calibration_error(y, p),
               tables=("calibration",)),
        Metric("n", "cases", "test cases scored", higher_is_better=None,
               compute=lambda y, p, d: int(len(y)), summarised=False),
    ]
    # The learned-weight shares of the deployed head (no prefix), of the same head converged at
    # the same penalty and of its start; sensitivity (clinical_share) and influence, overall and
    # per class. Which of them each table shows is historical: keep the tables as they were.
    # Labels name the run's clinical model ("RF share" for the default random forest).
    shares = []
    heads = {"": "", "converged_": "converged ", "start_": "start "}
    kinds = {"clinical_share": (f"{CLINICAL_PLACEHOLDER} share", "sensitivity",
                                "how strongly the fused output responds to the clinical "
                                "branch's probabilities, per unit (fixed: 0.70)"),
             "influence_clinical_share": (f"{CLINICAL_PLACEHOLDER} influence", "influence",
                                          "share of the fused output's variation across test "
                                          "cases that comes from the clinical branch")}
    shown = {("", "clinical_share"): (("fold_shares", "runs", "shares"), ("sd",)),
             ("", "influence_clinical_share"): (("fold_shares", "runs", "shares"), ()),
             ("converged_", "clinical_share"): (("fold_shares", "shares"), ()),
             ("converged_", "influence_clinical_share"): (("fold_shares", "shares"), ()),
             ("start_", "clinical_share"): (("fold_shares", "shares"), ())}
    for prefix, head in heads.items():
        for kind, (label, share_label, text) in kinds.items():
            name = f"{prefix}{kind}"
            tables, extra = shown.get((prefix, kind), ((), ()))
            shares.append(Metric(name, f"{head}{label}" if head else label,
                                 f"{head or 'deployed '}head: {text}", higher_is_better=None,
                                 read=_weight(name), tables=tables, extra=extra, per_class=True,
                                 table_labels={"shares": f"{head}{share_label}"}))
            # Per-class values show in the experiment notebook for the deployed head only.
            per_class_tables = ("fold_shares",) if not prefix else ()
            shares += [Metric(f"{name}_{c}", f"{head}{label} {c}", f"{head or 'deployed '}head, "
                              f"phase {c}: {text}", higher_is_better=None,
                              read=_weight(f"{name}_per_class", j), tables=per_class_tables)
                       for j, c in enumerate(LABELS)]
    fit = [
        Metric("train_objective_gap", "objective gap", "deployed head's training objective minus "
               "the converged one's (0: at the optimum)", higher_is_better=False,
               read=_weight("train_objective_gap"), tables=("fold_shares", "shares")),
        Metric("moved_from_start", "moved from start", "relative change of the head's weights "
               "from its start", higher_is_better=None, read=_weight("moved_from_start"),
               tables=("fold_shares", "shares")),
    ]
    return [*scores, *shares, *fit]


for _metric in _builtin():
    register(_metric)
del _metric
