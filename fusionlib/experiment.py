"""One experiment: load data, split by patient, cache branch probabilities, fit and score fusion.

:func:`run_experiment` is the sequence (see docs/protocol.md): load the data, subsample
patients, make the outer folds, build the branches; then per outer fold read the branch
probabilities from the cache or fit them (:mod:`fusionlib.branches`; keyed by data
fingerprint, data percentage, fold, seed and branch settings, so experiments that differ
only in fusion train the branches once) and :func:`run_fold`: split the training rows,
fit the head with its penalty search, fuse the test fold, optional Stage 2, baselines,
decide, score, explain the weights. The test fold is used once, for the final scores.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import atomic_write_text
from .baselines import fit_baselines
from .branches import ClinicalBranch, ImageBranch
from .branches.cache import BranchCache
from .data import LABELS, Cohort
from .datasets import load_dataset
from .explain import explain_weights, image_branch_gap
from .fusing import (FoldData, _complete, _per_model_inputs, fuse_per_model, fuse_with_missing,
                     split_training_rows)
from .metrics import classification_scores, mean_ci
from .params import ExperimentParams
from .splits import check_folds, check_phases, patient_folds, subsample_patients

logger = logging.getLogger("fusionlib")

__all__ = ["BranchCache", "ExperimentResult", "FoldResult", "fuse_per_model", "fuse_with_missing",
           "load_dataset", "run_experiment", "run_fold"]


# --------------------------------------------------------------------------- results


SHARE_PREFIXES = ("", "converged_", "start_")
"""Heads whose shares are reported: deployed (no prefix), converged at the same penalty, start."""

SUMMARY_METRICS = (
    "qwk", "accuracy", "macro_f1", "f1_I", "f1_P", "f1_R", "log_loss", "brier", "ece",
    *[f"{prefix}{kind}{suffix}" for prefix in SHARE_PREFIXES
      for kind in ("rf_share", "influence_rf_share") for suffix in ("", "_I", "_P", "_R")],
    "train_objective_gap", "moved_from_start")
"""Per-fold columns summarised as mean, SD and t-interval over folds in ``metrics.json``."""


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
    scores: dict
    stage_scores: dict
    weights: dict
    history: dict = field(default_factory=dict)
    preds: dict = field(default_factory=dict)   # source ("fused", baselines) -> rule -> (n_test,)


@dataclass
class ExperimentResult:
    params: ExperimentParams
    cohort: Cohort
    folds: list
    provenance: dict

    def fold_table(self) -> pd.DataFrame:
        """One row per (repeat, fold): test scores, stage scores and the learned-weight shares
        (sensitivity and influence; deployed, converged and start heads)."""
        rows = []
        for f in self.folds:
            row = {"repeat": f.repeat, "fold": f.fold, **f.scores, **f.stage_scores,
                   "decision": (f.weights.get("decision") or {}).get("fused")}
            for prefix in SHARE_PREFIXES:
                for kind in ("rf_share", "influence_rf_share"):
                    row[f"{prefix}{kind}"] = f.weights.get(f"{prefix}{kind}")
                    per_class = f.weights.get(f"{prefix}{kind}_per_class") or [None] * 3
                    for label, share in zip(LABELS, per_class):
                        row[f"{prefix}{kind}_{label}"] = share
            row["train_objective_gap"] = f.weights.get("train_objective_gap")
            row["moved_from_start"] = f.weights.get("moved_from_start")
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> dict:
        table = self.fold_table()
        out = {"name": self.params.name, "fusion": self.params.fusion.variant,
               "data_percentage": self.params.protocol.data_percentage,
               "n_folds": int(len(table)), "n_cases": int(self.cohort.n_cases),
               "trainable_fusion_params": self.provenance.get("trainable_fusion_params")}
        out["decision"] = self.params.decision.rule
        out["dropped_images"] = self.cohort.meta.get("dropped_images", {"count": 0, "by_reason": {}})
        out["head_never_trained_folds"] = int(sum(bool(f.stage_scores.get("head_never_trained"))
                                                  for f in self.folds))
        for metric in SUMMARY_METRICS:
            values = table[metric].dropna().to_numpy(dtype=float) if metric in table else []
            if len(values):
                mean, sd, lo, hi = mean_ci(values)
                out[metric] = {"mean": mean, "sd": sd, "ci95": [lo, hi]}
        pooled = self.predictions()
        out["pooled"] = classification_scores(pooled["label"], pooled[["p_I", "p_P", "p_R"]].to_numpy(),
                                              pooled["pred"].to_numpy())
        # Cases by modality availability (each case is a test case once per repeat), and the
        # pooled scores on the test cases that have every modality (those the head fused).
        present = {m: (np.ones(self.cohort.n_cases, bool) if m == "metadata"
                       else self.cohort.has_modality(m)) for m in self.params.data.modalities}
        combos = ["+".join(m for m in self.params.data.modalities if present[m][i]) or "none"
                  for i in range(self.cohort.n_cases)]
        if len(self.params.data.modalities) > 1:
            combos = [f"{c} only" if c in self.params.data.modalities else c for c in combos]
        out["modality_counts"] = {c: int(n) for c, n in pd.Series(combos).value_counts().items()}
        complete = np.ones(len(pooled), bool)
        for m in self.params.data.modalities:
            if f"{m}_p_I" in pooled:
                complete &= pooled[f"{m}_p_I"].notna().to_numpy()
        sub = pooled[complete]
        out["scores_complete_cases"] = (
            classification_scores(sub["label"], sub[["p_I", "p_P", "p_R"]].to_numpy(),
                                  sub["pred"].to_numpy())
            if len(sub) else {"n": 0})
        return out

    def predictions(self) -> pd.DataFrame:
        """One row per (repeat, test case): label, fused, branch and baseline probabilities."""
        frames = []
        for f in self.folds:
            cases = self.cohort.cases.iloc[f.case_index]
            frame = pd.DataFrame({"repeat": f.repeat, "fold": f.fold,
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
        return [{"repeat": f.repeat, "fold": f.fold, **f.weights} for f in self.folds]

    def save(self, directory: str | Path) -> Path:
        """Write metrics.json, predictions.csv, weights.json and provenance.json atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        metrics = {"summary": self.summary(), "folds": self.fold_table().to_dict(orient="records")}
        files = {
            "metrics.json": json.dumps(_jsonable(metrics), indent=2),
            "predictions.csv": self.predictions().to_csv(index=False),
            "weights.json": json.dumps(_jsonable(self.weights()), indent=2),
            "provenance.json": json.dumps(_jsonable(self.provenance), indent=2),
        }
        for name, text in files.items():
            atomic_write_text(directory / name, text)
        return directory


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, Path):
        return str(value)
    return value


# --------------------------------------------------------------------------- the experiment


def run_experiment(params: ExperimentParams, cohort: Cohort | None = None,
                   cache_dir: str | Path | None = ".cache", progress: bool = True,
                   log=None) -> ExperimentResult:
    """Run every (repeat, fold) of an experiment; returns the scored result (not yet saved)."""
    started = time.time()
    cohort = cohort if cohort is not None else load_dataset(params.data)
    fingerprint = cohort.fingerprint()
    cohort = subsample(cohort, params)
    folds = outer_folds(cohort, params)
    cache_root = None if cache_dir is None else Path(cache_dir)
    cache = BranchCache(None if cache_root is None else cache_root / "branches")
    branches = build_branches(params, cache_root)
    results = []
    bar = _progress(len(folds), f"{params.name}: folds", progress)
    for fold in folds:
        outputs = branch_outputs(branches, cohort, fold, cache, fingerprint, params)
        results.append(run_fold(cohort, params, fold, outputs, log=log))
        bar.update(1)
    bar.close()
    provenance = provenance_of(params, cohort, fingerprint)
    provenance.update({"seconds": round(time.time() - started, 2),
                       "branch_cache": {"hits": cache.hits, "misses": cache.misses},
                       "trainable_fusion_params": _parameter_count(params)})
    return ExperimentResult(params, cohort, results, provenance)


def subsample(cohort: Cohort, params: ExperimentParams) -> Cohort:
    """The patients the experiment keeps (nested across percentages for one seed).

    Refuses what cannot be learned before any model trains: too few patients for the folds.
    """
    protocol = params.protocol
    cohort = cohort.subset(subsample_patients(cohort.groups, protocol.data_percentage, protocol.seed))
    check_folds(cohort.y, cohort.groups, protocol.folds, source=cohort.source)
    return cohort


def outer_folds(cohort: Cohort, params: ExperimentParams) -> list:
    """Every (repeat, fold); each fold's training rows must hold every phase."""
    protocol = params.protocol
    folds = [f for r in range(protocol.repeats)
             for f in patient_folds(cohort.y, cohort.groups, protocol.folds, protocol.seed, r)]
    for f in folds:
        check_phases(cohort.y[f.train], what=f"the training rows of fold {f.index + 1} "
                     f"(repeat {f.repeat + 1})", source=cohort.source)
    return folds


def build_branches(params: ExperimentParams, cache_root: Path | None = None) -> dict:
    """The branch objects an experiment's modalities need, keyed by modality."""
    protocol = params.protocol
    out = {}
    for modality in params.data.modalities:
        if modality == "metadata":
            out[modality] = ClinicalBranch.from_settings(params.clinical, protocol.sampling,
                                                         protocol.seed)
        else:
            out[modality] = ImageBranch(
                modality, params.image, validation_fraction=protocol.validation_fraction,
                sampling=protocol.sampling, random_state=protocol.seed,
                cache_dir=None if cache_root is None else str(cache_root / "crops"))
    return out


def branch_outputs(branches: dict, cohort: Cohort, fold, cache: BranchCache, fingerprint: str,
                   params: ExperimentParams) -> dict:
    """Each branch's probabilities for one outer fold: from the cache, else fitted now."""
    protocol = params.protocol
    outputs = {}
    for modality, branch in branches.items():
        key = BranchCache.key(data=fingerprint, percentage=protocol.data_percentage,
                              fold=fold.index, repeat=fold.repeat, n_folds=protocol.folds,
                              seed=protocol.seed, settings=branch.settings())
        outputs[modality] = cache.get_or_compute(
            key, lambda b=branch: b.fit_fold(cohort, fold.train, fold.test))
    return outputs


def run_fold(cohort: Cohort, params: ExperimentParams, fold, outputs: dict, log=None) -> FoldResult:
    """Stage 1 fusion on one fold's cached branch outputs, decided and scored on the test fold."""
    log = log or logger.info
    y = cohort.y
    modalities = params.data.modalities
    data = split_training_rows(cohort, params, fold, outputs)
    head, start_head, history, n_params = fit_fusion_head(params, data, params.protocol.seed + fold.index, log)
    test = test_inputs(params, fold, outputs)
    proba = fuse_per_model(head, test.inputs)
    y_test = y[test.rows]
    val_proba = fuse_with_missing(head, data.x_val) if len(data.y_val) else np.empty((0, 3))
    stage_scores = stage1_scores(head, history, n_params, data, val_proba, test, y_test)
    stage_scores.update(_image_val_qwk(outputs, modalities))
    stage_scores.update(image_branch_gap(outputs, modalities, y[fold.train], y[fold.test]))
    if params.stage2.enabled:
        from .stage2 import run_stage2

        stage2 = run_stage2(cohort, params, fold, head, outputs, data.fit_rows, data.val_rows,
                            test.rows, proba, log)
        stage_scores.update(stage2["scores"])
        if stage2["kept"]:
            head, proba = stage2["head"], stage2["proba"]
            history["stage2"] = stage2["history"]
    baselines, baseline_val = fit_baselines(modalities, data, test.probs, test.inputs)
    sources = {"fused": (proba, val_proba), **{name: (baselines[name], baseline_val[name])
                                              for name in baselines}}
    preds, chosen = decide_sources(params.decision.rule, sources, data)
    scores = classification_scores(y_test, proba, preds["fused"][params.decision.rule])
    weights = explain_weights(params, head, start_head, data, history, test.inputs, n_params)
    weights["decision"] = chosen
    return FoldResult(fold.index, fold.repeat, test.rows, y_test, proba,
                      dict(zip(modalities, test.probs)), baselines, scores, stage_scores, weights,
                      history={"head": history}, preds=preds)


def fit_fusion_head(params: ExperimentParams, data: FoldData, seed: int, log) -> tuple:
    """``(head, its untrained start, history, trainable parameters)``: the head fitted on the
    inner fit rows, its penalty chosen on the inner-validation rows."""
    from .head import fit_head_with_penalty_search
    from .models import build_fusion_head, fusion_parameter_count

    fusion = params.fusion

    def new_head():
        return build_fusion_head(params.data.modalities, fusion=fusion.variant,
                                 fusion_options=fusion.options, random_state=seed)

    start_head = new_head()
    n_params = fusion_parameter_count(start_head)
    if fusion.variant != "fixed":
        log(f"Using {fusion.variant} fusion layer (adaptive RF/Image weighting)")
    log(f"Stage 1 trainable parameters: {n_params}")
    head, history = fit_head_with_penalty_search(params.head, data, new_head, seed)
    return head, start_head, history, n_params


@dataclass
class TestInputs:
    """The test rows a fold scores and their branch probabilities (mean and per inner model)."""

    rows: np.ndarray
    probs: list                 # per modality: (n, 3), the mean over a branch's inner models
    inputs: list                # per inner model k: [p_m of model k for m in modalities]
    n_unscored: int
    n_excluded: int


def test_inputs(params: ExperimentParams, fold, outputs: dict) -> TestInputs:
    """The test cases to fuse: a case no branch could score (an image-only run's case without
    an image) has nothing to fuse or decide and is left out and counted; with
    ``missing_cases: exclude`` so is a case missing any branch."""
    modalities = params.data.modalities
    branch_test = np.stack([outputs[m].test_proba for m in modalities])
    keep = ~np.isnan(branch_test).any(axis=2).all(axis=0)
    scorable = keep.copy()
    if params.protocol.missing_cases == "exclude":
        keep &= _complete(list(branch_test))
    return TestInputs(fold.test[keep], [outputs[m].test_proba[keep] for m in modalities],
                      _per_model_inputs(outputs, modalities, keep), int((~scorable).sum()),
                      int((scorable & ~keep).sum()))


def stage1_scores(head, history: dict, n_params: int, data: FoldData, val_proba, test: TestInputs,
                  y_test) -> dict:
    """The head's validation QWK, best epoch and penalty, and the test fold's case counts."""
    return {"stage1_val_qwk": classification_scores(data.y_val, val_proba)["qwk"]
            if len(data.y_val) else None,
            "stage1_best_epoch": history.get("best_epoch"),
            "stage1_penalty": history.get("penalty"),
            "n_test_all_modalities": int(_complete(test.probs).sum()),
            "n_test_unscored": test.n_unscored,
            "n_test_excluded": test.n_excluded,
            # The same head on the mean of the inner models' probabilities (the old input).
            "log_loss_mean_of_models_input": classification_scores(
                y_test, fuse_with_missing(head, test.probs))["log_loss"],
            # A head with weights whose restored epoch is its start never trained (e.g. a
            # learning rate that diverges at once): its "learned" weights are the initial ones.
            "head_never_trained": bool(n_params) and history.get("best_epoch", 0) == 0}


def _image_val_qwk(outputs: dict, modalities: list) -> dict:
    return {f"{m}_val_qwk": float(np.mean([h["best_val_qwk"] for h in
                                           outputs[m].info.get("history", [])] or [np.nan]))
            for m in modalities if m != "metadata"}


def decide_sources(decision: str, sources: dict, data: FoldData) -> tuple[dict, dict]:
    """Predictions of every source under every decision rule, each rule fitted on training data
    only (the training prevalence; ``tuned`` also on the source's own inner-validation
    probabilities). The rule named ``decision`` is the run's headline; the others are kept so
    a comparison can show every rule. Returns ``({source: {rule: pred}}, {source: applied})``."""
    from .decision import DECISIONS, decide

    preds, chosen = {}, {}
    for source, (test_proba, val_proba) in sources.items():
        preds[source] = {}
        for name, rule_class in DECISIONS.items():
            rule = rule_class().fit(data.y_train, val_proba, data.y_val)
            preds[source][name] = decide(test_proba, rule)
            if name == decision:
                chosen[source] = rule.describe()
    return preds, chosen


def _parameter_count(params: ExperimentParams) -> int:
    from .models import build_fusion_head, fusion_parameter_count

    return fusion_parameter_count(build_fusion_head(
        params.data.modalities, fusion=params.fusion.variant,
        fusion_options=params.fusion.options, random_state=params.protocol.seed))


def provenance_of(params: ExperimentParams, cohort: Cohort, fingerprint: str) -> dict:
    import platform
    import subprocess
    from importlib import metadata

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {}
    for package in ("fusionlib", "tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas",
                    "scikit-learn", "imbalanced-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {"params": params.to_dict(), "git_commit": commit, "versions": versions,
            "python": platform.python_version(), "data": {"name": cohort.name,
            "fingerprint": fingerprint, "n_cases_used": cohort.n_cases,
            "meta": cohort.meta}, "seed": params.protocol.seed,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)
