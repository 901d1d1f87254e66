"""What an experiment produced, and how it is written: the fold results, their tables, the run files.

:meth:`ExperimentResult.save` writes the files :mod:`fusionlib.results.reader` reads (names and
prediction columns in :mod:`fusionlib.results.files`); the per-fold scores, the fold table and
the summary follow :data:`fusionlib.results.registry.METRICS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._io import atomic_write_text, jsonable
from ..data import LABELS
from ..fusion.options import CLINICAL
from ..metrics import mean_ci
from .files import METRICS_FILE, PREDICTIONS_FILE, PROBA_COLUMNS, PROVENANCE_FILE, WEIGHTS_FILE
from .registry import METRICS, classification_scores, metrics_in, summarised_metrics

if TYPE_CHECKING:   # annotations only: the results do not need the data layer or the schema
    from ..data import Cohort
    from ..params import ExperimentParams


@dataclass
class FoldResult:
    """Everything one outer fold produced."""

    fold: int
    repeat: int
    case_index: np.ndarray          # positions of the test cases in the experiment cohort
    y_true: np.ndarray
    proba: np.ndarray               # fused probabilities of the test cases
    branch_proba: dict              # modality -> (n_test, 3), NaN where missing
    baselines: dict                 # baseline name -> (n_test, 3)
    scores: dict                    # registry.classification_scores of the test cases
    stage_scores: dict
    weights: dict
    history: dict = field(default_factory=dict)
    preds: dict = field(default_factory=dict)   # source ("fused", baselines) -> rule -> (n_test,)
    seed: int = 0                   # the seed of the replicate this fold belongs to


@dataclass
class ExperimentResult:
    params: ExperimentParams
    cohort: Cohort
    folds: list
    provenance: dict
    # seed -> the cohort that seed used (its patient subsample); ``case_index`` of a fold of
    # that seed points into it. None: every fold used ``cohort``.
    cohorts: dict | None = None

    @property
    def seeds(self) -> list[int]:
        """The seeds of the run's replicates, in run order."""
        return list(dict.fromkeys(f.seed for f in self.folds))

    def cohort_of(self, seed: int) -> Cohort:
        return self.cohorts[seed] if self.cohorts else self.cohort

    def fold_table(self) -> pd.DataFrame:
        """One row per (seed, repeat, fold): test scores, stage scores and the metrics read from the
        weight analysis (learned-weight shares of the deployed, converged and start heads)."""
        rows = []
        for f in self.folds:
            row = {"seed": f.seed, "repeat": f.repeat, "fold": f.fold, **f.scores, **f.stage_scores,
                   "decision": (f.weights.get("decision") or {}).get("fused")}
            row.update(weight_metrics(f.weights))
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> dict:
        table = self.fold_table()
        out = {"name": self.params.name, "fusion": self.params.fusion.variant,
               "data_percentage": self.params.protocol.data_percentage,
               "n_folds": int(len(table)), "n_cases": self._cases_per_seed(),
               "trainable_fusion_params": self.provenance.get("trainable_fusion_params")}
        out["decision"] = self.params.decision.rule
        out["seeds"] = self.seeds
        if self.cohorts:
            out["n_cases_per_seed"] = {str(s): int(c.n_cases) for s, c in self.cohorts.items()}
        out["dropped_images"] = self.cohort.meta.get("dropped_images", {"count": 0, "by_reason": {}})
        out["head_never_trained_folds"] = int(sum(bool(f.stage_scores.get("head_never_trained"))
                                                  for f in self.folds))
        for metric in summarised_metrics():
            summary = _fold_summary(table, metric)
            if summary is not None:
                out[metric] = summary
        pooled = self.predictions()
        out["pooled"] = classification_scores(pooled["label"], pooled[PROBA_COLUMNS].to_numpy(),
                                              pooled["pred"].to_numpy())
        out["by_seed"] = self._by_seed(table, pooled)
        # Cases by modality availability (each case is a test case once per repeat; with
        # several seeds, the mean over the seeds' subsamples), and the pooled scores on the
        # test cases that have every modality (those the head fused).
        cohorts = list(self.cohorts.values()) if self.cohorts else [self.cohort]
        counts = pd.concat([self._modality_combos(c) for c in cohorts]).value_counts()
        out["modality_counts"] = {c: int(round(n / len(cohorts))) for c, n in counts.items()}
        complete = np.ones(len(pooled), bool)
        for m in self.params.data.modalities:
            if f"{m}_p_I" in pooled:
                complete &= pooled[f"{m}_p_I"].notna().to_numpy()
        sub = pooled[complete]
        out["scores_complete_cases"] = (
            classification_scores(sub["label"], sub[PROBA_COLUMNS].to_numpy(),
                                  sub["pred"].to_numpy())
            if len(sub) else {"n": 0})
        return out

    def _cases_per_seed(self) -> int:
        """Cases one seed uses (the same for every seed at 100 %; else the mean over seeds)."""
        if not self.cohorts:
            return int(self.cohort.n_cases)
        return int(round(np.mean([c.n_cases for c in self.cohorts.values()])))

    def _modality_combos(self, cohort) -> pd.Series:
        modalities = self.params.data.modalities
        present = {m: (np.ones(cohort.n_cases, bool) if m == CLINICAL
                       else cohort.has_modality(m)) for m in modalities}
        combos = ["+".join(m for m in modalities if present[m][i]) or "none"
                  for i in range(cohort.n_cases)]
        if len(modalities) > 1:
            combos = [f"{c} only" if c in modalities else c for c in combos]
        return pd.Series(combos)

    @staticmethod
    def _by_seed(table: pd.DataFrame, pooled: pd.DataFrame) -> dict:
        """Each summarised metric per seed (the mean over that seed's folds) and the mean and
        standard deviation of those per-seed means; the pooled scores of each seed."""
        seeds = list(dict.fromkeys(table["seed"]))
        out = {"seeds": seeds, "metrics": {}, "pooled": {}}
        for metric in summarised_metrics():
            if metric not in table:
                continue
            per_seed = [table.loc[table["seed"] == s, metric].dropna().to_numpy(dtype=float)
                        for s in seeds]
            means = [float(v.mean()) if len(v) else None for v in per_seed]
            known = [m for m in means if m is not None]
            if known:
                out["metrics"][metric] = {
                    "per_seed": means, "mean": float(np.mean(known)),
                    "sd": float(np.std(known, ddof=1)) if len(known) > 1 else 0.0}
        for s in seeds:
            rows = pooled[pooled["seed"] == s]
            out["pooled"][str(s)] = classification_scores(
                rows["label"], rows[PROBA_COLUMNS].to_numpy(), rows["pred"].to_numpy())
        return out

    def predictions(self) -> pd.DataFrame:
        """One row per (seed, repeat, test case): label, fused, branch and baseline probabilities."""
        frames = []
        for f in self.folds:
            cases = self.cohort_of(f.seed).cases.iloc[f.case_index]
            frame = pd.DataFrame({"seed": f.seed, "repeat": f.repeat, "fold": f.fold,
                                  "case_id": cases["case_id"].to_numpy(),
                                  "patient": cases["patient"].to_numpy(), "label": f.y_true})
            for j, label in enumerate(LABELS):
                frame[f"p_{label}"] = f.proba[:, j]
            fused = f.preds.get("fused", {})
            frame["pred"] = fused.get(self.params.decision.rule, f.proba.argmax(axis=1))
            for rule, pred in fused.items():
                frame[f"pred_{rule}"] = pred
            for source, proba in {**f.branch_proba, **f.baselines}.items():
                for j, label in enumerate(LABELS):
                    frame[f"{source}_p_{label}"] = proba[:, j]
            for source, by_rule in f.preds.items():
                if source == "fused":
                    continue
                for rule, pred in by_rule.items():
                    frame[f"{source}_pred_{rule}"] = pred
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def weights(self) -> list:
        return [{"seed": f.seed, "repeat": f.repeat, "fold": f.fold, **f.weights} for f in self.folds]

    def save(self, directory: str | Path) -> Path:
        """Write metrics.json, predictions.csv, weights.json and provenance.json atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        metrics = {"summary": self.summary(), "folds": self.fold_table().to_dict(orient="records")}
        files = {
            METRICS_FILE: json.dumps(jsonable(metrics), indent=2),
            PREDICTIONS_FILE: self.predictions().to_csv(index=False),
            WEIGHTS_FILE: json.dumps(jsonable(self.weights()), indent=2),
            PROVENANCE_FILE: json.dumps(jsonable(self.provenance), indent=2),
        }
        for name, text in files.items():
            atomic_write_text(directory / name, text)
        return directory


def _fold_summary(table: pd.DataFrame, metric: str) -> dict | None:
    """Mean, SD and t-interval of a metric over the folds of one seed.

    With several seeds the folds of different seeds are not independent draws (at 100 % the
    same patients are tested again), so they are not pooled into one interval: each seed gets
    its own mean, SD and interval, and the summary holds their averages (the interval keeps a
    single run's width, centred on the mean over seeds). The spread over seeds is in
    ``by_seed``.
    """
    if metric not in table:
        return None
    parts = []
    for _, rows in table.groupby("seed", sort=False):
        values = rows[metric].dropna().to_numpy(dtype=float)
        if len(values):
            parts.append(mean_ci(values))
    if not parts:
        return None
    mean = float(np.mean([p[0] for p in parts]))
    half = float(np.mean([(p[3] - p[2]) / 2 for p in parts]))
    return {"mean": mean, "sd": float(np.mean([p[1] for p in parts])),
            "ci95": [mean - half, mean + half]}


def per_fold_columns(folds: pd.DataFrame) -> list[str]:
    """The experiment notebook's per-fold score table: the metrics of the ``folds`` table, each
    image branch's inner-validation QWK and the Stage 1 head's (those ``folds`` has)."""
    columns = ["seed", "repeat", "fold", "decision", *(m.name for m in metrics_in("folds")),
               *[c for c in folds.columns if c.endswith("_val_qwk") and not c.startswith("stage1")],
               "stage1_val_qwk", "stage1_best_epoch", "stage1_penalty"]
    return [c for c in columns if c in folds.columns]


def share_columns(folds: pd.DataFrame) -> list[str]:
    """The experiment notebook's per-fold learned-weight table (the ``fold_shares`` metrics
    ``folds`` has), after ``repeat`` and ``fold``."""
    return ["seed", "repeat", "fold", *(m.name for m in metrics_in("fold_shares") if m.name in folds.columns)]


def weight_metrics(weights: dict) -> dict:
    """The metrics of :data:`~fusionlib.results.registry.METRICS` read from one fold's weight
    analysis (:func:`fusionlib.explain.explain_weights`), by name in list order: the columns
    :meth:`ExperimentResult.fold_table` gives a fold after its scores (``clinical_share``,
    ``clinical_share_I``, ..., ``influence_clinical_share``, ...; None where the analysis has
    no value)."""
    return {m.name: m.read(weights) for m in METRICS.values() if not m.scored}


def raw_weight_table(weights: list, decimals: int = 3) -> pd.DataFrame:
    """The experiment notebook's raw-weights table: one row per fold entry of ``weights``
    (:meth:`ExperimentResult.weights`, or ``weights.json``) with its ``seed``, ``repeat`` and
    ``fold`` and every numeric entry of its ``raw`` weights (the variant's own names, e.g.
    ``kernel``/``bias`` or ``a``), as nested lists rounded to ``decimals``; entries that are
    not numbers (the variant's name) are left out."""
    rows = []
    for w in weights:
        row = {"seed": w.get("seed"), "repeat": w.get("repeat"), "fold": w.get("fold")}
        for key, value in (w.get("raw") or {}).items():
            number = _round_numeric(value, decimals)
            if number is not None:
                row[key] = number
        rows.append(row)
    return pd.DataFrame(rows)


def _round_numeric(value, decimals: int):
    """``value`` as numbers rounded to ``decimals`` (nested lists for arrays), or None when it is
    not numeric (a name, a ragged list)."""
    try:
        return np.round(np.asarray(value, dtype=float), decimals).tolist()
    except (TypeError, ValueError):
        return None


def summary_table(summary: dict, decimals: int = 3) -> pd.DataFrame:
    """One row per metric summarised over folds in ``summary`` (:meth:`ExperimentResult.summary`,
    or ``metrics.json["summary"]``): its ``mean``, ``sd`` and the two ends of its 95 % t-interval
    (``ci95_low``, ``ci95_high``), rounded to ``decimals``."""
    rows = {}
    for name, value in summary.items():
        if isinstance(value, dict) and "mean" in value:
            low, high = (value.get("ci95") or [None, None])[:2]
            rows[name] = {"mean": value["mean"], "sd": value.get("sd"), "ci95_low": low,
                          "ci95_high": high}
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["mean", "sd", "ci95_low", "ci95_high"]
                                  ).astype(float).round(decimals)


def by_seed_table(summary: dict, decimals: int = 3) -> pd.DataFrame | None:
    """The spread over seeds of a several-seed run: one row per summarised metric, with each
    seed's mean over its folds (``seed <s>``), their mean (``mean over seeds``) and standard
    deviation (``sd over seeds``), rounded to ``decimals``. None for a single-seed run (nothing
    to spread). ``summary`` is :meth:`ExperimentResult.summary` or ``metrics.json["summary"]``."""
    if len(summary["seeds"]) <= 1:
        return None
    by_seed = summary["by_seed"]["metrics"]
    return pd.DataFrame({m: {**{f"seed {s}": v for s, v in zip(summary["seeds"], d["per_seed"])},
                             "mean over seeds": d["mean"], "sd over seeds": d["sd"]}
                         for m, d in by_seed.items()}).T.round(decimals)
