"""The evaluation protocol, all at patient level.

* :func:`patient_folds` -- stratified group K-fold (:func:`stratified_group_folds`): no
  patient is in both the training and the test part of a fold.
* :func:`subsample_patients` -- data-percentage subsampling by patient, nested:
  for one seed, the 50 % cohort is a subset of the 100 % (and of the 75 %) one.
* :func:`inner_validation_split` -- validation patients carved from the training
  patients only; the test fold is never used for any choice.
* :func:`resample_training_rows` -- class-imbalance sampling on training rows only,
  with imbalanced-learn's samplers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

import numpy as np
from pydantic import Field, field_validator, model_serializer, model_validator

from .errors import DataError
from .settings import Settings, choice, fail

SAMPLING_STRATEGIES = ("none", "random", "combined")
MISSING_CASES = ("use", "exclude")
_PHASES = ("I", "P", "R")  # fusionlib.data.LABELS (not imported: data imports pandas)


class ProtocolSettings(Settings):
    """Section ``protocol``: which patients, how they are split, resampled and scored."""

    data_percentage: float = Field(100.0, description=(
        "share of patients kept, in (0, 100]; nested across percentages for one seed"))
    folds: int = Field(5, ge=2, description="outer patient-grouped folds")
    repeats: int = Field(1, ge=1, description="repeated cross-validation")
    seed: int = Field(0, ge=0, description="the run's seed (folds, subsampling, every model)")
    seeds: Optional[list[int]] = Field(None, description=(
        "several seeds in one run: each seed subsamples, splits and trains everything anew "
        "(branches cached per seed); scores are kept per seed and summarised over seeds. "
        "Replaces `seed`"))
    sampling: Annotated[str, choice(SAMPLING_STRATEGIES)] = Field("none", description=(
        "class resampling of training rows: `none`, `random`, `combined`"))
    missing_cases: Annotated[str, choice(MISSING_CASES)] = Field("use", description=(
        "`use` scores cases missing a modality by the fallback rule; `exclude` drops them"))
    validation_fraction: float = Field(0.2, description=(
        "share of training patients carved out for validation, in (0, 0.5)"))

    @field_validator("data_percentage")
    @classmethod
    def _percentage(cls, value):
        if not 0 < value <= 100:
            fail(f"must be in (0, 100], got {value:g}")
        return float(value)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value):
        if value is None:
            return value
        if not value or any(v < 0 for v in value) or len(set(value)) != len(value):
            fail(f"must be a non-empty list of distinct integers >= 0, got {value}")
        return value

    @model_validator(mode="after")
    def _seed_or_seeds(self):
        # A seed given beside seeds must be one of them (the notebook's parameters cell lists
        # both keys, so editing only ``seeds`` there keeps ``seed: 0``); seeds then rule.
        if self.seeds is not None and "seed" in self.model_fields_set \
                and self.seed not in self.seeds:
            fail(f"give either seed ({self.seed}) or seeds ({self.seeds}), not both")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # With ``seeds`` the single ``seed`` is unused: leave it out, so a dumped section (a
        # run's saved params, the notebook's injected parameters) validates again as it is.
        out = handler(self)
        if self.seeds is not None:
            out.pop("seed", None)
        return out

    def seed_list(self) -> list[int]:
        """The seeds a run trains and scores: ``seeds``, else ``[seed]``."""
        return list(self.seeds) if self.seeds is not None else [self.seed]

    def for_seed(self, seed: int) -> "ProtocolSettings":
        """This protocol with one seed (what each seed of a several-seed run uses)."""
        return self.model_copy(update={"seed": int(seed), "seeds": None})

    @field_validator("validation_fraction")
    @classmethod
    def _fraction(cls, value):
        if not 0 < value < 0.5:
            fail(f"must be in (0, 0.5), got {value}")
        return value


@dataclass(frozen=True)
class Fold:
    """Row positions of one outer fold (and its inner validation patients)."""

    index: int
    repeat: int
    train: np.ndarray
    test: np.ndarray


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_phases(y, what: str = "the training set", source=None) -> None:
    """DataError (naming ``source``) unless ``y`` holds all three phases I, P and R.

    A training set without a phase still "trains" and scores (QWK 0, accuracy 1 on a
    one-class table), so it is refused before any model is fitted.
    """
    present = set(np.asarray(y, dtype=int).tolist())
    absent = [label for code, label in enumerate(_PHASES) if code not in present]
    if absent:
        have = ", ".join(label for code, label in enumerate(_PHASES) if code in present) or "none"
        raise DataError(f"{what} lacks phase{'s' if len(absent) > 1 else ''} {', '.join(absent)} "
                        f"(has {have}); every training set needs all three phases I, P, R", source)


def max_folds(y, groups) -> int:
    """Most patient-grouped folds possible: the fewest patients that have any one phase."""
    y, groups = np.asarray(y, dtype=int), np.asarray(groups)
    return int(min(len(np.unique(groups[y == code])) for code in range(len(_PHASES))))


def check_folds(y, groups, n_splits, source=None, option: str = "folds") -> None:
    """DataError (naming ``source``) unless ``2 <= n_splits <= max_folds(y, groups)``.

    Each phase must be able to reach every test fold, so no phase may have fewer
    patients than there are folds.
    """
    check_phases(y, "the cohort", source)
    possible = max_folds(y, groups)
    n_patients = len(np.unique(np.asarray(groups)))
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) \
            or not 2 <= n_splits <= possible:
        fewest = min(range(len(_PHASES)),
                     key=lambda c: len(np.unique(np.asarray(groups)[np.asarray(y) == c])))
        raise DataError(f"{option} {n_splits!r} is not possible: {n_patients} patients, the fewest "
                        f"with one phase are {possible} (phase {_PHASES[fewest]}), so {option} "
                        f"must be between 2 and {possible}"
                        + ("" if possible >= 2 else " (no phase may have fewer than 2 patients)"),
                        source)


def patient_folds(y, groups, n_splits: int = 5, random_state: int = 0, repeat: int = 0) -> list[Fold]:
    """Stratified, patient-grouped K-fold splits.

    ``repeat`` shifts the seed so repeated cross-validation draws new partitions
    while staying reproducible.
    """
    y = np.asarray(y)
    groups = np.asarray(groups)
    n_splits = _check_int("n_splits", n_splits, 2)
    n_patients = len(np.unique(groups))
    if n_patients < n_splits:
        raise ValueError(f"n_splits={n_splits} needs at least {n_splits} patients, got {n_patients}")
    fold_of = stratified_group_folds(y, groups, n_splits,
                                     random_state=int(random_state) + 1000 * int(repeat))
    return [Fold(i, int(repeat), np.flatnonzero(fold_of != i), np.flatnonzero(fold_of == i))
            for i in range(n_splits)]


def stratified_group_folds(y, groups, n_splits: int, random_state: int = 0) -> np.ndarray:
    """The fold (0 .. n_splits - 1) of every row: whole groups (patients) per fold, each fold's
    class mix as close to the others as a greedy pass gets.

    The assignment is exactly scikit-learn's ``StratifiedGroupKFold(n_splits, shuffle=True,
    random_state=random_state)`` (its test fold ``i`` is the rows with fold ``i``; checked
    against it for many random cohorts in tests/test_splits.py): the groups in a seeded
    random order, stably sorted by the spread of their class counts, largest first; each goes
    to the fold that keeps the mean over classes of the spread across folds of each class's
    share smallest, ties (within ``np.isclose``) going to the fold with fewer rows. Computed
    here with every candidate fold of a group evaluated at once, which is what makes it fast:
    scikit-learn evaluates them one ``np.std`` at a time (70 ms for one split of a 120-patient
    training fold, most of the split's part of a fusion-only rerun).
    """
    y, groups = np.asarray(y), np.asarray(groups)
    _, y_inv, class_total = np.unique(y, return_inverse=True, return_counts=True)
    _, group_inv, group_rows = np.unique(groups, return_inverse=True, return_counts=True)
    n_groups, n_classes = len(group_rows), len(class_total)
    if n_splits > n_groups:
        raise ValueError(f"n_splits={n_splits} needs at least {n_splits} groups, got {n_groups}")
    if np.all(n_splits > class_total):
        raise ValueError(f"n_splits={n_splits} is greater than the number of members of every "
                         f"class ({class_total.tolist()})")
    counts = np.zeros((n_groups, n_classes))
    np.add.at(counts, (group_inv, y_inv), 1)
    order = np.random.RandomState(random_state).permutation(n_groups)   # the seeded group order
    counts = counts[order]
    position = np.empty_like(order)
    position[order] = np.arange(n_groups)
    per_fold = np.zeros((n_splits, n_classes))
    fold_of_group = np.empty(n_groups, dtype=int)
    # trial[i] = the fold counts with the group added to fold i (integers: exact in float64).
    put = np.eye(n_splits)[:, :, None]
    for g in np.argsort(-np.std(counts, axis=1), kind="stable"):
        trial = per_fold[None] + put * counts[g]
        spread = np.std(trial / class_total, axis=1).mean(axis=1)
        rows = per_fold.sum(axis=1)
        best, best_spread, best_rows = 0, np.inf, np.inf
        for i in range(n_splits):
            tied = np.isfinite(best_spread) and \
                abs(spread[i] - best_spread) <= 1e-8 + 1e-5 * abs(best_spread)
            if spread[i] < best_spread or (tied and rows[i] < best_rows):
                best, best_spread, best_rows = i, spread[i], rows[i]
        per_fold[best] += counts[g]
        fold_of_group[g] = best
    return fold_of_group[position[group_inv]]


def subsample_patients(groups, percentage: float, random_state: int = 0) -> np.ndarray:
    """Row positions of a patient subsample holding ``percentage`` % of the patients.

    Patients are ranked once by a seeded permutation and the first ``ceil(p * n)``
    are kept, so for a given seed smaller percentages are subsets of larger ones.
    """
    if isinstance(percentage, bool) or not isinstance(percentage, (int, float, np.number)) \
            or not 0 < percentage <= 100:
        raise ValueError(f"percentage must be a number in (0, 100], got {percentage!r}")
    groups = np.asarray(groups)
    patients = np.unique(groups)
    order = np.random.default_rng(int(random_state)).permutation(patients)
    keep = order[: max(1, int(np.ceil(len(patients) * percentage / 100.0 - 1e-9)))]
    return np.flatnonzero(np.isin(groups, keep))


def inner_validation_split(y, groups, train_index, fraction: float = 0.2,
                           random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training rows into (fit, validation) by patient, stratified.

    Uses a stratified group K-fold with ``round(1 / fraction)`` splits over the
    training rows alone and takes its first fold as validation.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    train_index = np.asarray(train_index)
    y = np.asarray(y)[train_index]
    groups = np.asarray(groups)[train_index]
    n_splits = max(2, int(round(1 / fraction)))
    n_splits = min(n_splits, len(np.unique(groups)))
    fold_of = stratified_group_folds(y, groups, n_splits, random_state=int(random_state))
    return train_index[fold_of != 0], train_index[fold_of == 0]


def inner_folds(y, groups, train_index, n_splits: int = 5, random_state: int = 0):
    """Patient-grouped stratified folds over a fold's training rows (for out-of-fold work).

    Yields ``(fit_rows, held_out_rows)`` as positions into the full cohort.
    """
    train_index = np.asarray(train_index)
    sub_groups = np.asarray(groups)[train_index]
    n_splits = min(_check_int("n_splits", n_splits, 2), len(np.unique(sub_groups)))
    fold_of = stratified_group_folds(np.asarray(y)[train_index], sub_groups, n_splits,
                                     random_state=int(random_state))
    for i in range(n_splits):
        yield train_index[fold_of != i], train_index[fold_of == i]


def resample_training_rows(y_train, strategy: str = "none", random_state: int = 0) -> np.ndarray:
    """Row positions (into ``y_train``) after class-imbalance resampling.

    ``none``
        every row once.
    ``random``
        random oversampling of every class to the largest class's count.
    ``combined``
        random undersampling of classes above the middle class's count and random
        oversampling of those below it, so every class ends at the middle count
        (for the DFU mix: P down, R up, I unchanged).

    Returns positions rather than rows, so the same resampling can be applied to
    features, images and cached probabilities alike.
    """
    if strategy not in SAMPLING_STRATEGIES:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLING_STRATEGIES)}, got {strategy!r}")
    y_train = np.asarray(y_train)
    positions = np.arange(len(y_train)).reshape(-1, 1)
    if strategy == "none":
        return positions.ravel()
    from imblearn.over_sampling import RandomOverSampler
    from imblearn.under_sampling import RandomUnderSampler

    labels, counts = np.unique(y_train, return_counts=True)
    if strategy == "random":
        sampler = RandomOverSampler(sampling_strategy="not majority", random_state=random_state)
        out, _ = sampler.fit_resample(positions, y_train)
        return out.ravel()
    middle = int(np.sort(counts)[len(counts) // 2])
    down = {int(c): middle for c, n in zip(labels, counts) if n > middle}
    up = {int(c): middle for c, n in zip(labels, counts) if n < middle}
    if down:
        positions, y_train = RandomUnderSampler(sampling_strategy=down, random_state=random_state) \
            .fit_resample(positions, y_train)
    if up:
        positions, y_train = RandomOverSampler(sampling_strategy=up, random_state=random_state) \
            .fit_resample(positions, y_train)
    return positions.ravel()
