"""The suite's warning filters: third-party noise is silenced by its exact message only.

A filter by category or module alone would also hide the next, different warning of that
kind; each entry in pyproject.toml names the message it silences, and everything else
still shows.
"""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import numpy as np
from _pytest.config import parse_warning_filter   # how pytest itself reads these entries

ROOT = Path(__file__).resolve().parents[1]


def _filters() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["pytest"]["ini_options"].get("filterwarnings", [])


def _recorded(action) -> list[str]:
    """The warnings ``action()`` raises under exactly the suite's configured filters."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        for entry in _filters():
            warnings.filterwarnings(*parse_warning_filter(entry, escape=False))
        action()
    return [f"{w.category.__name__}: {w.message}" for w in caught]


def test_every_filter_names_the_message_it_silences():
    entries = _filters()
    assert entries, "no filter configured"
    for entry in entries:
        action, message, category, module, _ = parse_warning_filter(entry, escape=False)
        assert action == "ignore", entry
        assert len(message) >= 30 and not message.startswith((".*", "^.*")), \
            f"filter without an exact message: {entry!r}"
        assert category is not Warning and module, f"filter without category and module: {entry!r}"


def test_keras_tensor_conversion_is_silent_but_other_deprecations_show():
    import keras
    import tensorflow as tf

    assert _recorded(lambda: keras.ops.convert_to_numpy(tf.Variable([1.0, 2.0]))) == []
    # The same category from elsewhere is not hidden.
    shown = _recorded(lambda: warnings.warn("some other deprecation", DeprecationWarning))
    assert shown == ["DeprecationWarning: some other deprecation"]


def test_tiny_class_split_is_silent_but_other_user_warnings_show():
    from sklearn.model_selection import StratifiedKFold

    y = np.array([0] * 8 + [1] * 8 + [2] * 2)
    split = lambda: list(StratifiedKFold(n_splits=5).split(np.zeros((len(y), 1)), y))  # noqa: E731
    assert _recorded(split) == []
    assert _recorded(lambda: warnings.warn("The least populated class is ours", UserWarning)) \
        == ["UserWarning: The least populated class is ours"]


def _from(module: str, message: str, category=UserWarning):
    """A warning raised as if by ``module`` (what the filters' module part matches)."""
    return lambda: warnings.warn_explicit(message, category, f"{module}.py", 1, module=module)


def test_a_reworded_warning_from_the_same_library_is_not_hidden():
    quoted = "The least populated class in y has only 3 members, which is less than n_splits=5."
    assert _recorded(_from("sklearn.model_selection._split", quoted)) == []
    reworded = quoted.replace("only 3 members", "three members")
    assert _recorded(_from("sklearn.model_selection._split", reworded)) == [f"UserWarning: {reworded}"]
    other = _from("keras.src.backend.tensorflow.core", "__array__ is fine", DeprecationWarning)
    assert _recorded(other) == ["DeprecationWarning: __array__ is fine"]
