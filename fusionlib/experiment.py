"""One experiment: load data, split by patient, cache branch probabilities, fit and score fusion.

Per outer fold (see docs/protocol.md):

1. branches: RF and image CNN probabilities, out-of-fold for training rows
   (:mod:`fusionlib.branches`), cached on disk by (data fingerprint, data
   percentage, fold, seed, branch settings) so experiments that differ only in
   fusion train the branches once;
2. Stage 1: the fusion head trained on the cached probabilities of the inner
   fit patients, early-stopped on the inner-validation patients;
3. the test fold is used once, for the final score, the learned-weight
   analysis and the baselines (metadata only, image only, stacking).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import time
import zipfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._io import atomic_open, file_lock
from .branches import BranchOutput, ImageBranch, MetadataBranch
from .data import Cohort, load_cohort
from .params import ExperimentParams
from .results import ExperimentResult, FoldResult, classification_scores
from .results import jsonable as _jsonable
from .splits import (check_folds, check_phases, inner_validation_split, patient_folds,
                     resample_training_rows, subsample_patients)

logger = logging.getLogger("fusionlib")


# --------------------------------------------------------------------------- data


def load_dataset(params: ExperimentParams) -> Cohort:
    """The experiment's cohort: the generated synthetic one, or the real folder."""
    if params.dataset == "synthetic":
        from .synthetic import ensure_default_cohort

        root = ensure_default_cohort(preset=params.preset, random_state=params.cohort_seed)
        return load_cohort(root)
    if params.dataset == "real_synthetic_images":
        # The real clinical table and labels; thermal maps rendered from the true labels.
        from .synthetic import ensure_real_synthetic_cohort

        root = ensure_real_synthetic_cohort(params.resolved_data_dir(), params.image_signal,
                                            params.cohort_seed)
        return load_cohort(root)
    return load_cohort(params.resolved_data_dir(), name="real:dfu")


# --------------------------------------------------------------------------- branch cache


class BranchCache:
    """Branch probabilities on disk, one ``.npz`` per key, written atomically.

    ``directory=None`` disables caching. Hits and misses are counted so a
    benchmark can show what was reused.
    """

    def __init__(self, directory: str | Path | None):
        self.directory = None if directory is None else Path(directory)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(**parts) -> str:
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def get_or_compute(self, key: str, compute) -> BranchOutput:
        # One process computes an entry; a concurrent one (a second `fusionlib run` on the same
        # cache) waits for it and then reads it instead of training the same branch again.
        with nullcontext() if self.directory is None else file_lock(self.directory / f".{key}.lock"):
            return self._get_or_compute(key, compute)

    def _get_or_compute(self, key: str, compute) -> BranchOutput:
        path = None if self.directory is None else self.directory / f"{key}.npz"
        if path is not None and path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    out = BranchOutput(data["train_index"], data["test_index"],
                                       data["train_proba"], data["test_proba"],
                                       json.loads(str(data["info"])),
                                       test_proba_models=(data["test_proba_models"]
                                                          if "test_proba_models" in data else None))
                out.models = self._load_models(key, int(out.info.get("n_models", 0)))
                self.hits += 1
                return out
            except _CACHE_READ_ERRORS as err:  # unreadable entry (or one of its models): recompute
                logger.warning("branch cache entry %s is unreadable (%s: %s); recomputing it",
                               path, type(err).__name__, " ".join(str(err).split())[:120])
                path.unlink(missing_ok=True)
                for stale in self.directory.glob(f"{key}_model*.keras"):
                    stale.unlink(missing_ok=True)
        self.misses += 1
        out = compute()
        if path is not None:
            # An image-only experiment saves models before any .npz creates the folder.
            self.directory.mkdir(parents=True, exist_ok=True)
            # Models first, the .npz last: an entry counts only once everything is on disk.
            for k, model in enumerate(out.models):
                final = self.directory / f"{key}_model{k}.keras"
                staged = self.directory / f".{key}_model{k}.tmp.keras"
                model.save(staged)
                os.replace(staged, final)
            out.info["n_models"] = len(out.models)
            with atomic_open(path, "wb") as handle:
                np.savez(handle, info=np.array(json.dumps(_jsonable(out.info))), **out.to_arrays())
        return out

    def _load_models(self, key: str, n_models: int) -> list:
        """The inner CNNs saved with an entry, loaded only when Stage 2 asks for them.

        Each file is checked now (a readable zip holding a Keras config), so a missing,
        truncated or empty ``.keras`` file makes the whole entry be recomputed.
        """
        models = []
        for k in range(n_models):
            model_path = self.directory / f"{key}_model{k}.keras"
            with zipfile.ZipFile(model_path) as archive:
                if "config.json" not in archive.namelist():
                    raise KeyError(f"{model_path.name} holds no config.json")
                bad = archive.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"{model_path.name}: bad CRC in {bad}")
            models.append(_LazyModel(model_path))
        return models


_CACHE_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile,
                      pickle.UnpicklingError)
"""Everything reading a damaged cache entry can raise (JSON errors are ValueErrors)."""


class _LazyModel:
    """A cached ``.keras`` file that is loaded on first use (most runs never need it)."""

    def __init__(self, path: Path):
        self.path = path
        self._model = None

    def get(self):
        if self._model is None:
            from .models import load_model

            self._model = load_model(self.path)
        return self._model


# --------------------------------------------------------------------------- the protocol


def branch_configs(params: ExperimentParams, cache_root: Path | None = None) -> dict:
    """The branch objects an experiment's modalities need, keyed by modality."""
    out = {}
    for modality in params.modalities:
        if modality == "metadata":
            out[modality] = MetadataBranch(n_estimators=params.rf_trees,
                                           min_samples_leaf=params.rf_min_samples_leaf,
                                           inner_folds=params.rf_inner_folds, sampling=params.sampling,
                                           random_state=params.seed)
        else:
            out[modality] = ImageBranch(
                modality=modality, image_size=params.image_size, crop_margin=params.crop_margin,
                backbone=params.backbone, backbone_weights=params.backbone_weights,
                inner_folds=params.image_inner_folds, epochs=params.image_epochs,
                patience=params.image_patience, validation_fraction=params.validation_fraction,
                sampling=params.sampling, random_state=params.seed,
                cache_dir=None if cache_root is None else str(cache_root / "crops"))
    return out


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


def _per_model_inputs(outputs: dict, modalities: list, keep: np.ndarray) -> list[list[np.ndarray]]:
    """Test inputs per inner model: ``[[p_m of model k for m in modalities] for k]``.

    A single-model branch (the RF) gives the same array to every ``k``.
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


def _complete(probs) -> np.ndarray:
    return ~np.isnan(np.stack(probs)).any(axis=(0, 2))


def split_training_rows(cohort: Cohort, params: ExperimentParams, fold, outputs: dict) -> FoldData:
    """Inner fit / validation patients and the branch probabilities of their complete cases."""
    y = cohort.y
    fit_rows, val_rows = inner_validation_split(y, cohort.groups, fold.train, params.validation_fraction,
                                                params.seed + 7919 * fold.repeat + fold.index)
    pos = {row: i for i, row in enumerate(fold.train)}

    def train_probs(rows):
        return [outputs[m].train_proba[[pos[r] for r in rows]] for m in params.modalities]

    p_fit, p_val = train_probs(fit_rows), train_probs(val_rows)
    ok_fit, ok_val = _complete(p_fit), _complete(p_val)
    resampled = resample_training_rows(y[fit_rows][ok_fit], params.sampling, params.seed + fold.index)
    return FoldData(fit_rows, val_rows, [p[ok_fit][resampled] for p in p_fit],
                    y[fit_rows][ok_fit][resampled], [p[ok_val] for p in p_val], y[val_rows][ok_val],
                    cohort.groups[val_rows][ok_val], y[fold.train])


def head_trainer(params: ExperimentParams, penalty: float, **overrides):
    from .training import HeadTrainer

    settings = dict(loss=params.head_loss, class_weight=params.head_class_weight,
                    optimizer=params.head_optimizer, learning_rate=params.head_learning_rate,
                    max_epochs=params.head_max_epochs, patience=params.head_patience,
                    monitor=params.head_monitor, penalty=penalty,
                    penalty_kind=params.head_penalty_kind)
    return HeadTrainer(**{**settings, **overrides})


def fit_head_with_penalty_search(params: ExperimentParams, data: FoldData, new_head, seed: int):
    """Fit one head per candidate penalty; keep the one the penalty rule chooses.

    The penalty is chosen like the stopping epoch, on the inner-validation patients.
    ``one_se`` takes the strongest penalty whose validation loss is within one standard
    error of the best (the SE of the paired, patient-clustered difference,
    :func:`fusionlib.training.one_standard_error_choice`): smaller differences are noise,
    and the stronger penalty is the one that does not fit noise in an uninformative branch.
    ``min`` takes the best. Returns ``(head, history)``; ``history['penalty_table']`` holds
    each candidate's validation-loss difference to the best and its SE.
    """
    from .models import fusion_parameter_count
    from .training import fit_head, one_standard_error_choice

    head = new_head()
    candidates = sorted(set(params.head_penalty)) if fusion_parameter_count(head) else [0.0]
    fitted = []
    for strength in candidates:
        candidate = new_head() if fitted else head
        history = fit_head(candidate, data.x_fit, data.y_fit, data.x_val, data.y_val,
                           head_trainer(params, strength), random_state=seed)
        fitted.append((strength, candidate, history))
    losses = [h.get("val_row_loss") for _, _, h in fitted]
    if params.head_monitor == "val_loss" and all(v is not None for v in losses):
        chosen, table = one_standard_error_choice(candidates, losses, data.groups_val,
                                                  params.head_penalty_rule)
    else:  # no validation losses to compare (monitor none or val_qwk): the selection score
        scores = [_selection_score(h, params.head_monitor) for _, _, h in fitted]
        chosen, table = candidates[int(np.argmin(scores))], {}
    _, head, history = next(f for f in fitted if f[0] == chosen)
    history["penalty"] = chosen
    history["penalty_table"] = {str(k): list(v) for k, v in table.items()}
    return head, history


def explain_weights(params: ExperimentParams, head, start_head, data: FoldData, history: dict,
                    test_inputs: list[list[np.ndarray]], n_params: int) -> dict:
    """What the head learned: raw weights; sensitivity and influence shares of the deployed
    head, of the same head fitted to convergence (same penalty, no early stopping) and of its
    untrained start; the training-objective gap of the deployed head to that optimum."""
    from .models import build_fusion_head
    from .training import fit_head_converged, head_objective
    from .weights import effective_rf_share, influence_share, modality_jacobians, raw_fusion_weights

    modalities = params.modalities
    weights = {"fusion": params.fusion, "raw": raw_fusion_weights(head, params.fusion),
               "trainable_fusion_params": n_params}
    # The rows the head meets at test time: the complete cases, one block per inner model.
    stacks = [np.stack([inputs[i] for inputs in test_inputs]) for i in range(len(modalities))]
    complete = ~np.isnan(np.stack(stacks)).any(axis=(0, 1, 3))
    if "metadata" not in modalities or len(modalities) < 2 or not complete.any():
        return weights
    n_models = len(test_inputs)
    probs = {m: st[:, complete].reshape(-1, 3) for m, st in zip(modalities, stacks)}

    def shares(model, prefix):
        jac = modality_jacobians(model, probs)
        sens = effective_rf_share(model, probs, jac)
        infl = influence_share(model, probs, jac, n_models=n_models)
        out = {f"{prefix}rf_share": sens["overall"], f"{prefix}rf_share_per_class": sens["per_class"],
               f"{prefix}influence_rf_share": infl["overall"],
               f"{prefix}influence_rf_share_per_class": infl["per_class"]}
        if not prefix:  # every modality's share, for the deployed head only (as before)
            out["modality_share"] = sens["per_modality"]
        return out

    weights.update(shares(head, ""))
    if not n_params:
        return weights
    trainer = head_trainer(params, history.get("penalty", 0.0))
    converged = build_fusion_head(modalities, fusion=params.fusion, fusion_options=params.fusion_options)
    converged.set_weights(head.get_weights())
    fit = fit_head_converged(converged, data.x_fit, data.y_fit, trainer)
    deployed_objective = head_objective(head, data.x_fit, data.y_fit, trainer)
    weights.update(shares(converged, "converged_"))
    weights.update(shares(start_head, "start_"))
    weights["converged_raw"] = raw_fusion_weights(converged, params.fusion)
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
    from .metrics import qwk

    out = {}
    for m in modalities:
        if m == "metadata":
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


def run_fold(cohort: Cohort, params: ExperimentParams, fold, outputs: dict, log=None) -> FoldResult:
    """Stage 1 fusion on one fold's cached branch outputs, decided and scored on the test fold.

    The steps: split the training patients into inner fit / validation; fit the head with
    its penalty search; fuse the test cases (per inner model, then averaged); optional
    Stage 2; baselines on the same probabilities; one decision rule for every source, fitted
    on training data only; scores; the weight analysis.
    """
    from .models import build_fusion_head, fusion_parameter_count

    log = log or logger.info
    y = cohort.y
    modalities = params.modalities
    data = split_training_rows(cohort, params, fold, outputs)
    seed = params.seed + fold.index

    def new_head():
        return build_fusion_head(modalities, fusion=params.fusion, fusion_options=params.fusion_options,
                                 random_state=seed)

    start_head = new_head()
    n_params = fusion_parameter_count(start_head)
    if params.fusion != "fixed":
        log(f"Using {params.fusion} fusion layer (adaptive RF/Image weighting)")
    log(f"Stage 1 trainable parameters: {n_params}")
    head, history = fit_head_with_penalty_search(params, data, new_head, seed)

    test_rows = fold.test
    branch_test = np.stack([outputs[m].test_proba for m in modalities])
    # A case no branch could score (an image-only run's case without an image) has nothing to
    # fuse or decide: it is left out of the scores and counted.
    keep = ~np.isnan(branch_test).any(axis=2).all(axis=0)
    n_unscored = int((~keep).sum())
    scorable = keep.copy()
    if params.missing_cases == "exclude":
        keep &= _complete(list(branch_test))
    test_rows = test_rows[keep]
    test_probs = [outputs[m].test_proba[keep] for m in modalities]   # branch probabilities
    test_inputs = _per_model_inputs(outputs, modalities, keep)
    proba = fuse_per_model(head, test_inputs)
    y_test = y[test_rows]
    complete_test = _complete(test_probs)

    val_proba = fuse_with_missing(head, data.x_val) if len(data.y_val) else np.empty((0, 3))
    stage_scores = {"stage1_val_qwk": classification_scores(data.y_val, val_proba)["qwk"]
                    if len(data.y_val) else None,
                    "stage1_best_epoch": history.get("best_epoch"),
                    "stage1_penalty": history.get("penalty"),
                    "n_test_all_modalities": int(complete_test.sum()),
                    "n_test_unscored": n_unscored,
                    "n_test_excluded": int((scorable & ~keep).sum()),
                    # The same head on the mean of the inner models' probabilities (the old input).
                    "log_loss_mean_of_models_input": classification_scores(
                        y_test, fuse_with_missing(head, test_probs))["log_loss"]}
    # A head with weights whose restored epoch is its start never trained (e.g. a learning rate
    # that diverges at once): its "learned" weights are the initial ones, so flag it.
    stage_scores["head_never_trained"] = bool(n_params) and history.get("best_epoch", 0) == 0
    for m in modalities:
        if m != "metadata":
            stage_scores[f"{m}_val_qwk"] = float(np.mean(
                [h["best_val_qwk"] for h in outputs[m].info.get("history", [])] or [np.nan]))
    stage_scores.update(image_branch_gap(outputs, modalities, y[fold.train], y[fold.test]))
    if params.stage2:
        stage2 = run_stage2(cohort, params, fold, head, outputs, data.fit_rows, data.val_rows,
                            test_rows, proba, log)
        stage_scores.update(stage2["scores"])
        if stage2["kept"]:
            head, proba = stage2["head"], stage2["proba"]
            history["stage2"] = stage2["history"]

    baselines, baseline_val = fit_baselines(modalities, data, test_probs, test_inputs)
    sources = {"fused": (proba, val_proba), **{name: (baselines[name], baseline_val[name])
                                              for name in baselines}}
    preds, chosen = decide_sources(params.decision, sources, data)
    scores = classification_scores(y_test, proba, preds["fused"][params.decision])
    weights = explain_weights(params, head, start_head, data, history, test_inputs, n_params)
    weights["decision"] = chosen
    return FoldResult(fold.index, fold.repeat, test_rows, y_test, proba,
                      dict(zip(modalities, test_probs)), baselines, scores, stage_scores, weights,
                      history={"head": history}, preds=preds)


def fit_baselines(modalities: list, data: FoldData, test_probs: list, test_inputs: list) -> tuple:
    """Baselines on the same cached probabilities: each branch alone and a logistic-regression
    stacker (fitted on the inner fit rows, like the head). Returns test and validation
    probabilities by name; a case missing a branch gets the fallback of the other branches."""
    from sklearn.linear_model import LogisticRegression

    baselines, validation = {}, {}
    fallback = np.nanmean(np.stack(test_probs), axis=0)
    if len(modalities) > 1:
        stacker = LogisticRegression(max_iter=2000).fit(np.hstack(data.x_fit), data.y_fit)

        def stack(inputs):
            out = np.nanmean(np.stack(inputs), axis=0)
            full = _complete(inputs)
            if full.any():
                out[full] = stacker.predict_proba(np.hstack([p[full] for p in inputs]))
            return out

        baselines["stacking"] = np.mean([stack(inputs) for inputs in test_inputs], axis=0)
        validation["stacking"] = stack(data.x_val) if len(data.y_val) else np.empty((0, 3))
    for i, (m, p) in enumerate(zip(modalities, test_probs)):
        baselines[f"{m}_only"] = np.where(np.isnan(p), fallback, p)
        validation[f"{m}_only"] = data.x_val[i]
    return baselines, validation


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


def run_stage2(cohort: Cohort, params: ExperimentParams, fold, head, outputs: dict, fit_rows, val_rows,
               test_rows, stage1_proba, log) -> dict:
    """Optional Stage 2: end-to-end fine-tuning, kept only if inner-validation QWK improves.

    Needs the metadata branch and exactly one image modality. The comparison is
    between the end-to-end model before (epoch 0) and after fine-tuning, on the
    inner-validation patients; note that the inner CNNs saw some of those
    patients while cross-fitting, so both numbers are optimistic alike.
    """
    from .images import cohort_image_arrays
    from .training import fine_tune_end_to_end

    images_only = [m for m in params.modalities if m != "metadata"]
    models = outputs[images_only[0]].models if len(images_only) == 1 else []
    if "metadata" not in params.modalities or len(images_only) != 1 or not models:
        log("Stage 2 skipped: it needs the metadata branch, one image modality and its CNNs")
        return {"kept": False, "scores": {"stage2_val_qwk": None, "stage2_kept": False}}
    modality = images_only[0]
    images, image_case = cohort_image_arrays(cohort, modality, size=params.image_size,
                                             margin=params.crop_margin)
    rf = outputs["metadata"]
    meta = {int(r): p for r, p in zip(rf.train_index, rf.train_proba)}
    meta.update({int(r): p for r, p in zip(rf.test_index, rf.test_proba)})
    cnns = [m.get() if hasattr(m, "get") else m for m in models]
    model, tuned_head, history = fine_tune_end_to_end(
        head, cnns, images, image_case, meta, cohort.y, fit_rows, val_rows, modality,
        epochs=params.stage2_epochs, learning_rate=params.stage2_learning_rate,
        random_state=params.seed + fold.index)
    before, after = history["val_qwk"][0], max(history["val_qwk"])
    kept = history["best_epoch"] > 0
    log(f"Stage 2 validation QWK {before:.3f} -> {after:.3f} ({'kept' if kept else 'discarded'})")
    scores = {"stage2_val_qwk_before": before, "stage2_val_qwk": after, "stage2_kept": kept}
    if not kept:
        return {"kept": False, "scores": scores}
    proba = stage1_proba.copy()
    has_image = np.isin(test_rows, image_case)
    rows = test_rows[has_image]
    idx = np.flatnonzero(np.isin(image_case, rows))
    fused = np.asarray(model([np.stack([meta[int(c)] for c in image_case[idx]]).astype("float32"),
                              images[idx]], training=False))
    for j, row in zip(np.flatnonzero(has_image), rows):
        proba[j] = fused[image_case[idx] == row].mean(axis=0)
    return {"kept": True, "scores": scores, "head": tuned_head, "proba": proba, "history": history}


def _selection_score(history: dict, monitor: str) -> float:
    """Lower is better: the restored epoch's validation loss (or minus its QWK)."""
    if monitor == "none" or not history["val_loss"]:
        return 0.0
    i = history["epoch"].index(history["best_epoch"])
    return history["val_loss"][i] if monitor == "val_loss" else -history["val_qwk"][i]


def run_experiment(params: ExperimentParams, cohort: Cohort | None = None,
                   cache_dir: str | Path | None = ".cache", progress: bool = True,
                   log=None) -> ExperimentResult:
    """Run every (repeat, fold) of an experiment; returns the scored result (not yet saved)."""
    from .models import build_fusion_head, fusion_parameter_count

    started = time.time()
    cohort = cohort if cohort is not None else load_dataset(params)
    full_fingerprint = cohort.fingerprint()
    rows = subsample_patients(cohort.groups, params.data_percentage, params.seed)
    cohort = cohort.subset(rows)
    # Refuse what cannot be learned before any model trains: too few patients for the folds,
    # or a training set (the cohort, each outer fold's training rows) missing a phase.
    check_folds(cohort.y, cohort.groups, params.folds, source=cohort.source)
    cache_root = None if cache_dir is None else Path(cache_dir)
    cache = BranchCache(None if cache_root is None else cache_root / "branches")
    branches = branch_configs(params, cache_root)
    folds = [f for r in range(params.repeats)
             for f in patient_folds(cohort.y, cohort.groups, params.folds, params.seed, r)]
    for f in folds:
        check_phases(cohort.y[f.train], what=f"the training rows of fold {f.index + 1} "
                     f"(repeat {f.repeat + 1})", source=cohort.source)
    results = []
    bar = _progress(len(folds), f"{params.name}: folds", progress)
    for fold in folds:
        outputs = {}
        for modality, branch in branches.items():
            key = BranchCache.key(data=full_fingerprint, percentage=params.data_percentage,
                                  fold=fold.index, repeat=fold.repeat, n_folds=params.folds,
                                  seed=params.seed, settings=branch.settings())
            outputs[modality] = cache.get_or_compute(
                key, lambda b=branch: b.fit_fold(cohort, fold.train, fold.test))
        results.append(run_fold(cohort, params, fold, outputs, log=log))
        bar.update(1)
    bar.close()
    head = build_fusion_head(params.modalities, fusion=params.fusion,
                             fusion_options=params.fusion_options, random_state=params.seed)
    provenance = provenance_of(params, cohort, full_fingerprint)
    provenance.update({"seconds": round(time.time() - started, 2),
                       "branch_cache": {"hits": cache.hits, "misses": cache.misses},
                       "trainable_fusion_params": fusion_parameter_count(head)})
    return ExperimentResult(params, cohort, results, provenance)


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
            "meta": cohort.meta}, "seed": params.seed,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)
