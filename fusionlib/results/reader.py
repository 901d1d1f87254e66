"""The reader of run folders: the finished runs under a folder, each checked for what the report uses.

A *run* is a folder ``runs/<name>/`` written by :mod:`fusionlib.runner`: the result files of
:meth:`fusionlib.results.ExperimentResult.save` (names in :mod:`fusionlib.results.files`),
``executed.ipynb`` and, last, ``done.json``. Only folders with both ``done.json`` and
``metrics.json`` count; the runner's own ``.tmp-*`` / ``.old-*`` folders are ignored, and any
other folder that cannot be used is listed as left out.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .files import (DONE_FILE, EXECUTED_NOTEBOOK, METRICS_FILE, PREDICTION_COLUMNS,
                    PREDICTIONS_FILE, PROVENANCE_FILE, WEIGHTS_FILE)

logger = logging.getLogger("fusionlib")

FIXED = "fixed"
"""The fusion every other run is compared with (and listed after)."""


@dataclass
class Run:
    """One finished run, read from its folder."""

    name: str
    path: Path
    metrics: dict
    weights: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    done: dict = field(default_factory=dict)
    _predictions: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def summary(self) -> dict:
        return self.metrics.get("summary", {})

    @property
    def folds(self) -> pd.DataFrame:
        return pd.DataFrame(self.metrics.get("folds", []))

    @property
    def params(self) -> dict:
        return self.provenance.get("params", {})

    def setting(self, section: str, key: str, default=None):
        """One of the run's saved parameters, ``params[section][key]`` (``default`` if absent)."""
        values = self.params.get(section)
        return values.get(key, default) if isinstance(values, dict) else default

    @property
    def seeds(self) -> list[int]:
        """The seeds of the run's replicates (``protocol.seeds``, else ``[protocol.seed]``)."""
        seeds = self.setting("protocol", "seeds")
        return list(seeds) if seeds else [int(self.setting("protocol", "seed", 0) or 0)]

    @property
    def fusion(self) -> str:
        return str(self.summary.get("fusion") or self.setting("fusion", "variant") or "?")

    @property
    def decision(self) -> str:
        """The decision rule that turned probabilities into predictions (older runs: argmax)."""
        return str(self.summary.get("decision") or self.setting("decision", "rule") or "argmax")

    @property
    def data_percentage(self) -> float:
        value = self.summary.get("data_percentage",
                                 self.setting("protocol", "data_percentage", 100.0))
        return float(value)

    @property
    def data_name(self) -> str:
        return str(self.provenance.get("data", {}).get("name") or "")

    @property
    def synthetic(self) -> bool:
        """True when the run's data is synthetic (for example synthetic-from-real-labels)."""
        return "synthetic" in self.data_name.lower()

    @property
    def executed_notebook(self) -> Path:
        return self.path / EXECUTED_NOTEBOOK

    @property
    def predictions(self) -> pd.DataFrame | None:
        """``predictions.csv`` (read and checked by :func:`load_runs`, else on first use); None
        when the run has none."""
        if self._predictions is None:
            path = self.path / PREDICTIONS_FILE
            if not path.is_file():
                return None
            self._predictions = with_seed(pd.read_csv(path, dtype={"case_id": str}), self.seeds)
        return self._predictions


class _Unusable(Exception):
    """A run folder's file that cannot be used; the message names the file and the problem."""


def _read_json(path: Path, default=None, kind: type | None = None):
    """``path``'s JSON (``default`` when the file is absent); _Unusable when it cannot be used."""
    if not path.is_file():
        return default
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:     # unreadable, not UTF-8, not JSON (e.g. truncated)
        raise _Unusable(f"{path.name}: cannot be read ({_one_line(err)})") from None
    if kind is not None and not isinstance(value, kind):
        raise _Unusable(f"{path.name}: expected a JSON {'object' if kind is dict else 'list'}, "
                        f"got {type(value).__name__}")
    return value


def _read_predictions(path: Path) -> pd.DataFrame | None:
    """``predictions.csv`` checked for what the report uses; _Unusable when corrupt or truncated."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype={"case_id": str})
    except (OSError, ValueError, UnicodeDecodeError) as err:   # pandas' ParserError is a ValueError
        raise _Unusable(f"{path.name}: cannot be read ({_one_line(err)})") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise _Unusable(f"{path.name}: missing column(s) {', '.join(missing)}")
    numeric = frame[[c for c in PREDICTION_COLUMNS if c not in ("case_id", "patient")]]
    bad = ~numeric.apply(pd.to_numeric, errors="coerce").notna().all(axis=1)
    bad |= frame[["case_id", "patient"]].isna().any(axis=1)
    if bad.any():   # a truncated file ends in a short row, read as missing values
        raise _Unusable(f"{path.name}: row {int(np.flatnonzero(bad.to_numpy())[0]) + 2} is "
                        "incomplete or not numeric (truncated or corrupt file?)")
    return frame


def with_seed(frame: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    """``frame`` with a ``seed`` column: runs made before seeds were kept per row had one seed."""
    if "seed" not in frame.columns:
        frame = frame.copy()
        frame.insert(0, "seed", seeds[0])
    return frame


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _ignored(folder: Path) -> bool:
    # Only the runner's own folders (.tmp-*, .old-*): they start with a dot, which no valid
    # run name does (fusionlib.params.RUN_NAME_RE), so a real run is never hidden.
    return folder.name.startswith(".")


def load_runs(runs_dir: str | Path = "runs", left_out: list | None = None) -> list[Run]:
    """The finished runs under ``runs_dir``: folders with ``done.json`` and ``metrics.json``.

    The runner's temporary folders (names starting with a dot) are ignored.
    Every other folder that cannot be used (no ``done.json`` or ``metrics.json``,
    a JSON file that cannot be read or has the wrong shape, a corrupt
    ``predictions.csv``) is left out with a warning naming the folder and the
    file; ``left_out`` (when given) receives ``(folder name, reason)`` pairs so
    the report can show them. Sorted by data percentage (largest first),
    ``fixed`` first, then name.
    """
    runs_dir = Path(runs_dir)
    runs = []
    if not runs_dir.is_dir():
        return runs
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if _ignored(folder):
            continue
        try:
            missing = [f for f in (DONE_FILE, METRICS_FILE) if not (folder / f).is_file()]
            if missing:
                raise _Unusable(f"no {' and no '.join(missing)} (unfinished or not a run folder)")
            run = Run(name=folder.name, path=folder.resolve(),
                      metrics=_read_json(folder / METRICS_FILE, {}, dict),
                      weights=_read_json(folder / WEIGHTS_FILE, [], list) or [],
                      provenance=_read_json(folder / PROVENANCE_FILE, {}, dict) or {},
                      done=_read_json(folder / DONE_FILE, {}, dict) or {},
                      _predictions=_read_predictions(folder / PREDICTIONS_FILE))
            if run._predictions is not None:
                run._predictions = with_seed(run._predictions, run.seeds)
            for key in ("summary",):
                if not isinstance(run.metrics.get(key, {}), dict):
                    raise _Unusable(f"{METRICS_FILE}: {key!r} is not a JSON object")
        except _Unusable as err:
            logger.warning("run folder %s left out: %s", folder, err)
            if left_out is not None:
                left_out.append((folder.name, str(err)))
            continue
        runs.append(run)
    return sorted(runs, key=_run_order)


def _run_order(run: Run):
    return (-run.data_percentage, run.fusion != FIXED, run.name)


def dropped_images_count(summary: dict) -> int:
    """How many images the loader dropped (0 for runs made before it was recorded)."""
    dropped = summary.get("dropped_images") or {}
    try:
        return int(dropped.get("count", 0) if isinstance(dropped, dict) else dropped)
    except (TypeError, ValueError):
        return 0


def dropped_images_line(summary: dict) -> str:
    """One line on the images the loader dropped (``summary["dropped_images"]``), e.g.
    ``dropped images: 3 (unreadable 2, missing 1)``; runs made before it was recorded read 0."""
    dropped = summary.get("dropped_images") or {}
    reasons = dropped.get("by_reason") if isinstance(dropped, dict) else None
    count = dropped_images_count(summary)
    detail = ", ".join(f"{reason} {n}" for reason, n in (reasons or {}).items() if n)
    return f"dropped images: {count}" + (f" ({detail})" if count and detail else "")
