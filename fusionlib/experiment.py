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

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .baselines import fit_baselines
from .branches import CLINICAL_MODELS, ClinicalBranch, ImageBranch
from .branches.cache import BranchCache
from .data import Cohort
from .datasets import load_dataset
from .explain import explain_weights, image_branch_gap
from .fusion.options import CLINICAL
from .head import one_blas_thread
from .fusing import (FoldData, complete_rows, fuse_per_model, fuse_with_missing, per_model_inputs,
                     split_training_rows)
from .results import ExperimentResult, FoldResult, classification_scores
from .params import ExperimentParams
from .splits import check_folds, check_phases, patient_folds, subsample_patients

logger = logging.getLogger("fusionlib")

__all__ = ["BranchCache", "ExperimentResult", "FoldResult", "Replicate", "branch_outputs",
           "build_branches", "decide_sources", "fit_fusion_head", "for_seed", "fuse_per_model",
           "fuse_with_missing", "head_seed", "load_dataset", "outer_folds", "prefill_branches",
           "replicate", "run_experiment", "run_fold", "split_training_rows", "subsample",
           "test_inputs", "validation_proba"]


# --------------------------------------------------------------------------- the experiment


def run_experiment(params: ExperimentParams, cohort: Cohort | None = None,
                   cache_dir: str | Path | None = ".cache", progress: bool = True,
                   log=None) -> ExperimentResult:
    """Run every (seed, repeat, fold) of an experiment; returns the scored result (not yet saved).

    Each seed of ``protocol.seeds`` (or the one ``protocol.seed``) is a replicate of the whole
    protocol: its own patient subsample, outer folds, branch models and heads.
    """
    started = time.time()
    cohort = cohort if cohort is not None else load_dataset(params.data)
    fingerprint = cohort.fingerprint()
    cache_root = None if cache_dir is None else Path(cache_dir)
    cache = BranchCache(None if cache_root is None else cache_root / "branches")
    replicates = [replicate(cohort, params, seed) for seed in params.protocol.seed_list()]
    results, cohorts = [], {}
    bar = _progress(sum(len(rep.folds) for rep in replicates), f"{params.name}: folds", progress)
    for rep in replicates:
        seed = rep.params.protocol.seed
        cohorts[seed] = rep.cohort
        branches = build_branches(rep.params, cache_root)
        for fold in rep.folds:
            outputs = branch_outputs(branches, rep.cohort, fold, cache, fingerprint, rep.params)
            with one_blas_thread():     # small problems: BLAS threads only add contention
                result = run_fold(rep.cohort, rep.params, fold, outputs, log=log)
            result.seed = seed
            results.append(result)
            bar.update(1)
    bar.close()
    union = np.unique(np.concatenate([rep.rows for rep in replicates]))
    provenance = provenance_of(params, cohort.subset(union), fingerprint)
    provenance.update({"seconds": round(time.time() - started, 2),
                       "branch_cache": {"hits": cache.hits, "misses": cache.misses},
                       # every fold's head has the same count (same variant and modalities)
                       "trainable_fusion_params": results[0].weights["trainable_fusion_params"]})
    return ExperimentResult(params, cohort.subset(union), results, provenance, cohorts=cohorts)


class Replicate(NamedTuple):
    """One seed's replicate of the protocol (what :func:`replicate` returns)."""

    params: ExperimentParams    # the experiment's parameters with that one seed
    rows: np.ndarray            # positions, in the whole cohort, of the cases it keeps
    cohort: Cohort              # the cohort of those cases
    folds: list                 # its outer folds (every repeat), over ``cohort``'s rows


def replicate(cohort: Cohort, params: ExperimentParams, seed: int) -> Replicate:
    """One seed's replicate of the protocol: its parameters, patient subsample and outer folds."""
    seeded = for_seed(params, seed)
    rows = subsample_rows(cohort, seeded)
    used = cohort.subset(rows)
    return Replicate(params=seeded, rows=rows, cohort=used, folds=outer_folds(used, seeded))


def prefill_branches(params: ExperimentParams, seed: int, cache_dir: str | Path) -> dict:
    """Fit (or find cached) every branch output one seed of ``params`` needs, into the cache.

    What the runner does before the notebooks when it runs several at once: each (branch
    group, seed) is one task, so the branches of three seeds train side by side instead of
    one after another inside the first notebook of a group. The run then reads them.
    """
    cohort = load_dataset(params.data)
    fingerprint = cohort.fingerprint()
    rep = replicate(cohort, params, seed)
    cache = BranchCache(Path(cache_dir) / "branches")
    branches = build_branches(rep.params, Path(cache_dir))
    for fold in rep.folds:
        branch_outputs(branches, rep.cohort, fold, cache, fingerprint, rep.params)
    return {"hits": cache.hits, "misses": cache.misses}


def for_seed(params: ExperimentParams, seed: int) -> ExperimentParams:
    """``params`` with the single seed ``seed`` (one replicate of a several-seed run)."""
    return params.model_copy(update={"protocol": params.protocol.for_seed(seed)})


def subsample_rows(cohort: Cohort, params: ExperimentParams) -> np.ndarray:
    """Positions of the cases the experiment keeps (nested across percentages for one seed).

    Refuses what cannot be learned before any model trains: too few patients for the folds.
    """
    protocol = params.protocol
    rows = np.asarray(subsample_patients(cohort.groups, protocol.data_percentage, protocol.seed))
    check_folds(cohort.y[rows], cohort.groups[rows], protocol.folds, source=cohort.source)
    return rows


def subsample(cohort: Cohort, params: ExperimentParams) -> Cohort:
    """The cohort of the cases the experiment keeps (:func:`subsample_rows`)."""
    return cohort.subset(subsample_rows(cohort, params))


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
        if modality == CLINICAL:
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
    head, start_head, history, n_params = fit_fusion_head(params, data, head_seed(params, fold), log)
    test = test_inputs(params, fold, outputs)
    proba = fuse_per_model(head, test.inputs)
    y_test = y[test.rows]
    val_proba = validation_proba(head, data)
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


def head_seed(params: ExperimentParams, fold) -> int:
    """The random seed of one fold's fusion head (its initial weights): the run's seed plus the
    fold's index, as :func:`run_fold` uses it."""
    return params.protocol.seed + fold.index


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
        clinical = CLINICAL_MODELS[params.clinical.model].short
        log(f"Using {fusion.variant} fusion layer (adaptive {clinical}/Image weighting)")
    log(f"Stage 1 trainable parameters: {n_params}")
    head, history = fit_head_with_penalty_search(params.head, data, new_head, seed)
    return head, start_head, history, n_params


def validation_proba(head, data: FoldData) -> np.ndarray:
    """The head's fused probabilities of the fold's inner-validation rows (what the decision
    rules are tuned on); ``(0, 3)`` when the fold has none."""
    return fuse_with_missing(head, data.x_val) if len(data.y_val) else np.empty((0, 3))


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
        keep &= complete_rows(list(branch_test))
    return TestInputs(fold.test[keep], [outputs[m].test_proba[keep] for m in modalities],
                      per_model_inputs(outputs, modalities, keep), int((~scorable).sum()),
                      int((scorable & ~keep).sum()))


def stage1_scores(head, history: dict, n_params: int, data: FoldData, val_proba, test: TestInputs,
                  y_test) -> dict:
    """The head's validation QWK, best epoch and penalty, and the test fold's case counts."""
    return {"stage1_val_qwk": classification_scores(data.y_val, val_proba)["qwk"]
            if len(data.y_val) else None,
            "stage1_best_epoch": history.get("best_epoch"),
            "stage1_penalty": history.get("penalty"),
            "n_test_all_modalities": int(complete_rows(test.probs).sum()),
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
            for m in modalities if m != CLINICAL}


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


LOCK_FILE = Path(__file__).resolve().parents[1] / "requirements.lock"


def lock_file_digest(path: Path = LOCK_FILE) -> dict | None:
    """``{"file": name, "sha256": hex}`` of the repository's lock file (the exact versions
    ``make setup`` installs); None where there is none, e.g. an installed package outside a
    checkout."""
    import hashlib

    try:
        return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    except OSError:
        return None


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
            "lock": lock_file_digest(), "python": platform.python_version(),
            "data": {"name": cohort.name, "fingerprint": fingerprint,
                     "n_cases_used": cohort.n_cases, "meta": cohort.meta},
            "seed": params.protocol.seed if params.protocol.seeds is None else None,
            "seeds": params.protocol.seed_list(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)
