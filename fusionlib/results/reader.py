"""The reader of run folders: the finished runs under a folder, each checked for what the report uses.

A *run* is a folder ``runs/<name>/`` written by :mod:`fusionlib.running`: the result files of
:meth:`fusionlib.results.ExperimentResult.save` (names in :mod:`fusionlib.results.files`),
``executed.ipynb`` and, last, ``done.json``. Only folders with both ``done.json`` and
``metrics.json`` count; the runner's own ``.tmp-*`` / ``.old-*`` folders are ignored, and any
other folder that cannot be used is listed as left out.

A run is read as *one version* of its folder, although the runner may swap a new version in
(:func:`fusionlib._io.swap_into_place`: the old folder renamed aside, the new one renamed in,
the old one deleted) while it is read:

- every file of the run is read through one open handle on its folder, and the run's path must
  still name that very folder when the reading ends; when it does not, or the folder is gone
  for a moment (between the swap's two renames), the run is read again, up to ``_ATTEMPTS``
  times, then left out with a line saying so;
- the folder's files must agree where they record the same thing: ``predictions.csv`` has the
  rows ``metrics.json`` counts (in all and per fold; runs written before the pooled count was
  kept: the case count times the repeats) and reproduces its pooled scores, ``done.json``'s
  ``qwk_mean`` is ``metrics.json``'s mean QWK; a run whose files disagree (a truncated file,
  files of two versions) is left out naming the file and the difference;
- every row of ``predictions.csv`` has every column, with whole numbers for the ids, labels
  and predictions and probabilities (missing only for a whole branch) elsewhere;
- the folder list is read again after the runs are: a run first missed (its folder set aside
  by a swap, ``.old-<name>-*`` without ``<name>``) is read when it is back;
- keys written before the clinical share was named for the clinical branch (``rf_share``,
  ``influence_rf_share_per_class``, ...) are read under their current names
  (:func:`upgrade_legacy_keys`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import OLD_PREFIX
from ..data import LABELS
from ..errors import DataError
from .files import (DONE_FILE, EXECUTED_NOTEBOOK, METRICS_FILE, PREDICTION_COLUMNS,
                    PREDICTIONS_FILE, PROBA_COLUMNS, PROVENANCE_FILE, WEIGHTS_FILE)
from .registry import METRICS

logger = logging.getLogger("fusionlib")

FIXED = "fixed"
"""The fusion every other run is compared with (and listed after)."""

DEFAULT_CLINICAL_MODEL = "random_forest"
"""The clinical model of runs whose parameters name none (saved before ``clinical.model``)."""

LEGACY_SHARE_KEY, SHARE_KEY = "rf_share", "clinical_share"
"""The clinical branch's share under its old name (it was a Random Forest's) and its name now."""


def upgrade_legacy_keys(value):
    """``value`` (a run file's JSON) with every key written under the old share name renamed:
    ``rf_share`` -> ``clinical_share`` wherever it appears in a key (``influence_rf_share_I``,
    ``converged_rf_share_per_class``, ...), at any depth, in the same order; everything else
    as it was. Current files come back equal."""
    if isinstance(value, dict):
        return {(k.replace(LEGACY_SHARE_KEY, SHARE_KEY) if isinstance(k, str) else k):
                upgrade_legacy_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [upgrade_legacy_keys(v) for v in value]
    return value


@dataclass(frozen=True)
class ClinicalNames:
    """What reports call a clinical model: ``short`` in column, axis and row labels ("RF
    share", "RF:I"), ``long`` in sentences ("random forest"); ``model`` is its registry name
    ("" for several models at once)."""

    model: str
    short: str
    long: str

    @property
    def named(self) -> str:
        """" (gradient boosting)" to follow "the clinical branch" in a sentence; "" for the
        default model (whose sentences have always read without it) and for several models."""
        return "" if self.model in ("", DEFAULT_CLINICAL_MODEL) else f" ({self.long})"


MIXED_CLINICAL = ClinicalNames("", "clinical", "clinical model")
"""The names for runs of different clinical models shown together."""


def clinical_names(model: str | None) -> ClinicalNames:
    """The names of clinical model ``model`` (:data:`fusionlib.branches.clinical.CLINICAL_MODELS`'
    ``short`` and ``long``; None: the default model); a name this version does not know is
    shown as it is, with spaces for underscores."""
    # Imported here: the registry brings scikit-learn, which the report needs only now.
    from ..branches.clinical import CLINICAL_MODELS

    model = model or DEFAULT_CLINICAL_MODEL
    if model in CLINICAL_MODELS:
        spec = CLINICAL_MODELS[model]
        return ClinicalNames(model, spec.short, spec.long)
    return ClinicalNames(model, model, model.replace("_", " "))


def common_clinical_names(runs) -> ClinicalNames:
    """The names of the clinical model every run in ``runs`` used (the default model for no
    runs); :data:`MIXED_CLINICAL` when they used different ones."""
    models = {run.clinical_model for run in runs}
    if len(models) > 1:
        return MIXED_CLINICAL
    return clinical_names(next(iter(models), None))


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
    def clinical_model(self) -> str:
        """The clinical model's registry name (``clinical.model``; runs saved before the
        section: :data:`DEFAULT_CLINICAL_MODEL`)."""
        return str(self.setting("clinical", "model") or DEFAULT_CLINICAL_MODEL)

    @property
    def clinical(self) -> ClinicalNames:
        """What reports call the run's clinical model (:func:`clinical_names`)."""
        return clinical_names(self.clinical_model)

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
        when the run has none. DataError (one line naming the file) when it cannot be used."""
        if self._predictions is None:
            path = self.path / PREDICTIONS_FILE
            if not path.is_file():
                return None
            try:
                frame = with_seed(_parse_predictions(path.read_bytes()), self.seeds)
                _check_predictions(self, frame)
            except OSError as err:
                raise DataError(f"{PREDICTIONS_FILE}: cannot be read ({err.strerror or err})",
                                self.path) from None
            except _Unusable as err:
                raise DataError(str(err), self.path) from None
            self._predictions = frame
        return self._predictions


class _Unusable(Exception):
    """A run folder's file that cannot be used; the message names the file and the problem."""


class _Moved(Exception):
    """The run folder was replaced or removed while it was read (a swap): read it again."""


_ATTEMPTS = 5
"""How often a run folder (and the folder list) is read before a swap is taken as not ending."""

_PAUSES = (0.01, 0.02, 0.04, 0.08, 0.16)
"""Seconds to wait before each further attempt (a swap's gap lasts two renames)."""


def _pause(attempt: int) -> None:
    """Wait before attempt ``attempt + 1`` (tests replace this to act in the gap)."""
    time.sleep(_PAUSES[min(attempt, len(_PAUSES) - 1)])


def _read_file(dir_fd: int, name: str) -> bytes | None:
    """The bytes of the regular file ``name`` in the folder open as ``dir_fd`` (None when absent)."""
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise _Unusable(f"{name}: cannot be read ({err.strerror or err})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None                             # a folder (or other) by that name: absent
        try:
            return handle.read()
        except OSError as err:
            raise _Unusable(f"{name}: cannot be read ({err.strerror or err})") from None


def _read_json(dir_fd: int, name: str, default=None, kind: type | None = None):
    """File ``name``'s JSON (``default`` when the file is absent); _Unusable when it cannot be used."""
    data = _read_file(dir_fd, name)
    if data is None:
        return default
    try:
        value = json.loads(data.decode("utf-8"))
    except ValueError as err:     # not UTF-8, not JSON (e.g. truncated)
        raise _Unusable(f"{name}: cannot be read ({_one_line(err)})") from None
    if kind is not None and not isinstance(value, kind):
        raise _Unusable(f"{name}: expected a JSON {'object' if kind is dict else 'list'}, "
                        f"got {type(value).__name__}")
    return value


def _read_predictions(dir_fd: int, name: str = PREDICTIONS_FILE) -> pd.DataFrame | None:
    """``predictions.csv`` checked row by row (:func:`_parse_predictions`); None when absent."""
    data = _read_file(dir_fd, name)
    return None if data is None else _parse_predictions(data)


_NEWLINE = b"\n"
_INTEGER_COLUMNS = ("seed", "repeat", "fold", "label", "pred")
_SOURCE_SUFFIXES = tuple(f"_p_{label}" for label in LABELS)


def _parse_predictions(data: bytes) -> pd.DataFrame:
    """``predictions.csv``'s bytes as a table, checked for what the report uses: the columns it
    needs, every row whole (every column, ending in a line break) and valid values; _Unusable
    (naming the row) when corrupt or truncated."""
    name = PREDICTIONS_FILE
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype={"case_id": str}, encoding="utf-8")
    except (ValueError, UnicodeDecodeError) as err:   # pandas' ParserError is a ValueError
        raise _Unusable(f"{name}: cannot be read ({_one_line(err)})") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise _Unusable(f"{name}: missing column(s) {', '.join(missing)}")
    # Every row has every column: a row cut short reads as missing values in its last columns.
    short = _short_row(data)
    if short is not None:
        line, fields, width = short
        raise _Unusable(f"{name}: row {line} has {fields} of {width} columns "
                        "(truncated or corrupt file?)")
    if not data.endswith((b"\n", b"\r")):
        raise _Unusable(f"{name}: row {data.count(_NEWLINE) + 1} is cut short, the file ends "
                        "without a line break (truncated file?)")
    problem = _first_bad_row(frame)
    if problem is not None:
        row, what = problem
        raise _Unusable(f"{name}: row {row + 2} is incomplete or not valid: {what} "
                        "(truncated or corrupt file?)")
    return frame


def _short_row(data: bytes) -> tuple[int, int, int] | None:
    """``(line, fields, header's fields)`` of the first non-blank line of the CSV ``data`` whose
    field count differs from the header's; None when all agree. Counted with NumPy when no field
    is quoted and lines end in ``\\n`` (what pandas writes), else with :mod:`csv`."""
    if b'"' in data or b"\n" not in data:
        rows = csv.reader(io.StringIO(data.decode("utf-8-sig")))
        width = len(next(rows, []))
        for row in rows:
            if row and len(row) != width:
                return rows.line_num, len(row), width
        return None
    chars = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(chars == ord("\n"))
    if not len(ends) or ends[-1] != len(chars) - 1:
        ends = np.append(ends, len(chars))
    commas = np.searchsorted(np.flatnonzero(chars == ord(",")), ends)
    fields = np.diff(commas, prepend=0) + 1
    starts = np.r_[0, ends[:-1] + 1]
    length = ends - starts
    first = chars[np.minimum(starts, len(chars) - 1)]
    blank = (length == 0) | ((length == 1) & (first == ord("\r")))
    bad = np.flatnonzero(~blank & (fields != fields[0]))
    if not len(bad):
        return None
    return int(bad[0]) + 1, int(fields[bad[0]]), int(fields[0])


def _first_bad_row(frame: pd.DataFrame) -> tuple[int, str] | None:
    """``(row position, what is wrong)`` of the first row with a missing or invalid value, else None.

    Ids, labels and predictions (``seed, repeat, fold, label, pred, pred_<rule>,
    <source>_pred_<rule>``) are whole numbers (classes 0-2), the fused probabilities are in
    [0, 1]; a branch's or baseline's probabilities (``<source>_p_<label>``) are in [0, 1] or,
    for a case without that branch, all three missing."""
    n_classes = len(LABELS)
    checks = []             # (bad-row mask, what is wrong in that column), in column order
    for column in ("case_id", "patient"):
        checks.append((frame[column].isna().to_numpy(), f"{column} is missing"))
    values = {c: pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
              for c in frame.columns if c not in ("case_id", "patient")}
    for column, v in values.items():
        classes = column in ("label", "pred") or column.startswith("pred_") or "_pred_" in column
        if classes or column in _INTEGER_COLUMNS:
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(v) | (v != np.round(v)) | (v < 0)
                if classes:
                    bad |= v >= n_classes
            kind = "class (0-2)" if classes else "whole number"
            checks.append((bad, f"{column} is not a {kind}"))
    sources: dict[str, list[str]] = {}
    for column in values:
        if column in PROBA_COLUMNS:
            checks.append((~_probability(values[column]), f"{column} is not a probability"))
        else:
            suffix = next((x for x in _SOURCE_SUFFIXES if column.endswith(x)), None)
            if suffix is not None:
                sources.setdefault(column[: -len(suffix)], []).append(column)
    for source, columns in sources.items():
        absent = frame[columns].isna().to_numpy()   # empty fields: a case without this branch
        partly = absent.any(axis=1) & ~absent.all(axis=1)
        checks.append((partly, f"{source}'s probabilities are partly missing"))
        for c, column in enumerate(columns):
            checks.append((~absent[:, c] & ~_probability(values[column]),
                           f"{column} is not a probability"))
    bad_any = np.zeros(len(frame), bool)
    for mask, _ in checks:
        bad_any |= mask
    if not bad_any.any():
        return None
    row = int(np.flatnonzero(bad_any)[0])
    return row, next(what for mask, what in checks if mask[row])


def _probability(v: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(v) & (v >= -1e-9) & (v <= 1 + 1e-9)


def with_seed(frame: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    """``frame`` with a ``seed`` column: runs made before seeds were kept per row had one seed."""
    if "seed" not in frame.columns:
        frame = frame.copy()
        frame.insert(0, "seed", seeds[0])
    return frame


def _one_line(text) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- files that agree

_FINGERPRINT = ("accuracy", "qwk", "log_loss")
"""The pooled scores ``predictions.csv`` must reproduce (``metrics.json``'s ``summary.pooled``)."""

_DIFFERENT = "(truncated, or files of two versions of the run?)"


def _number(value) -> float | None:
    """``value`` as a finite float (None when it is not a number: absent, None, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) and number >= 0 else None


def _check_agreement(run: Run) -> None:
    """The run's files agree where they record the same thing; _Unusable naming the difference."""
    qwk = run.summary.get("qwk")
    recorded, done = _number(qwk.get("mean") if isinstance(qwk, dict) else None), \
        _number(run.done.get("qwk_mean"))
    if recorded is not None and done is not None and not math.isclose(done, recorded,
                                                                       rel_tol=1e-9, abs_tol=1e-12):
        raise _Unusable(f"{DONE_FILE}: qwk_mean {done:.6g} where {METRICS_FILE} records a mean QWK "
                        f"of {recorded:.6g} (files of two versions of the run?)")
    folds = run.metrics.get("folds")
    if run.weights and isinstance(folds, list) and folds and len(run.weights) != len(folds):
        raise _Unusable(f"{WEIGHTS_FILE}: {len(run.weights)} folds where {METRICS_FILE} records "
                        f"{len(folds)} {_DIFFERENT}")
    if run._predictions is not None:
        _check_predictions(run, run._predictions)


def _check_predictions(run: Run, frame: pd.DataFrame) -> None:
    """``frame`` (the run's ``predictions.csv``, with its seed column) holds the rows and pooled
    scores the run's ``metrics.json`` records; _Unusable naming the difference."""
    pooled = run.summary.get("pooled")
    pooled = pooled if isinstance(pooled, dict) else {}
    expected = _count(pooled.get("n"))
    what = "test cases"
    if expected is None:                        # written before the pooled count was kept
        expected, what = _expected_rows(run), "cases tested (cases × repeats)"
    if expected is not None and len(frame) != expected:
        raise _Unusable(f"{PREDICTIONS_FILE}: {len(frame)} rows where {METRICS_FILE} records "
                        f"{expected} {what} {_DIFFERENT}")
    per_fold = _fold_counts(run)
    if per_fold is not None:
        got = {tuple(int(x) for x in key): int(n)
               for key, n in frame.groupby(["seed", "repeat", "fold"]).size().items()}
        for key in sorted(set(per_fold) | set(got)):
            if per_fold.get(key, 0) != got.get(key, 0):
                raise _Unusable(f"{PREDICTIONS_FILE}: {got.get(key, 0)} rows for seed {key[0]}, "
                                f"repeat {key[1]}, fold {key[2]} where {METRICS_FILE} records "
                                f"{per_fold.get(key, 0)} {_DIFFERENT}")
    y, pred = frame["label"].to_numpy(dtype=int), frame["pred"].to_numpy(dtype=int)
    proba = frame[PROBA_COLUMNS].to_numpy(dtype=float)
    for name in _FINGERPRINT:
        recorded, metric = _number(pooled.get(name)), METRICS.get(name)
        if recorded is None or metric is None or metric.compute is None or not len(frame):
            continue
        try:
            value = float(metric.compute(y, proba, pred))
        except Exception:  # noqa: BLE001 - a score that cannot be recomputed is no evidence
            continue
        if not math.isclose(value, recorded, rel_tol=1e-6, abs_tol=1e-9):
            raise _Unusable(f"{PREDICTIONS_FILE}: its pooled {name} is {value:.6g} where "
                            f"{METRICS_FILE} records {recorded:.6g} (files of two versions of "
                            "the run?)")


def _first_seed(run: Run) -> int | None:
    """The seed of a run whose folds do not say theirs (None when its parameters do not tell)."""
    try:
        return run.seeds[0]
    except (TypeError, ValueError):
        return None


def _fold_counts(run: Run) -> dict | None:
    """``(seed, repeat, fold) -> test cases`` from ``metrics.json``'s folds (None when not kept)."""
    folds = run.metrics.get("folds")
    if not isinstance(folds, list) or not folds:
        return None
    counts = {}
    for f in folds:
        if not isinstance(f, dict):
            return None
        key = (_count(f.get("seed", _first_seed(run))), _count(f.get("repeat")),
               _count(f.get("fold")))
        n = _count(f.get("n"))
        if n is None or None in key or key in counts:
            return None
        counts[key] = n
    return counts


def _expected_rows(run: Run) -> int | None:
    """The rows of a run whose ``metrics.json`` keeps no pooled count: each case once per repeat
    of each seed (``n_cases``, or ``n_cases_per_seed``), less the test cases the folds left out.
    None when that cannot be told (no folds; several seeds on subsamples without their counts)."""
    folds, summary = run.metrics.get("folds"), run.summary
    if not isinstance(folds, list) or not folds or not all(isinstance(f, dict) for f in folds):
        return None
    repeats: dict = {}
    left_out = 0
    for f in folds:
        seed, repeat = _count(f.get("seed", _first_seed(run))), _count(f.get("repeat"))
        if seed is None or repeat is None:
            return None
        repeats.setdefault(seed, set()).add(repeat)
        left_out += sum(_count(f.get(k)) or 0 for k in ("n_test_unscored", "n_test_excluded"))
    per_seed = summary.get("n_cases_per_seed")
    if isinstance(per_seed, dict):
        cases = {s: _count(per_seed.get(str(s))) for s in repeats}
    elif len(repeats) == 1 or _number(summary.get("data_percentage")) in (None, 100.0):
        cases = {s: _count(summary.get("n_cases")) for s in repeats}
    else:                                       # n_cases is a mean over the seeds' subsamples
        return None
    if None in cases.values():
        return None
    return sum(cases[s] * len(r) for s, r in repeats.items()) - left_out


# --------------------------------------------------------------------------- reading a folder


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _exists(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _read_run_once(folder: Path) -> Run:
    """The run in ``folder``, every file read through one handle on it; _Moved when ``folder``
    no longer names that folder at the end (a swap), _Unusable when the run cannot be used."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (FileNotFoundError, NotADirectoryError):
        raise _Moved("the folder vanished while it was read") from None
    except OSError as err:
        raise _Unusable(f"cannot be read ({err.strerror or err})") from None
    try:
        mine = _identity(os.fstat(dir_fd))
        try:
            run, problem = _read_run_files(dir_fd, folder), None
        except _Unusable as err:
            run, problem = None, err
        try:
            now = _identity(os.stat(folder))
        except OSError:
            raise _Moved("the folder vanished while it was read") from None
        if now != mine:
            raise _Moved("the folder was replaced while it was read")
    finally:
        os.close(dir_fd)
    if problem is not None:
        raise problem
    return run


def _read_run_files(dir_fd: int, folder: Path) -> Run:
    missing = [f for f in (DONE_FILE, METRICS_FILE) if not _exists(dir_fd, f)]
    if missing:
        raise _Unusable(f"no {' and no '.join(missing)} (unfinished or not a run folder)")
    metrics = upgrade_legacy_keys(_read_json(dir_fd, METRICS_FILE, None, dict))
    weights = upgrade_legacy_keys(_read_json(dir_fd, WEIGHTS_FILE, [], list) or [])
    provenance = _read_json(dir_fd, PROVENANCE_FILE, {}, dict) or {}
    done = _read_json(dir_fd, DONE_FILE, None, dict)
    predictions = _read_predictions(dir_fd, PREDICTIONS_FILE)
    missing = [f for f, value in ((DONE_FILE, done), (METRICS_FILE, metrics)) if value is None]
    if missing:                                 # there a moment ago: gone with a swap
        raise _Unusable(f"no {' and no '.join(missing)} (unfinished or not a run folder)")
    run = Run(name=folder.name, path=folder.resolve(), metrics=metrics, weights=weights,
              provenance=provenance, done=done, _predictions=predictions)
    if run._predictions is not None:
        run._predictions = with_seed(run._predictions, run.seeds)
    for key in ("summary",):
        if not isinstance(run.metrics.get(key, {}), dict):
            raise _Unusable(f"{METRICS_FILE}: {key!r} is not a JSON object")
    _check_agreement(run)
    return run


def _load_run(folder: Path) -> Run | str:
    """The run in ``folder`` read as one version (:func:`_read_run_once`, again after a swap),
    or why it cannot be used."""
    for attempt in range(_ATTEMPTS):
        if attempt:
            _pause(attempt - 1)
        try:
            return _read_run_once(folder)
        except _Moved as err:
            moved = err
        except _Unusable as err:
            return str(err)
    return (f"{moved}, on each of {_ATTEMPTS} tries (another process replacing or removing "
            "it?); read the runs again when that is done")


def _ignored(folder: Path) -> bool:
    # Only the runner's own folders (.tmp-*, .old-*): they start with a dot, which no valid
    # run name does (fusionlib.params.RUN_NAME_RE), so a real run is never hidden.
    return folder.name.startswith(".")


def _listing(runs_dir: Path) -> tuple[set, set]:
    """``(run folder names, names whose folder a swap has set aside as .old-<name>-*)``."""
    names, aside = set(), set()
    try:
        entries = list(os.scandir(runs_dir))
    except FileNotFoundError:
        return names, aside
    for entry in entries:
        if entry.name.startswith(OLD_PREFIX):
            aside.add(entry.name[len(OLD_PREFIX):].rsplit("-", 1)[0])
        if _ignored(Path(entry.name)):
            continue
        try:
            if entry.is_dir():
                names.add(entry.name)
        except OSError:
            continue
    return names, aside - names


def load_runs(runs_dir: str | Path = "runs", left_out: list | None = None) -> list[Run]:
    """The finished runs under ``runs_dir``: folders with ``done.json`` and ``metrics.json``.

    The runner's temporary folders (names starting with a dot) are ignored.
    Every other folder that cannot be used (no ``done.json`` or ``metrics.json``,
    a JSON file that cannot be read or has the wrong shape, a corrupt or truncated
    ``predictions.csv``, files that disagree, a folder swapped on every try) is left
    out with a warning naming the folder and the file; ``left_out`` (when given)
    receives ``(folder name, reason)`` pairs so the report can show them. Each run is
    one version of its folder (see the module's notes). Sorted by data percentage
    (largest first), ``fixed`` first, then name.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    read: dict[str, Run | str] = {}
    for attempt in range(_ATTEMPTS):
        names, aside = _listing(runs_dir)
        new = sorted(names - read.keys())
        for name in new:
            read[name] = _load_run(runs_dir / name)
        if not new and not aside - read.keys():
            break                               # the list again, and nothing set aside
        if not new:
            _pause(attempt)                     # a folder set aside by a swap: back soon
    runs = []
    for name in sorted(read):
        if isinstance(read[name], str):
            logger.warning("run folder %s left out: %s", runs_dir / name, read[name])
            if left_out is not None:
                left_out.append((name, read[name]))
        else:
            runs.append(read[name])
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
