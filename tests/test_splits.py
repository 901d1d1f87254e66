"""The patient-level protocol: grouped folds, nested subsamples, inner validation, sampling."""

import numpy as np
import pytest

from fusionlib.splits import (inner_folds, inner_validation_split, patient_folds,
                              resample_training_rows, subsample_patients)


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
