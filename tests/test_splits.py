"""The patient-level protocol: grouped folds, nested subsamples, inner validation, sampling."""

import numpy as np
import pytest

from fusionlib.splits import (inner_folds, inner_validation_split, patient_folds,
                              resample_training_rows, stratified_group_folds, subsample_patients)


@pytest.fixture
def toy():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(60), rng.integers(1, 6, 60))
    y = rng.choice(3, size=len(groups), p=[0.31, 0.56, 0.13])
    return y, groups


def test_every_fold_is_patient_disjoint_and_covers_all_rows(toy):
    y, groups = toy
    folds = patient_folds(y, groups, 5, random_state=1)
    assert len(folds) == 5
    seen = np.concatenate([f.test for f in folds])
    assert np.array_equal(np.sort(seen), np.arange(len(y)))
    for f in folds:
        assert not set(groups[f.train]) & set(groups[f.test])
        fit, val = inner_validation_split(y, groups, f.train, 0.2, random_state=2)
        assert set(fit) | set(val) == set(f.train)
        assert not set(groups[fit]) & set(groups[val])
        assert not set(val) & set(f.test)
        for a, b in inner_folds(y, groups, f.train, 3, random_state=0):
            assert not set(groups[a]) & set(groups[b])
            assert set(a) | set(b) == set(f.train)


def test_repeats_draw_new_partitions_and_seeds_are_deterministic(toy):
    y, groups = toy
    first = patient_folds(y, groups, 5, random_state=1)
    again = patient_folds(y, groups, 5, random_state=1)
    other = patient_folds(y, groups, 5, random_state=1, repeat=1)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(first, again))
    assert not all(np.array_equal(a.test, b.test) for a, b in zip(first, other))


def test_patient_subsamples_are_nested_and_whole_patients(toy):
    y, groups = toy
    full = subsample_patients(groups, 100, random_state=4)
    half = subsample_patients(groups, 50, random_state=4)
    quarter = subsample_patients(groups, 25, random_state=4)
    assert np.array_equal(full, np.arange(len(groups)))
    assert set(quarter) < set(half) < set(full)
    assert len(np.unique(groups[half])) == 30
    # Whole patients: every row of a kept patient is kept.
    kept = np.unique(groups[half])
    assert np.array_equal(half, np.flatnonzero(np.isin(groups, kept)))
    assert not np.array_equal(half, subsample_patients(groups, 50, random_state=5))


@pytest.mark.parametrize("bad", [0, -5, 100.5, "50"])
def test_subsample_percentage_is_validated(toy, bad):
    with pytest.raises(ValueError, match=r"percentage must be a number in \(0, 100\]"):
        subsample_patients(toy[1], bad)


def test_sampling_strategies_class_counts():
    y = np.array([0] * 31 + [1] * 56 + [2] * 13)
    assert np.bincount(y[resample_training_rows(y, "none")]).tolist() == [31, 56, 13]
    assert np.bincount(y[resample_training_rows(y, "random", 0)]).tolist() == [56, 56, 56]
    assert np.bincount(y[resample_training_rows(y, "combined", 0)]).tolist() == [31, 31, 31]
    a = resample_training_rows(y, "combined", 7)
    assert np.array_equal(a, resample_training_rows(y, "combined", 7))
    with pytest.raises(ValueError, match="sampling must be one of none, random, combined"):
        resample_training_rows(y, "smote")


# -- stratified_group_folds: scikit-learn's StratifiedGroupKFold assignment, computed faster

from hypothesis import given, settings, strategies as st  # noqa: E402


def _sklearn_folds(y, groups, n_splits, seed):
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    fold_of = np.full(len(y), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # "least populated class" on tiny draws
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for i, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
            fold_of[test] = i
    return fold_of


@st.composite
def _cohorts(draw):
    n_patients = draw(st.integers(2, 60))
    n_classes = draw(st.integers(2, 3))
    visits = draw(st.lists(st.integers(1, 4), min_size=n_patients, max_size=n_patients))
    groups = np.repeat(np.arange(n_patients), visits)
    # patient ids need not be sorted or contiguous: shuffle rows and relabel patients
    order = np.random.default_rng(draw(st.integers(0, 2**16))).permutation(len(groups))
    groups = (groups * 7 + 3)[order]
    y = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=len(groups),
                               max_size=len(groups))))
    n_splits = draw(st.integers(2, min(6, n_patients)))
    return y, groups, n_splits, draw(st.integers(0, 10_000))


@settings(max_examples=300, deadline=None)
@given(_cohorts())
def test_stratified_group_folds_is_scikit_learns_assignment(cohort):
    y, groups, n_splits, seed = cohort
    if np.all(n_splits > np.unique(y, return_counts=True)[1]):
        with pytest.raises(ValueError, match="greater than the number of members"):
            stratified_group_folds(y, groups, n_splits, random_state=seed)
        return
    np.testing.assert_array_equal(stratified_group_folds(y, groups, n_splits, random_state=seed),
                                  _sklearn_folds(y, groups, n_splits, seed))


def test_stratified_group_folds_on_the_default_cohort_sizes():
    """A 120-patient training fold of the default cohort's shape, several seeds."""
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(150), rng.integers(1, 5, 150))
    y = rng.choice(3, len(groups), p=[0.3, 0.5, 0.2])
    for seed in range(20):
        folds = stratified_group_folds(y, groups, 5, random_state=seed)
        np.testing.assert_array_equal(folds, _sklearn_folds(y, groups, 5, seed))
        # whole patients per fold
        assert all(len(np.unique(folds[groups == g])) == 1 for g in np.unique(groups))
