"""Unimodal branches that turn one kind of evidence into 3 class probabilities.

Both branches follow the same honesty rule: the probabilities a fusion head is
trained on must look like the probabilities it will meet on the test fold.
A model scored on the rows it was fitted on is overconfident, so training-row
probabilities are **out-of-fold**, from inner folds grouped by patient:

* the Random-Forest metadata branch (:class:`MetadataBranch`) fits one RF per
  inner fold for the training rows' probabilities, and one RF on the whole
  training fold for the test rows;
* the image branch (:class:`ImageBranch`) cross-fits its CNN the same way; the
  test rows get each inner CNN's probabilities (``test_proba_models``; their mean
  is ``test_proba``), no extra training run.

Everything is fitted on the fold's training rows only: imputation, category
encoding, class resampling, early stopping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .data import Cohort
from .splits import inner_folds, inner_validation_split, resample_training_rows


@dataclass
class BranchOutput:
    """A branch's probabilities for one outer fold.

    ``train_proba`` rows are out-of-fold (aligned with ``train_index``);
    ``test_proba`` rows come from models fitted on all training rows.
    ``train_mask``/``test_mask`` say which rows the branch could score (an image
    branch cannot score a case with no image); unscored rows hold NaN.
    """

    train_index: np.ndarray
    test_index: np.ndarray
    train_proba: np.ndarray
    test_proba: np.ndarray
    info: dict = field(default_factory=dict)
    models: list = field(default_factory=list, repr=False)  # the image branch's inner CNNs
    # (K, n_test, 3): each inner model's test probabilities (image branch). The training rows'
    # probabilities come from single inner models, so a head fitted on them should meet single
    # models at test time too: fuse each model's test probabilities, then average the fused ones.
    test_proba_models: np.ndarray | None = None

    def test_proba_per_model(self) -> np.ndarray:
        """(K, n_test, 3): per-model test probabilities (K = 1 for a single-model branch)."""
        return self.test_proba[None] if self.test_proba_models is None else self.test_proba_models

    @property
    def train_mask(self) -> np.ndarray:
        return ~np.isnan(self.train_proba).any(axis=1)

    @property
    def test_mask(self) -> np.ndarray:
        return ~np.isnan(self.test_proba).any(axis=1)

    def to_arrays(self) -> dict:
        arrays = {"train_index": self.train_index, "test_index": self.test_index,
                  "train_proba": self.train_proba, "test_proba": self.test_proba}
        if self.test_proba_models is not None:
            arrays["test_proba_models"] = self.test_proba_models
        return arrays


# --------------------------------------------------------------------------- metadata (RF)


@dataclass
class MetadataBranch:
    """Random Forest on the clinical features, with out-of-fold training probabilities.

    Parameters
    ----------
    n_estimators, min_samples_leaf, max_features, class_weight :
        passed to :class:`sklearn.ensemble.RandomForestClassifier`.
    inner_folds : int
        Inner patient-grouped folds for the training rows' out-of-fold probabilities.
    sampling : {"none", "random", "combined"}
        Class resampling of each fit's training rows (see :mod:`fusionlib.splits`).
    random_state : int
    n_jobs : int
        Trees are grown in parallel; results do not depend on it.

    The defaults are a priori regularisation for a small, imbalanced table
    (balanced class weights; leaves of at least 10 visits so a tree cannot
    memorise single patients); docs/benchmarks.md shows them over five seeds.
    """

    n_estimators: int = 300
    min_samples_leaf: int = 10
    max_features: str | float = "sqrt"
    class_weight: str | None = "balanced"
    inner_folds: int = 5
    sampling: str = "none"
    random_state: int = 0
    n_jobs: int = 1

    def settings(self) -> dict:
        """Everything that changes the branch's output (the cache key uses it)."""
        out = asdict(self)
        out.pop("n_jobs")
        return {"branch": "metadata_rf", **out}

    def make_pipeline(self, cohort: Cohort):
        """Imputation + category encoding + RF, as one estimator fitted on training rows only."""
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OrdinalEncoder

        numeric = cohort.numeric_features
        categorical = cohort.categorical_features
        transformers = []
        if numeric:
            # keep_empty_features: a column empty in one training fold stays a (constant) column.
            transformers.append(("numeric", SimpleImputer(strategy="median", keep_empty_features=True),
                                 numeric))
        if categorical:
            transformers.append(("categorical", OrdinalEncoder(
                handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2,
                dtype=float), categorical))
        forest = RandomForestClassifier(
            n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features, class_weight=self.class_weight,
            random_state=self.random_state, n_jobs=self.n_jobs)
        return Pipeline([("encode", ColumnTransformer(transformers)), ("forest", forest)])

    def _fit_predict(self, cohort: Cohort, fit_rows: np.ndarray, predict_rows: np.ndarray,
                     seed_offset: int) -> np.ndarray:
        y = cohort.y
        picked = fit_rows[resample_training_rows(y[fit_rows], self.sampling,
                                                 random_state=self.random_state + seed_offset)]
        model = self.make_pipeline(cohort)
        model.set_params(forest__random_state=self.random_state + seed_offset)
        model.fit(cohort.features.iloc[picked], y[picked])
        proba = np.zeros((len(predict_rows), 3))
        proba[:, model.classes_] = model.predict_proba(cohort.features.iloc[predict_rows])
        return proba

    def fit_fold(self, cohort: Cohort, train_index, test_index) -> BranchOutput:
        """Out-of-fold probabilities for ``train_index`` and full-fit ones for ``test_index``."""
        train_index = np.asarray(train_index)
        test_index = np.asarray(test_index)
        position = {row: i for i, row in enumerate(train_index)}
        train_proba = np.full((len(train_index), 3), np.nan)
        for k, (fit, held) in enumerate(inner_folds(cohort.y, cohort.groups, train_index,
                                                    self.inner_folds, self.random_state)):
            train_proba[[position[r] for r in held]] = self._fit_predict(cohort, fit, held, k + 1)
        test_proba = self._fit_predict(cohort, train_index, test_index, 0)
        return BranchOutput(train_index, test_index, train_proba, test_proba,
                            info={"settings": self.settings()})

    def in_sample_proba(self, cohort: Cohort, train_index) -> np.ndarray:
        """Probabilities of the full-fold RF on its own training rows (for comparison only)."""
        train_index = np.asarray(train_index)
        return self._fit_predict(cohort, train_index, train_index, 0)


# --------------------------------------------------------------------------- image (CNN)


@dataclass
class ImageBranch:
    """A CNN per image modality, cross-fitted for out-of-fold training probabilities.

    Each of ``inner_folds`` CNNs is trained on the other inner folds' patients,
    with early stopping on a validation slice of *those* patients (best weights
    restored on validation QWK), and scores its held-out patients. Test cases get
    the mean probability of all inner CNNs. A case with several images gets the
    mean of its images' probabilities; a case with no image gets NaN.
    """

    modality: str = "thermal_map"
    image_size: int = 32
    crop_margin: float = 0.15
    backbone: str = "small_cnn"
    backbone_weights: str | None = None
    inner_folds: int = 2
    epochs: int = 25
    patience: int = 6
    batch_size: int = 32
    learning_rate: float = 3e-3
    validation_fraction: float = 0.2
    sampling: str = "none"
    augment: bool = False
    random_state: int = 0
    cache_dir: str | None = None
    history: list = field(default_factory=list, repr=False, compare=False)

    def settings(self) -> dict:
        out = asdict(self)
        for key in ("cache_dir", "history"):
            out.pop(key)
        # "outputs" names the cached arrays' layout: entries without per-model test
        # probabilities are not reused.
        return {"branch": "image_cnn", "outputs": "per_model_test", **out}

    def _arrays(self, cohort: Cohort):
        from .images import cohort_image_arrays

        return cohort_image_arrays(cohort, self.modality, size=self.image_size,
                                   margin=self.crop_margin, cache_dir=self.cache_dir)

    def fit_fold(self, cohort: Cohort, train_index, test_index, progress=None) -> BranchOutput:
        from .training import train_image_classifier

        train_index = np.asarray(train_index)
        test_index = np.asarray(test_index)
        images, image_case = self._arrays(cohort)
        y = cohort.y
        train_proba = np.full((len(train_index), 3), np.nan)
        per_model = []
        position = {row: i for i, row in enumerate(train_index)}
        self.history = []
        models = []
        folds = list(inner_folds(y, cohort.groups, train_index, self.inner_folds, self.random_state))
        for k, (fit, held) in enumerate(folds):
            fit_rows, val_rows = inner_validation_split(
                y, cohort.groups, fit, self.validation_fraction, self.random_state + k)
            model, history = train_image_classifier(
                self, images, image_case, y, fit_rows, val_rows, random_state=self.random_state + k)
            self.history.append(history)
            models.append(model)
            held_proba = case_probabilities(model, images, image_case, held, self.batch_size)
            train_proba[[position[r] for r in held]] = held_proba
            per_model.append(case_probabilities(model, images, image_case, test_index,
                                                self.batch_size))
            if progress is not None:
                progress(k + 1, len(folds))
        per_model = np.stack(per_model)
        return BranchOutput(train_index, test_index, train_proba, per_model.mean(axis=0),
                            info={"settings": self.settings(), "history": self.history},
                            models=models, test_proba_models=per_model)


def case_probabilities(model, images, image_case, rows, batch_size: int = 64) -> np.ndarray:
    """Mean image probability per case for the cases at ``rows``; NaN where a case has no image."""
    rows = np.asarray(rows)
    out = np.full((len(rows), 3), np.nan)
    selected = np.isin(image_case, rows)
    if not selected.any():
        return out
    # Direct calls, not model.predict: predict's per-call set-up dominates on small arrays.
    chosen = images[selected]
    proba = np.concatenate([np.asarray(model(chosen[i:i + 256], training=False), dtype=float)
                            for i in range(0, len(chosen), 256)])
    cases = image_case[selected]
    where = {row: i for i, row in enumerate(rows)}
    sums = np.zeros((len(rows), 3))
    counts = np.zeros(len(rows))
    for case, p in zip(cases, proba):
        sums[where[case]] += p
        counts[where[case]] += 1
    has = counts > 0
    out[has] = sums[has] / counts[has, None]
    return out


def cross_validate_metadata(cohort: Cohort, branch: MetadataBranch | None = None, n_splits: int = 5,
                            random_state: int = 0) -> tuple[np.ndarray, dict]:
    """Metadata-only patient-grouped K-fold: pooled out-of-fold probabilities and their scores."""
    from .results import classification_scores
    from .splits import patient_folds

    branch = branch or MetadataBranch(random_state=random_state)
    oof = np.full((cohort.n_cases, 3), np.nan)
    for fold in patient_folds(cohort.y, cohort.groups, n_splits, random_state):
        oof[fold.test] = branch._fit_predict(cohort, fold.train, fold.test, 0)
    return oof, classification_scores(cohort.y, oof)
