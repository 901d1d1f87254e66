"""The base of every settings section: strict types, finite numbers, choices with did-you-mean.

Each component declares its own section as a subclass of :class:`Settings` in its own
module (``DataSettings`` in :mod:`fusionlib.datasets`, ``ClinicalSettings`` in
:mod:`fusionlib.branches.clinical`, ...); :mod:`fusionlib.params` only composes them.
This module imports pydantic and nothing heavy, so declaring a section never pulls in
TensorFlow.
"""

from __future__ import annotations

import difflib
import math

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import PydanticCustomError


class Settings(BaseModel):
    """A settings section: unknown keys refused, no type coercion, finite numbers only.

    ``strict`` keeps YAML mistakes visible: ``folds: "2"`` or ``stage2: 1`` are refused
    rather than silently converted (an int is still accepted where a float is expected).
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False,
                              validate_default=False, frozen=False)

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, value):
        # allow_inf_nan covers float fields; this also covers an int too large for a float
        # (10**400) and infinities nested in option mappings and lists.
        bad = _non_finite(value)
        if bad is not None:
            fail(f"must be a finite number, got {bad!r}" if isinstance(value, (int, float))
                 else f"must hold finite numbers only, got {bad!r}")
        return value


def _non_finite(value):
    """The first inf/nan (or float-overflowing int) inside ``value``, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return None if math.isfinite(value) else value
        except OverflowError:
            return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for item in value:
            bad = _non_finite(item)
            if bad is not None:
                return bad
    return None


def did_you_mean(word, options) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, else an empty string."""
    hint = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def one_of(value, options):
    """``value`` if it is one of ``options``, else a one-line error with a did-you-mean."""
    options = list(options)
    if value not in options:
        raise PydanticCustomError(
            "choice", "unknown value {value}; expected one of {options}{hint}",
            {"value": repr(value), "options": ", ".join(map(str, options)),
             "hint": did_you_mean(value, options)})
    return value


def fail(message: str, subkey: str | None = None):
    """Raise a one-line validation error with ``message`` as is (no pydantic prefix).

    ``subkey`` names an entry inside the field (an option of a mapping): the error's key
    becomes ``section.field.subkey`` (see :func:`fusionlib.params.validate`).
    """
    raise PydanticCustomError("fusionlib", "{message}", {"message": message, "subkey": subkey})
