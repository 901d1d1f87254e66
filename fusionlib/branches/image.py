"""The image branch: a CNN per image modality, cross-fitted for out-of-fold probabilities.

Each of ``inner_folds`` CNNs is trained on the other inner folds' patients, with early
stopping on a validation slice of *those* patients (best weights restored on validation
QWK), and scores its held-out patients. The test rows get each inner CNN's probabilities
(``test_proba_models``; their mean is ``test_proba``), no extra training run. A case with
several images gets the mean of its images' probabilities; a case with no image gets NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Optional

import numpy as np
from pydantic import Field

from ..settings import Settings, choice
from ..splits import inner_validation_split
from .base import CrossFittedBranch
from .cnn import TRAINER, case_probabilities, train_image_classifier

__all__ = ["ImageBranch", "ImageSettings", "case_probabilities"]


def _backbones() -> list[str]:
    from ..models import BACKBONES, SMALL_CNN   # Keras-free names; the builders import Keras

    return [SMALL_CNN, *BACKBONES]


class ImageSettings(Settings):
    """Section ``image``: the CNN of every image modality and its out-of-fold inner folds."""

    size: int = Field(32, ge=8, description="square crop size in pixels")
    crop_margin: float = Field(0.15, ge=0, le=1, description="wound-box margin of the crop, in [0, 1]")
    backbone: Annotated[str, choice(_backbones)] = Field("small_cnn", description=(
        "image network; `keras.applications` names need a local weights file or train from scratch"))
    backbone_weights: Optional[str] = Field(None, description="local weights file of the backbone")
    epochs: int = Field(25, ge=1, description="CNN training epochs")
    patience: int = Field(6, ge=1, description="early stopping on inner-validation QWK")
    inner_folds: int = Field(2, ge=2, description="cross-fitting folds (one CNN each)")
    batch_size: int = Field(32, ge=1, description="CNN training batch size")
    learning_rate: float = Field(3e-3, gt=0, description="Adam learning rate of the CNN")
    augment: bool = Field(False, description="add mirrored copies of the training images")



@dataclass
class ImageBranch(CrossFittedBranch):
    """A CNN for one image modality, cross-fitted; ``settings`` is the ``image`` section."""

    modality: str = "thermal_map"
    image: ImageSettings = field(default_factory=ImageSettings)
    validation_fraction: float = 0.2
    sampling: str = "none"
    random_state: int = 0
    cache_dir: str | None = None
    history: list = field(default_factory=list, repr=False, compare=False)
    # (cohort, (images, image_case)) of the last cohort read: the outer folds of an
    # experiment share one cohort object, so its images are read once, not once per fold.
    _loaded: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def inner_folds(self) -> int:
        return self.image.inner_folds

    def settings(self) -> dict:
        """Everything that changes the branch's output (the cache key uses it)."""
        s = self.image
        # The keys of the branch before the settings sections, so existing caches stay valid;
        # "outputs" names the cached arrays' layout (entries without per-model test
        # probabilities are not reused); "trainer" the CNN training implementation (the
        # compiled loop gives other numbers than model.fit did, so entries of before it,
        # which have no "trainer", are not reused either).
        return {"branch": "image_cnn", "outputs": "per_model_test", "trainer": TRAINER,
                "modality": self.modality,
                "image_size": s.size, "crop_margin": s.crop_margin, "backbone": s.backbone,
                "backbone_weights": s.backbone_weights, "inner_folds": s.inner_folds,
                "epochs": s.epochs, "patience": s.patience, "batch_size": s.batch_size,
                "learning_rate": s.learning_rate, "validation_fraction": self.validation_fraction,
                "sampling": self.sampling, "augment": s.augment, "random_state": self.random_state}

    def arrays(self, cohort):
        """(images, image_case): the modality's crops and the case row of each."""
        from ..images import cohort_image_arrays

        return cohort_image_arrays(cohort, self.modality, size=self.image.size,
                                   margin=self.image.crop_margin, cache_dir=self.cache_dir)

    def _prepare(self, cohort) -> None:
        if self._loaded is None or self._loaded[0] is not cohort:
            self._loaded = (cohort, self.arrays(cohort))
        self._images, self._image_case = self._loaded[1]
        self.history, self._models, self._per_model = [], [], []

    def _fit_inner(self, cohort, k, fit_rows, held_rows, test_rows) -> np.ndarray:
        y = cohort.y
        fit, val = inner_validation_split(y, cohort.groups, fit_rows, self.validation_fraction,
                                          self.random_state + k)
        model, history = train_image_classifier(
            self.image, self.modality, self.sampling, self._images, self._image_case, y, fit, val,
            random_state=self.random_state + k)
        self.history.append(history)
        self._models.append(model)
        batch = self.image.batch_size
        self._per_model.append(case_probabilities(model, self._images, self._image_case,
                                                  test_rows, batch))
        return case_probabilities(model, self._images, self._image_case, held_rows, batch)

    def _test_output(self, cohort, train_index, test_index) -> dict:
        per_model = np.stack(self._per_model)
        models = self._models
        self._images = self._image_case = self._per_model = self._models = None
        return {"test_proba": per_model.mean(axis=0), "test_proba_models": per_model,
                "models": models, "info": {"settings": self.settings(), "history": self.history}}
