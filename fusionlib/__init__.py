"""fusionlib: fixed versus trainable fusion of clinical and image class probabilities.

The heavy pieces (TensorFlow, Keras) load only when first used; see
:mod:`fusionlib._tf`.
"""

from __future__ import annotations

from . import _tf  # noqa: F401  (sets TensorFlow's quiet-logging variables first)
from .data import LABELS, MODALITIES, Cohort, load_cohort, read_clinical_table
from .errors import DataError, FusionlibError, ParamsError

__version__ = "0.1.0"

__all__ = ["LABELS", "MODALITIES", "Cohort", "DataError", "FusionlibError", "ParamsError",
           "build_multimodal_model", "load_cohort", "read_clinical_table", "__version__"]


def __getattr__(name):
    # Keras-backed names resolve on first use so `import fusionlib` stays fast.
    if name == "build_multimodal_model":
        from .models import build_multimodal_model

        return build_multimodal_model
    raise AttributeError(f"module 'fusionlib' has no attribute {name!r}")
