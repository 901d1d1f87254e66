"""fusionlib: fixed versus trainable fusion of clinical and image class probabilities.

The heavy pieces (TensorFlow, Keras) load only when first used; see
:mod:`fusionlib._tf`.
"""

from __future__ import annotations

from . import _tf  # noqa: F401  (sets TensorFlow's quiet-logging variables first)
from .errors import DataError, FusionlibError, ParamsError

__version__ = "0.1.0"

__all__ = ["LABELS", "MODALITIES", "Cohort", "DataError", "FusionlibError", "ParamsError",
           "build_multimodal_model", "load_cohort", "read_clinical_table", "__version__"]


_FROM_DATA = ("LABELS", "MODALITIES", "Cohort", "load_cohort", "read_clinical_table")


def __getattr__(name):
    # The data layer (pandas) and Keras-backed names resolve on first use, so `import fusionlib`
    # stays light: the command line (`fusionlib`, `python -m fusionlib`) imports this package
    # before its own code can catch a Ctrl-C (fusionlib.cli.main).
    if name in _FROM_DATA:
        from . import data

        return getattr(data, name)
    if name == "build_multimodal_model":
        from .models import build_multimodal_model

        return build_multimodal_model
    raise AttributeError(f"module 'fusionlib' has no attribute {name!r}")
