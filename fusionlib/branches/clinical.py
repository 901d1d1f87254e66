"""The clinical-table branch: any scikit-learn classifier, cross-fitted like the image branch.

The model is picked by name from :data:`CLINICAL_MODELS` (section ``clinical`` of the
parameters: ``{model: random_forest, options: {...}, inner_folds: 5}``), or given as a
``"module:Class"`` string (also in a parameter file) or, from Python, as an estimator object
(anything with ``fit``, ``predict_proba`` and ``get_params``); ``options`` go to the
estimator's constructor over the model's own defaults and are checked against its
``get_params()`` and its parameter constraints when the parameters are validated.

The branch fits one model per inner fold for the training rows' out-of-fold probabilities,
and one on the whole training fold for the test rows. The modality is still called
``metadata`` in data, predictions and weights (output files keep their columns).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field, field_validator
from threadpoolctl import threadpool_limits

from ..registry import Registry
from ..settings import Settings, did_you_mean, fail, shown
from ..splits import resample_training_rows
from .base import CrossFittedBranch


@dataclass(frozen=True)
class TabularModel:
    """A clinical model: its estimator class, default options, input encoding and the names
    reports give it.

    ``encoding`` is ``"ordinal"`` for trees (median imputation, ordinal categories: what
    the forest always had) or ``"scaled"`` for linear models (median imputation and
    standardisation, one-hot categories). ``short`` labels table columns, figure axes and
    weight rows ("RF share", "RF:I"); ``long`` names the model in sentences ("random forest").
    ``instance``: an estimator object given directly (its class path is then ``estimator``,
    its ``get_params()`` the defaults; each fit uses a clone).
    """

    name: str
    estimator: str          # "module:ClassName", imported only when used
    defaults: dict = field(default_factory=dict)
    encoding: str = "ordinal"
    short: str = "clinical"
    long: str = "clinical model"
    summary: str = ""
    instance: Any = field(default=None, compare=False)

    def estimator_class(self):
        if self.instance is not None:
            return type(self.instance)
        return import_estimator(self.estimator)

    def new_estimator(self, **options):
        """An unfitted estimator with ``options`` (over nothing: pass the defaults in)."""
        if self.instance is not None:
            # Lazy: validating a parameter file by model name imports no scikit-learn.
            from sklearn.base import clone

            return clone(self.instance).set_params(**options)
        return self.estimator_class()(**options)


_TREE_DEFAULTS = {"n_estimators": 200, "min_samples_leaf": 10, "max_features": "sqrt",
                  "class_weight": "balanced", "n_jobs": 1}
CLINICAL_MODELS: Registry[TabularModel] = Registry("clinical model", [
    # The forest exactly as before the registry: 200 trees (the old rf_trees default), leaves of
    # at least 10 visits so a tree cannot memorise single patients, balanced class weights.
    TabularModel("random_forest", "sklearn.ensemble:RandomForestClassifier", _TREE_DEFAULTS,
                 short="RF", long="random forest"),
    TabularModel("extra_trees", "sklearn.ensemble:ExtraTreesClassifier", _TREE_DEFAULTS,
                 short="ET", long="extra trees"),
    TabularModel("hist_gradient_boosting", "sklearn.ensemble:HistGradientBoostingClassifier",
                 {"max_iter": 200, "learning_rate": 0.05, "min_samples_leaf": 10,
                  "class_weight": "balanced", "early_stopping": False},
                 short="GB", long="gradient boosting"),
    TabularModel("logistic_regression", "sklearn.linear_model:LogisticRegression",
                 {"C": 1.0, "class_weight": "balanced", "max_iter": 2000}, encoding="scaled",
                 short="LR", long="logistic regression"),
])
"""Clinical model name -> :class:`TabularModel`. Another model = one
``CLINICAL_MODELS.register(TabularModel(...))`` (or one line here)."""

_ESTIMATOR_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def import_estimator(path: str):
    """The class ``"module:Class"`` names; a ValueError saying why when it cannot be imported
    or is no classifier with ``fit`` and ``predict_proba``."""
    if not isinstance(path, str) or not _ESTIMATOR_PATH.match(path):
        raise ValueError(f"expected an estimator as 'module:Class', got {shown(path)}")
    module, name = path.split(":")
    try:
        imported = importlib.import_module(module)
    except ImportError as err:
        raise ValueError(f"cannot import module {module!r} for estimator {path!r}: {err}") from None
    cls = getattr(imported, name, None)
    if cls is None:
        raise ValueError(f"module {module!r} has no {name!r}{did_you_mean(name, dir(imported))}")
    _check_estimator(cls, path)
    return cls


def _check_estimator(obj, what: str) -> None:
    missing = [m for m in ("fit", "predict_proba", "get_params", "set_params")
               if not callable(getattr(obj, m, None))]
    if missing:
        raise ValueError(f"{what} is no scikit-learn-compatible classifier: it lacks "
                         f"{', '.join(missing)}")


def class_path(obj) -> str:
    """``"module:QualifiedName"`` of an object's class."""
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def tabular_model(model) -> TabularModel:
    """The :class:`TabularModel` of a clinical ``model``: a name of :data:`CLINICAL_MODELS`, a
    ``"module:Class"`` string (its class's own defaults, ordinal encoding) or an estimator
    object (a clone of it per fit). ValueError (unknown name, failed import, no classifier)."""
    if isinstance(model, str):
        if ":" not in model:
            return CLINICAL_MODELS[model]
        import_estimator(model)
        return TabularModel(model, model)
    if isinstance(model, type):
        raise ValueError(f"expected an estimator object, not the class {model.__name__}; "
                         f"give {model.__name__}() or '{model.__module__}:{model.__qualname__}'")
    _check_estimator(model, f"the {type(model).__name__} object")
    return TabularModel(class_path(model), class_path(model),
                        dict(model.get_params(deep=False)), instance=model)


def _key_value(value):
    """An option as the cache key and the cached entry's JSON hold it: an object's options
    (an object's ``get_params()``) may hold estimators or other objects, written as their repr."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_key_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _key_value(v) for k, v in value.items()}
    return f"{class_path(value)} {value!r}"


class ClinicalSettings(Settings):
    """Section ``clinical``: the clinical-table model and its out-of-fold inner folds."""

    model: Any = Field("random_forest", description=CLINICAL_MODELS.describe(
        "the clinical-table classifier: {choices} (`fusionlib.branches.clinical.CLINICAL_MODELS`), "
        "or any scikit-learn-compatible classifier as `\"module:Class\"` (its own defaults, "
        "ordinal encoding); from Python also an estimator object"))
    options: dict = Field({}, description=(
        "constructor options of the model's scikit-learn estimator, over the model's defaults "
        "(random_forest: n_estimators 200, min_samples_leaf 10, max_features sqrt, "
        "class_weight balanced)"))
    inner_folds: int = Field(5, ge=2, description=(
        "inner patient-grouped folds for the training rows' out-of-fold probabilities"))

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value):
        # A name, or "module:Class": imported here to check it (scikit-learn, never TensorFlow).
        if isinstance(value, str) and ":" not in value:
            return CLINICAL_MODELS.check(value)
        if not isinstance(value, str) and not hasattr(value, "fit"):
            fail(f"expected one of {', '.join(CLINICAL_MODELS)}, a 'module:Class' or an "
                 f"estimator object, got {shown(value)}")
        try:
            tabular_model(value)
        except ValueError as err:
            fail(str(err))
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value, info):
        if "model" in info.data:          # absent when the model itself was refused
            check_options(info.data["model"], value)
        return value


def check_options(model, options: dict) -> None:
    """Refuse options the model's estimator does not take, or values it would reject at fit."""
    spec = tabular_model(model)
    estimator = spec.new_estimator(**spec.defaults)
    known = estimator.get_params()
    for key in options:
        if key not in known or key == "random_state":
            why = ("is set from protocol.seed" if key == "random_state" else
                   f"is no option of {type(estimator).__name__}{did_you_mean(key, known)}")
            fail(f"{key!r} {why}", subkey=key)
    estimator.set_params(**options)
    validate = getattr(estimator, "_validate_params", None)   # scikit-learn's own constraints
    if validate is not None:
        try:
            validate()
        except (ValueError, TypeError) as err:
            bad = next((k for k in options if f"'{k}'" in str(err)), None)
            fail(" ".join(str(err).split()), subkey=bad)


@dataclass
class ClinicalBranch(CrossFittedBranch):
    """A clinical-table classifier with out-of-fold training probabilities.

    Parameters
    ----------
    model, options, inner_folds :
        The :class:`ClinicalSettings`: ``model`` a name from :data:`CLINICAL_MODELS`, a
        ``"module:Class"`` or an estimator object (see :func:`tabular_model`).
    sampling : {"none", "random", "combined"}
        Class resampling of each fit's training rows (see :mod:`fusionlib.splits`).
    random_state : int
        Each inner fit k uses ``random_state + k + 1``, the test-row fit ``random_state``.
    n_jobs : int or None
        Overrides the model's ``n_jobs`` (trees grow in parallel; results do not depend on it).
    """

    model: Any = "random_forest"
    options: dict = field(default_factory=dict)
    inner_folds: int = 5
    sampling: str = "none"
    random_state: int = 0
    n_jobs: int | None = None

    @classmethod
    def from_settings(cls, settings: ClinicalSettings, sampling: str = "none",
                      random_state: int = 0) -> "ClinicalBranch":
        return cls(settings.model, dict(settings.options), settings.inner_folds, sampling,
                   random_state)

    @property
    def spec(self) -> TabularModel:
        """The model's :class:`TabularModel` (resolved from its name, path or object)."""
        return tabular_model(self.model)

    def estimator_options(self) -> dict:
        spec = self.spec
        options = {**spec.defaults, **self.options}
        # Only models that grow in parallel take n_jobs (LogisticRegression warns it has no effect).
        if self.n_jobs is not None and "n_jobs" in spec.defaults:
            options["n_jobs"] = self.n_jobs
        return options

    def settings(self) -> dict:
        """Everything that changes the branch's output (the cache key uses it).

        The forest keeps the key it had before the registry ("metadata_rf" and its four
        options), so existing branch caches stay valid. A ``"module:Class"`` or an estimator
        object is keyed by its class path and every option (an object's ``get_params()``), so
        it never shares another model's entries.
        """
        options = {k: _key_value(v) for k, v in self.estimator_options().items() if k != "n_jobs"}
        name = self.spec.name
        branch = "metadata_rf" if name == "random_forest" else f"clinical_{name}"
        return {"branch": branch, **options, "inner_folds": self.inner_folds,
                "sampling": self.sampling, "random_state": self.random_state}

    def make_pipeline(self, cohort):
        """Imputation + category encoding + the model, one estimator fitted on training rows only."""
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline, make_pipeline
        from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

        spec = self.spec
        numeric = cohort.numeric_features
        categorical = cohort.categorical_features
        # keep_empty_features: a column empty in one training fold stays a (constant) column.
        impute = SimpleImputer(strategy="median", keep_empty_features=True)
        transformers = []
        if spec.encoding == "ordinal":
            if numeric:
                transformers.append(("numeric", impute, numeric))
            if categorical:
                transformers.append(("categorical", OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2,
                    dtype=float), categorical))
        else:   # a linear model needs comparable scales and no false order between categories
            if numeric:
                transformers.append(("numeric", make_pipeline(impute, StandardScaler()), numeric))
            if categorical:
                transformers.append(("categorical", make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False)), categorical))
        estimator = spec.new_estimator(**self.estimator_options())
        return Pipeline([("encode", ColumnTransformer(transformers)), ("model", estimator)])

    def _fit_predict(self, cohort, fit_rows: np.ndarray, predict_rows: np.ndarray,
                     seed_offset: int) -> np.ndarray:
        y = cohort.y
        seed = self.random_state + seed_offset
        picked = fit_rows[resample_training_rows(y[fit_rows], self.sampling, random_state=seed)]
        model = self.make_pipeline(cohort)
        if "random_state" in model.named_steps["model"].get_params():
            model.set_params(model__random_state=seed)
        features = cohort.features
        if self.spec.encoding == "scaled" and cohort.categorical_features:
            # The one-hot imputer needs one missing marker; pandas 3 strings hold NaN or None.
            features = features.astype({c: object for c in cohort.categorical_features})
        # OpenMP models (histogram gradient boosting) spin-wait for their threads: on a busy
        # machine two threads were ten times slower than one. Their output does not depend on
        # the thread count; n_jobs (default 1) sets it, as it sets the forest's joblib workers.
        threads = self.n_jobs or 1
        with threadpool_limits(limits=None if threads < 0 else threads, user_api="openmp"):
            model.fit(features.iloc[picked], y[picked])
            proba = np.zeros((len(predict_rows), 3))
            proba[:, model.classes_] = model.predict_proba(features.iloc[predict_rows])
        return proba

    def _fit_inner(self, cohort, k, fit_rows, held_rows, test_rows) -> np.ndarray:
        return self._fit_predict(cohort, fit_rows, held_rows, k + 1)

    def _test_output(self, cohort, train_index, test_index) -> dict:
        return {"test_proba": self._fit_predict(cohort, train_index, test_index, 0),
                "info": {"settings": self.settings()}}

    def fit_predict(self, cohort, fit_rows, predict_rows) -> np.ndarray:
        """Probabilities of ``predict_rows`` from one model fitted on ``fit_rows`` (the branch's
        own seed): one fold of a clinical-only cross-validation."""
        return self._fit_predict(cohort, np.asarray(fit_rows), np.asarray(predict_rows), 0)

    def in_sample_proba(self, cohort, train_index) -> np.ndarray:
        """Probabilities of the full-fold model on its own training rows (for comparison only)."""
        train_index = np.asarray(train_index)
        return self._fit_predict(cohort, train_index, train_index, 0)
