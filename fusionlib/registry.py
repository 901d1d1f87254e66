"""One registry type for every extension point: fusion variants, metrics, clinical models,
decision rules, baselines and datasets.

A :class:`Registry` maps names to entries, in registration order (the order tables, columns
and descriptions follow). Each extension point keeps its own public name for its registry
(``FUSIONS``, ``METRICS``, ``CLINICAL_MODELS``, ``DECISIONS``, ``BASELINES``, ``DATASETS``)
and adding an entry is one :meth:`Registry.register` call. The same registry

* refuses a name registered twice (unless ``replace=True``),
* names the known entries, with a did-you-mean, for an unknown name,
* writes the description of its choices (:meth:`Registry.describe`) that the parameter
  schema, and so docs/params.md, shows, and
* checks a parameter value (:meth:`Registry.check`, for a pydantic validator).

It is a mutable mapping, so ``dict``-style code (``FUSIONS[name]``, ``.items()``,
``monkeypatch.setitem``) keeps working. No TensorFlow, no Keras: declaring entries stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Generic, TypeVar

from .settings import did_you_mean, one_of

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """A name no entry of a registry has. A KeyError (mapping lookups) and a ValueError (what
    the ``get_*`` functions raised before); its text is the plain message, not KeyError's repr."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _name_of(entry) -> str:
    return entry.name


def _summary_of(entry) -> str:
    return getattr(entry, "summary", "") or ""


class Registry(MutableMapping, Generic[T]):
    """Entries of one kind by name, in registration order.

    ``kind`` names the kind in messages ("fusion", "decision rule"); ``name`` and
    ``summary`` read an entry's name and one-line summary (default: its ``name`` and
    ``summary`` attributes).
    """

    def __init__(self, kind: str, entries=(), *, name: Callable[[T], str] = _name_of,
                 summary: Callable[[T], str] = _summary_of):
        self.kind = kind
        self._name, self._summary = name, summary
        self._entries: dict[str, T] = {}
        for entry in entries:
            self.register(entry)

    # -- adding and removing
    def register(self, entry: T, *, replace: bool = False) -> T:
        """Add ``entry`` at the end (``replace``: an entry of the same name, in its place)."""
        key = self._name(entry)
        if not isinstance(key, str) or not key:
            raise ValueError(f"a {self.kind} needs a non-empty name, got {key!r}")
        if key in self._entries and not replace:
            raise ValueError(f"{self.kind} {key!r} is already registered; pass replace=True "
                             f"to replace it")
        self._entries[key] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (an :class:`UnknownName` if there is none)."""
        entry = self[name]
        del self._entries[name]
        return entry

    # -- looking up
    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):       # TypeError: an unhashable value from a YAML file
            raise UnknownName(self.unknown_message(name)) from None

    def get(self, name, default=None):
        return self._entries.get(name, default) if isinstance(name, str) else default

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """The registered names, in order."""
        return list(self._entries)

    def unknown_message(self, name) -> str:
        """``unknown <kind> 'x'; expected one of a, b (did you mean 'a'?)``."""
        return (f"unknown {self.kind} {name!r}; expected one of {', '.join(self._entries)}"
                f"{did_you_mean(name, self._entries)}")

    # -- mapping writes: what monkeypatch.setitem and dict-style code use
    def __setitem__(self, name: str, entry: T) -> None:
        if self._name(entry) != name:
            raise ValueError(f"{self.kind} registered as {name!r} is named "
                             f"{self._name(entry)!r}")
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        self.unregister(name)

    # -- parameters and docs
    def check(self, value):
        """``value`` when it names an entry, else the one-line parameter error (with a
        did-you-mean) of :func:`fusionlib.settings.one_of`. For a pydantic validator."""
        return one_of(value, self._entries)

    def describe(self, template: str = "{choices}") -> str:
        """The choices in words, for a parameter's description: "`a` (its summary), `b`, ...",
        put into ``template`` at ``{choices}``. Written from the entries, so it cannot go stale."""
        items = []
        for key, entry in self._entries.items():
            summary = self._summary(entry)
            items.append(f"`{key}` ({summary})" if summary else f"`{key}`")
        return template.format(choices=", ".join(items))

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
