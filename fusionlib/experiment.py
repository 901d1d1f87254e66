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
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import atomic_open, atomic_write_text, file_lock
from .branches import BranchOutput, ImageBranch, MetadataBranch
from .data import LABELS, Cohort, load_cohort
from .metrics import classification_scores, mean_ci
from .params import ExperimentParams
from .splits import inner_validation_split, patient_folds, resample_training_rows, subsample_patients

logger = logging.getLogger("fusionlib")


# --------------------------------------------------------------------------- data


def load_dataset(params: ExperimentParams) -> Cohort:
    """The experiment's cohort: the generated synthetic one, or the real folder."""
    if params.dataset == "synthetic":
        from .cohort import ensure_default_cohort

        root = ensure_default_cohort(preset=params.preset, random_state=params.cohort_seed)
        return load_cohort(root)
    if params.dataset == "real_synthetic_images":
        # The real clinical table and labels; thermal maps rendered from the true labels.
        from .cohort import ensure_real_synthetic_cohort

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
                with np.load(path) as data:
                    out = BranchOutput(data["train_index"], data["test_index"],
                                       data["train_proba"], data["test_proba"],
                                       json.loads(str(data["info"])))
                out.models = self._load_models(key, int(out.info.get("n_models", 0)))
                self.hits += 1
                return out
            except (OSError, ValueError, KeyError):  # unreadable entry: recompute it
                path.unlink(missing_ok=True)
        self.misses += 1
        out = compute()
        if path is not None:
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
        """The inner CNNs saved with an entry, loaded only when Stage 2 asks for them."""
        return [_LazyModel(self.directory / f"{key}_model{k}.keras") for k in range(n_models)]


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


# --------------------------------------------------------------------------- results


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


@dataclass
class ExperimentResult:
    params: ExperimentParams
    cohort: Cohort
    folds: list
    provenance: dict

    def fold_table(self) -> pd.DataFrame:
        """One row per (repeat, fold): test scores, stage scores and the RF share."""
        rows = []
        for f in self.folds:
            row = {"repeat": f.repeat, "fold": f.fold, **f.scores, **f.stage_scores,
                   "rf_share": f.weights.get("rf_share")}
            for label, share in zip(LABELS, f.weights.get("rf_share_per_class") or [None] * 3):
                row[f"rf_share_{label}"] = share
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> dict:
        table = self.fold_table()
        out = {"name": self.params.name, "fusion": self.params.fusion,
               "data_percentage": self.params.data_percentage,
               "n_folds": int(len(table)), "n_cases": int(self.cohort.n_cases),
               "trainable_fusion_params": self.provenance.get("trainable_fusion_params")}
        for metric in ("qwk", "accuracy", "macro_f1", "f1_I", "f1_P", "f1_R", "brier", "ece",
                       "rf_share", "rf_share_I", "rf_share_P", "rf_share_R"):
            values = table[metric].dropna().to_numpy(dtype=float) if metric in table else []
            if len(values):
                mean, sd, lo, hi = mean_ci(values)
                out[metric] = {"mean": mean, "sd": sd, "ci95": [lo, hi]}
        pooled = self.predictions()
        out["pooled"] = classification_scores(pooled["label"], pooled[["p_I", "p_P", "p_R"]].to_numpy())
        # Cases by modality availability (each case is a test case once per repeat), and the
        # pooled scores on the test cases that have every modality (those the head fused).
        present = {m: (np.ones(self.cohort.n_cases, bool) if m == "metadata"
                       else self.cohort.has_modality(m)) for m in self.params.modalities}
        combos = ["+".join(m for m in self.params.modalities if present[m][i]) or "none"
                  for i in range(self.cohort.n_cases)]
        if len(self.params.modalities) > 1:
            combos = [f"{c} only" if c in self.params.modalities else c for c in combos]
        out["modality_counts"] = {c: int(n) for c, n in pd.Series(combos).value_counts().items()}
        complete = np.ones(len(pooled), bool)
        for m in self.params.modalities:
            if f"{m}_p_I" in pooled:
                complete &= pooled[f"{m}_p_I"].notna().to_numpy()
        sub = pooled[complete]
        out["scores_complete_cases"] = (
            classification_scores(sub["label"], sub[["p_I", "p_P", "p_R"]].to_numpy())
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
            frame["pred"] = f.proba.argmax(axis=1)
            for source, proba in {**f.branch_proba, **f.baselines}.items():
                for j, label in enumerate(LABELS):
                    frame[f"{source}_p_{label}"] = proba[:, j]
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


def run_fold(cohort: Cohort, params: ExperimentParams, fold, outputs: dict, log=None) -> FoldResult:
    """Stage 1 fusion on one fold's cached branch outputs; scores on the test fold."""
    from sklearn.linear_model import LogisticRegression

    from .models import build_fusion_head, fusion_parameter_count
    from .training import HeadTrainer, fit_head
    from .weights import effective_rf_share, raw_fusion_weights

    log = log or logger.info
    y = cohort.y
    modalities = params.modalities
    fit_rows, val_rows = inner_validation_split(y, cohort.groups, fold.train, params.validation_fraction,
                                                params.seed + 7919 * fold.repeat + fold.index)
    pos = {row: i for i, row in enumerate(fold.train)}

    def train_probs(rows):
        return [outputs[m].train_proba[[pos[r] for r in rows]] for m in modalities]

    def complete(probs):
        return ~np.isnan(np.stack(probs)).any(axis=(0, 2))

    p_fit, p_val = train_probs(fit_rows), train_probs(val_rows)
    ok_fit, ok_val = complete(p_fit), complete(p_val)
    resampled = resample_training_rows(y[fit_rows][ok_fit], params.sampling, params.seed + fold.index)
    x_fit = [p[ok_fit][resampled] for p in p_fit]
    y_fit = y[fit_rows][ok_fit][resampled]
    x_val, y_val = [p[ok_val] for p in p_val], y[val_rows][ok_val]

    def new_head():
        return build_fusion_head(modalities, fusion=params.fusion, fusion_options=params.fusion_options,
                                 random_state=params.seed + fold.index)

    head = new_head()
    n_params = fusion_parameter_count(head)
    if params.fusion != "fixed":
        log(f"Using {params.fusion} fusion layer (adaptive RF/Image weighting)"
            if params.fusion != "trainable" else
            "Using trainable fusion layer (adaptive RF/Image weighting)")
    log(f"Stage 1 trainable parameters: {n_params}")
    # The penalty strength is chosen like the stopping epoch, on the inner-validation patients.
    # Default: the one-standard-error rule, i.e. the strongest penalty whose validation loss is
    # within one standard error of the best. Smaller differences are noise, and the stronger
    # penalty is the one that does not fit noise in an uninformative branch ("min": the best).
    candidates = sorted(set(params.head_penalty)) if n_params else [0.0]
    fitted = []
    for strength in candidates:
        trainer = HeadTrainer(loss=params.head_loss, class_weight=params.head_class_weight,
                              optimizer=params.head_optimizer, learning_rate=params.head_learning_rate,
                              max_epochs=params.head_max_epochs, patience=params.head_patience,
                              monitor=params.head_monitor, penalty=strength,
                              penalty_kind=params.head_penalty_kind)
        candidate = new_head() if fitted else head
        history = fit_head(candidate, x_fit, y_fit, x_val, y_val, trainer,
                           random_state=params.seed + fold.index)
        fitted.append((_selection_score(history, params.head_monitor), strength, candidate, history))
    best_score, _, _, best_history = min(fitted, key=lambda f: f[0])
    tolerance = best_score
    if params.head_penalty_rule == "one_se" and params.head_monitor == "val_loss":
        tolerance += best_history.get("val_loss_se", 0.0)
    _, chosen, head, history = max((f for f in fitted if f[0] <= tolerance), key=lambda f: f[1])
    history["penalty"] = chosen

    test_probs = [outputs[m].test_proba for m in modalities]
    test_rows = fold.test
    keep = np.ones(len(test_rows), bool)
    if params.missing_cases == "exclude":
        keep = complete(test_probs)
    test_probs = [p[keep] for p in test_probs]
    test_rows = test_rows[keep]
    proba = fuse_with_missing(head, test_probs)
    y_test = y[test_rows]

    stage1_val = classification_scores(y_val, fuse_with_missing(head, x_val))["qwk"] if len(y_val) else None
    stage_scores = {"stage1_val_qwk": stage1_val, "stage1_best_epoch": history.get("best_epoch"),
                    "stage1_penalty": history.get("penalty"),
                    "n_test_all_modalities": int(complete(test_probs).sum())}
    for m in modalities:
        if m != "metadata":
            stage_scores[f"{m}_val_qwk"] = float(np.mean(
                [h["best_val_qwk"] for h in outputs[m].info.get("history", [])] or [np.nan]))
    if params.stage2:
        stage2 = run_stage2(cohort, params, fold, head, outputs, fit_rows, val_rows, test_rows, proba, log)
        stage_scores.update(stage2["scores"])
        if stage2["kept"]:
            head, proba = stage2["head"], stage2["proba"]
            history["stage2"] = stage2["history"]

    # Baselines on the same cached probabilities.
    baselines = {}
    fallback = np.nanmean(np.stack(test_probs), axis=0)
    if len(modalities) > 1:
        x_all = np.hstack([np.vstack([a, b]) for a, b in zip(x_fit, x_val)]) if len(y_val) else \
            np.hstack(x_fit)
        y_all = np.concatenate([y_fit, y_val])
        stacker = LogisticRegression(max_iter=2000).fit(x_all, y_all)
        full = complete(test_probs)
        stacked = fallback.copy()
        if full.any():
            stacked[full] = stacker.predict_proba(np.hstack([p[full] for p in test_probs]))
        baselines["stacking"] = stacked
    for m, p in zip(modalities, test_probs):
        baselines[f"{m}_only"] = np.where(np.isnan(p), fallback, p)

    complete_test = complete(test_probs)
    weights = {"fusion": params.fusion, "raw": raw_fusion_weights(head, params.fusion),
               "trainable_fusion_params": n_params}
    if "metadata" in modalities and len(modalities) > 1 and complete_test.any():
        share = effective_rf_share(head, {m: p[complete_test] for m, p in zip(modalities, test_probs)})
        weights["rf_share"] = share["overall"]
        weights["rf_share_per_class"] = list(share["per_class"])
        weights["modality_share"] = share.get("per_modality")
    scores = classification_scores(y_test, proba)
    return FoldResult(fold.index, fold.repeat, test_rows, y_test, proba,
                      dict(zip(modalities, test_probs)), baselines, scores, stage_scores, weights,
                      history={"head": history})


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
    cache_root = None if cache_dir is None else Path(cache_dir)
    cache = BranchCache(None if cache_root is None else cache_root / "branches")
    branches = branch_configs(params, cache_root)
    folds = [f for r in range(params.repeats)
             for f in patient_folds(cohort.y, cohort.groups, params.folds, params.seed, r)]
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
