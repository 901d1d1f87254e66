"""The clinical-table branch: out-of-fold training probabilities, determinism, every built-in
model, option checks, real QWK."""

import numpy as np
import pandas as pd
import pytest

from fusionlib.branches import CLINICAL_MODELS, ClinicalBranch
from fusionlib.report.study_tables import cross_validate_clinical
from fusionlib.data import Cohort, case_id
from fusionlib.splits import patient_folds


@pytest.fixture(scope="module")
def small_cohort():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(80), 3)
    y = rng.choice(3, size=len(patients), p=[0.3, 0.55, 0.15])
    cases = pd.DataFrame({"case_id": [case_id(p, a % 3, 1) for a, p in enumerate(patients)],
                          "patient": patients, "appt": np.arange(len(patients)) % 3, "dfu": 1,
                          "label": y})
    age = rng.normal(60, 8, len(y)) + 3 * y
    temp = rng.normal(30, 1, len(y)) - 0.5 * y
    temp[rng.random(len(y)) < 0.1] = np.nan
    side = pd.Series(rng.choice(["Left", "Right"], len(y)), dtype="str")
    features = pd.DataFrame({"Age": age, "Wound Centre Temperature (°C)": temp,
                             "Side (Left:0, Right:1)": side})
    return Cohort(cases, features, name="toy")


def _forest(trees, seed):
    return ClinicalBranch("random_forest", {"n_estimators": trees}, inner_folds=3, random_state=seed)


def test_training_probabilities_are_out_of_fold_not_in_sample(small_cohort):
    fold = patient_folds(small_cohort.y, small_cohort.groups, 5, random_state=0)[0]
    branch = ClinicalBranch("random_forest", {"n_estimators": 50, "min_samples_leaf": 1}, inner_folds=4,
                            random_state=0)
    out = branch.fit_fold(small_cohort, fold.train, fold.test)
    assert out.train_proba.shape == (len(fold.train), 3)
    assert out.test_proba.shape == (len(fold.test), 3)
    assert not np.isnan(out.train_proba).any()
    np.testing.assert_allclose(out.train_proba.sum(axis=1), 1.0)
    in_sample = branch.in_sample_proba(small_cohort, fold.train)
    y = small_cohort.y[fold.train]
    # An in-sample forest scores its own rows far too confidently; out-of-fold rows do not.
    conf_in = in_sample[np.arange(len(y)), y].mean()
    conf_oof = out.train_proba[np.arange(len(y)), y].mean()
    assert conf_in > conf_oof + 0.2
    assert np.abs(in_sample - out.train_proba).max() > 0.3


def test_clinical_branch_is_deterministic_by_seed(small_cohort):
    fold = patient_folds(small_cohort.y, small_cohort.groups, 5, random_state=0)[1]
    a = _forest(30, 5).fit_fold(small_cohort, fold.train, fold.test)
    b = _forest(30, 5).fit_fold(small_cohort, fold.train, fold.test)
    c = _forest(30, 6).fit_fold(small_cohort, fold.train, fold.test)
    np.testing.assert_array_equal(a.train_proba, b.train_proba)
    np.testing.assert_array_equal(a.test_proba, b.test_proba)
    assert not np.array_equal(a.train_proba, c.train_proba)


def test_encoding_is_fit_on_training_rows_only(small_cohort):
    # A category never seen in training must not break scoring of test rows.
    cohort = small_cohort.subset(np.arange(small_cohort.n_cases))
    fold = patient_folds(cohort.y, cohort.groups, 5, random_state=0)[0]
    cohort.features.loc[fold.test[:3], "Side (Left:0, Right:1)"] = "Both"
    for model in CLINICAL_MODELS:
        out = ClinicalBranch(model, inner_folds=3).fit_fold(cohort, fold.train, fold.test)
        assert np.isfinite(out.test_proba).all(), model


@pytest.mark.real_data
def test_real_table_metadata_only_rf_reaches_documented_kappa(real_cohort):
    branch = ClinicalBranch("random_forest", {"n_estimators": 300}, n_jobs=2, random_state=0)
    _, scores = cross_validate_clinical(real_cohort, branch, n_splits=5, random_state=0)
    print("real metadata-only RF:", {k: round(v, 3) for k, v in scores.items()})
    assert scores["qwk"] >= 0.40
    assert 0.45 <= scores["accuracy"] <= 0.70


@pytest.mark.parametrize("model", sorted(CLINICAL_MODELS))
def test_every_built_in_clinical_model_fits_and_beats_chance(model, small_cohort):
    fold = patient_folds(small_cohort.y, small_cohort.groups, 5, random_state=0)[0]
    branch = ClinicalBranch(model, inner_folds=3, random_state=0)
    out = branch.fit_fold(small_cohort, fold.train, fold.test)
    assert out.train_proba.shape == (len(fold.train), 3) and not np.isnan(out.train_proba).any()
    np.testing.assert_allclose(out.test_proba.sum(axis=1), 1.0)
    assert out.info["settings"]["branch"] == ("metadata_rf" if model == "random_forest"
                                              else f"clinical_{model}")
    # Age carries the label in the toy table: any model ranks the classes better than chance.
    from fusionlib.results import classification_scores

    assert classification_scores(small_cohort.y[fold.train], out.train_proba)["qwk"] > 0.1, model


def test_forest_is_the_forest_of_before_the_registry(small_cohort):
    """The default model is the old metadata RF: same estimator settings, same cache key."""
    branch = ClinicalBranch(random_state=3)
    forest = branch.make_pipeline(small_cohort).named_steps["model"]
    assert type(forest).__name__ == "RandomForestClassifier"
    assert {k: forest.get_params()[k] for k in ("n_estimators", "min_samples_leaf", "max_features",
                                                 "class_weight", "n_jobs")} == {
        "n_estimators": 200, "min_samples_leaf": 10, "max_features": "sqrt",
        "class_weight": "balanced", "n_jobs": 1}
    assert branch.settings() == {"branch": "metadata_rf", "n_estimators": 200, "min_samples_leaf": 10,
                                 "max_features": "sqrt", "class_weight": "balanced",
                                 "inner_folds": 5, "sampling": "none", "random_state": 3}
    # n_jobs does not change the output, so it is not part of the cache key.
    assert ClinicalBranch(random_state=3, n_jobs=4).settings() == branch.settings()


def test_clinical_settings_check_the_model_and_its_options():
    from pydantic import ValidationError

    from fusionlib.branches import ClinicalSettings

    assert ClinicalSettings(model="logistic_regression", options={"C": 0.5}).options == {"C": 0.5}
    for bad, where in (({"model": "random_forst"}, "did you mean"),
                       ({"options": {"max_feature": 2}}, "'max_features'"),
                       ({"options": {"random_state": 1}}, "protocol.seed"),
                       ({"model": "hist_gradient_boosting", "options": {"max_iter": -1}}, "max_iter")):
        with pytest.raises(ValidationError, match=where.replace("(", r"\(")):
            ClinicalSettings(**bad)
