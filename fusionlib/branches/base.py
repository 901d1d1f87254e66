"""What every branch returns, and the one cross-fitting loop both branches share.

The honesty rule of both branches: the probabilities a fusion head is trained on must
look like the probabilities it will meet on the test fold. A model scored on the rows it
was fitted on is overconfident, so training-row probabilities are **out-of-fold**, from
inner folds grouped by patient (:class:`CrossFittedBranch`). Everything is fitted on the
fold's training rows only: imputation, category encoding, class resampling, early stopping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..splits import inner_folds


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


class CrossFittedBranch:
    """The out-of-fold loop: one model per inner patient-grouped fold scores its held-out rows.

    A subclass says how one inner model is fitted (:meth:`_fit_inner`, which returns the
    held-out rows' probabilities) and how the test rows are scored afterwards
    (:meth:`_test_output`: the clinical branch refits on all training rows, the image
    branch averages its inner CNNs). Subclasses have ``inner_folds`` and ``random_state``.
    """

    inner_folds: int
    random_state: int

    def settings(self) -> dict:  # pragma: no cover - every branch overrides it
        raise NotImplementedError

    def _prepare(self, cohort) -> None:
        """Per-fold set-up before the inner loop (the image branch reads its image arrays)."""

    def _fit_inner(self, cohort, k: int, fit_rows, held_rows, test_rows) -> np.ndarray:
        raise NotImplementedError

    def _test_output(self, cohort, train_index, test_index) -> dict:
        """``BranchOutput`` keyword arguments for the test rows: test_proba and the rest."""
        raise NotImplementedError

    def fit_fold(self, cohort, train_index, test_index, progress=None) -> BranchOutput:
        """Out-of-fold probabilities for ``train_index``, test probabilities for ``test_index``."""
        train_index = np.asarray(train_index)
        test_index = np.asarray(test_index)
        position = {row: i for i, row in enumerate(train_index)}
        train_proba = np.full((len(train_index), 3), np.nan)
        self._prepare(cohort)
        folds = list(inner_folds(cohort.y, cohort.groups, train_index, self.inner_folds,
                                 self.random_state))
        for k, (fit, held) in enumerate(folds):
            train_proba[[position[r] for r in held]] = self._fit_inner(cohort, k, fit, held,
                                                                       test_index)
            if progress is not None:
                progress(k + 1, len(folds))
        return BranchOutput(train_index, test_index, train_proba,
                            **self._test_output(cohort, train_index, test_index))
