"""The base of every settings section: strict types, finite numbers, choices with did-you-mean
(:func:`choice`).

Each component declares its own section as a subclass of :class:`Settings` in its own
module (``DataSettings`` in :mod:`fusionlib.datasets`, ``ClinicalSettings`` in
:mod:`fusionlib.branches.clinical`, ...); :mod:`fusionlib.params` only composes them.
This module imports pydantic and nothing heavy, so declaring a section never pulls in
TensorFlow.
"""

from __future__ import annotations

import difflib
import math
import reprlib
from numbers import Integral

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator
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
            fail(f"must be a finite number, got {shown(bad)}" if isinstance(value, (int, float))
                 else f"must hold finite numbers only, got {shown(bad)}")
        return value


def _non_finite(value):
    """The first inf/nan (or float-overflowing int) inside ``value``, else None.

    Each list or mapping is looked at once, however often it is shared (YAML aliases) and
    even if it holds itself, so the time is linear in the distinct values."""
    stack, seen = [value], set()
    while stack:
        value = stack.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            try:
                if not math.isfinite(value):
                    return value
            except OverflowError:
                return value
            continue
        if isinstance(value, (dict, list, tuple)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            items = list(value.values()) if isinstance(value, dict) else list(value)
            stack.extend(reversed(items))
    return None


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 2, 60, 60, 40
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 5


def shown(value, limit: int = 100) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters.

    Never builds the full repr, so a huge value (a string of a million characters, a
    nested list standing for millions of items) costs no time or memory in a message."""
    if isinstance(value, str) and len(value) <= limit:
        text = repr(value)
    elif isinstance(value, (bool, float)) or (isinstance(value, int) and abs(value) < 10 ** 30):
        text = repr(value)
    elif isinstance(value, int):
        text = f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    else:
        try:
            text = _SHORT.repr(value)
        except ValueError:      # an int too long for str() inside (sys.set_int_max_str_digits)
            text = f"a {type(value).__name__} of {len(value)} items" if hasattr(value, "__len__") \
                else type(value).__name__
    return text if len(text) <= limit + 2 else f"{text[:limit]}..."


def clip(text, limit: int = 300) -> str:
    """``str(text)`` cut to ``limit`` characters (with the full length said)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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
            {"value": shown(value), "options": ", ".join(map(str, options)),
             "hint": did_you_mean(value, options)})
    return value


def choice(options) -> AfterValidator:
    """The one validator of a field that takes one of ``options``: ``Annotated[str,
    choice(OPTIONS)]``. ``options`` (a registry, a tuple, ..., or a function returning them
    when they must be imported late) is read at validation time, so a registry entry added
    later is accepted; an unknown value is :func:`one_of`'s error."""
    return AfterValidator(lambda value: one_of(value, options() if callable(options) else options))


def fail(message: str, subkey: str | None = None):
    """Raise a one-line validation error with ``message`` as is (no pydantic prefix).

    ``subkey`` names an entry inside the field (an option of a mapping): the error's key
    becomes ``section.field.subkey`` (see :func:`fusionlib.params.validate`).
    """
    raise PydanticCustomError("fusionlib", "{message}", {"message": message, "subkey": subkey})


def check_seed(value, name: str = "random_state") -> int:
    """``value`` as a plain int if it is a seed (an integer >= 0, not a bool), else a
    ValueError naming ``name``: the one seed check of every function taking ``random_state``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {shown(value)}")
    return int(value)
