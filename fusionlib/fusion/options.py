"""Keras-free checks of a fusion variant's modalities and options.

Each check takes ``(value, modalities, fusion)`` and returns the value a layer is built
with (defaults resolved, numbers as plain Python floats and ints), or raises ValueError
naming the variant and the option.  The registry (:mod:`.registry`) attaches one check to
every option of every variant, so ``fusionlib validate`` checks options without TensorFlow.
"""

from __future__ import annotations

import math
from numbers import Real

from ..settings import check_seed

FIXED_CLINICAL_WEIGHT = 0.70
"""The old study's fixed share of the clinical-table (Random-Forest) probabilities."""

FIXED_RF_WEIGHT = FIXED_CLINICAL_WEIGHT
"""The same number under the old study's name (it fused a Random Forest's probabilities)."""

CLINICAL = "metadata"
"""The modality name of the clinical-table branch's probabilities."""


def default_weights(modalities) -> list[float]:
    """Default per-modality weights: the clinical table 0.70 and the rest split equally among
    the image modalities; without the clinical table, equal weights."""
    n = len(modalities)
    if CLINICAL in modalities and n >= 2:
        rest = (1.0 - FIXED_CLINICAL_WEIGHT) / (n - 1)
        return [FIXED_CLINICAL_WEIGHT if m == CLINICAL else rest for m in modalities]
    return [1.0 / n] * n


def check_modalities(modalities, fusion: str, min_modalities: int = 2) -> list[str]:
    if isinstance(modalities, str) or not isinstance(modalities, (list, tuple)):
        raise ValueError(f"modalities must be a list of modality names, got {modalities!r}")
    modalities = list(modalities)
    if not all(isinstance(m, str) for m in modalities):
        raise ValueError(f"modalities must be strings, got {modalities!r}")
    if len(modalities) < min_modalities:
        raise ValueError(f"fusion {fusion!r} needs at least {min_modalities} modalities, got "
                         f"{modalities!r}" + ("; a single modality has nothing to fuse (use "
                                             "fusion 'fixed')" if len(modalities) == 1 else ""))
    dups = sorted({m for m in modalities if modalities.count(m) > 1})
    if dups:
        raise ValueError(f"modalities must be distinct, got {modalities!r} (repeated: {dups})")
    return modalities


def _finite(v: float) -> bool:
    return math.isfinite(v)


def _weights(value, modalities, fusion: str, strictly_positive: bool) -> list[float]:
    n = len(modalities)
    if value is None:
        return default_weights(modalities)
    if isinstance(value, Real) and not isinstance(value, bool):
        if n != 2:
            raise ValueError(f"fusion {fusion!r}: a single weight only works for 2 modalities; "
                             f"give {n} weights for {modalities}, got {value!r}")
        value = [float(value), 1.0 - float(value)]
    try:
        values = [float(w) for w in value]
    except (TypeError, ValueError):
        raise ValueError(f"fusion {fusion!r}: weights must be numbers, one per modality "
                         f"{modalities}, got {value!r}") from None
    if len(values) != n:
        raise ValueError(f"fusion {fusion!r}: expected {n} weights (one per modality "
                         f"{modalities}), got {len(values)}: {values}")
    lo_ok = (lambda v: v > 0.0) if strictly_positive else (lambda v: v >= 0.0)
    if not all(_finite(v) and lo_ok(v) for v in values):
        bound = "> 0" if strictly_positive else ">= 0"
        raise ValueError(f"fusion {fusion!r}: weights must be finite and {bound}, got {values}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"fusion {fusion!r}: weights must sum to 1, got {values} "
                         f"(sum {sum(values):.6g})")
    return values


def weights(value, modalities, fusion: str, option: str = "weights") -> list[float]:
    """One weight per modality, >= 0, summing to 1 (for two modalities a single number is the
    first one's weight); None: :func:`default_weights`."""
    return _weights(value, modalities, fusion, strictly_positive=False)


def start_weights(value, modalities, fusion: str, option: str = "weights") -> list[float]:
    """As :func:`weights` but strictly positive: a learned mix starts at their logarithm."""
    return _weights(value, modalities, fusion, strictly_positive=True)


def positive(value, modalities, fusion: str, option: str = "temperature") -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not value > 0 or \
            not _finite(float(value)):
        raise ValueError(f"fusion {fusion!r}: option {option!r} must be a positive number, "
                         f"got {value!r}")
    return float(value)


def positive_int(value, modalities, fusion: str, option: str = "hidden_units") -> int:
    if isinstance(value, bool) or not _is_int(value) or value < 1:
        raise ValueError(f"fusion {fusion!r}: {option} must be a positive int, got {value!r}")
    return int(value)


def seed(value, modalities, fusion: str, option: str = "random_state") -> int:
    return check_seed(value, f"fusion {fusion!r}: {option}")


def _is_int(value) -> bool:
    # numpy integers count (a seed from a numpy array), without importing numpy here.
    return isinstance(value, int) or type(value).__name__.startswith(("int", "uint"))
