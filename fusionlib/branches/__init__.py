"""Unimodal branches that turn one kind of evidence into 3 class probabilities.

* :mod:`.base` -- :class:`BranchOutput` and the cross-fitting loop both branches share;
* :mod:`.clinical` -- the clinical-table branch (any registered scikit-learn classifier);
* :mod:`.image` -- the image CNN branch (:mod:`.cnn` trains one CNN);
* :mod:`.cache` -- branch probabilities on disk.
"""

from .base import BranchOutput, CrossFittedBranch
from .clinical import CLINICAL_MODELS, ClinicalBranch, ClinicalSettings
from .image import ImageBranch, ImageSettings, case_probabilities

__all__ = ["BranchOutput", "CrossFittedBranch", "CLINICAL_MODELS", "ClinicalBranch",
           "ClinicalSettings", "ImageBranch", "ImageSettings",
           "case_probabilities"]
