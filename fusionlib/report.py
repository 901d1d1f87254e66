"""The cross-run report: load finished runs, tabulate them, compare with ``fixed``, render HTML.

A *run* is a folder ``runs/<name>/`` written by :mod:`fusionlib.runner`:
``metrics.json``, ``predictions.csv``, ``weights.json``, ``provenance.json``
(from :meth:`fusionlib.experiment.ExperimentResult.save`), ``executed.ipynb``
and, last, ``done.json``. Only folders with both ``done.json`` and
``metrics.json`` count; the runner's own ``.tmp-*`` / ``.old-*`` folders are
ignored, and any other folder that cannot be used is listed as left out.

:func:`build_report` executes ``notebooks/report.ipynb`` with papermill and
converts it to one self-contained HTML page (code hidden, images embedded as
base64 PNG, no script or stylesheet fetched from the network), plus one page
per run from its ``executed.ipynb``.
"""

from __future__ import annotations

import errno
import html
import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import atomic_write_text, writable_folder
from .data import LABELS
from .errors import FusionlibError

logger = logging.getLogger("fusionlib")

FIXED = "fixed"
REPORT_NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "report.ipynb"
PROBA_COLUMNS = [f"p_{label}" for label in LABELS]


# --------------------------------------------------------------------------- loading


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

    @property
    def fusion(self) -> str:
        return str(self.summary.get("fusion") or self.params.get("fusion") or "?")

    @property
    def decision(self) -> str:
        """The decision rule that turned probabilities into predictions (older runs: argmax)."""
        return str(self.summary.get("decision") or self.params.get("decision") or "argmax")

    @property
    def data_percentage(self) -> float:
        value = self.summary.get("data_percentage", self.params.get("data_percentage", 100.0))
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
        return self.path / "executed.ipynb"

    @property
    def predictions(self) -> pd.DataFrame | None:
        """``predictions.csv`` (read and checked by :func:`load_runs`, else on first use); None
        when the run has none."""
        if self._predictions is None:
            path = self.path / "predictions.csv"
            if not path.is_file():
                return None
            self._predictions = pd.read_csv(path, dtype={"case_id": str})
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


_PREDICTION_COLUMNS = ["repeat", "fold", "case_id", "patient", "label", "pred", *PROBA_COLUMNS]


def _read_predictions(path: Path) -> pd.DataFrame | None:
    """``predictions.csv`` checked for what the report uses; _Unusable when corrupt or truncated."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype={"case_id": str})
    except (OSError, ValueError, UnicodeDecodeError) as err:   # pandas' ParserError is a ValueError
        raise _Unusable(f"{path.name}: cannot be read ({_one_line(err)})") from None
    missing = [c for c in _PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise _Unusable(f"{path.name}: missing column(s) {', '.join(missing)}")
    numeric = frame[[c for c in _PREDICTION_COLUMNS if c not in ("case_id", "patient")]]
    bad = ~numeric.apply(pd.to_numeric, errors="coerce").notna().all(axis=1)
    bad |= frame[["case_id", "patient"]].isna().any(axis=1)
    if bad.any():   # a truncated file ends in a short row, read as missing values
        raise _Unusable(f"{path.name}: row {int(np.flatnonzero(bad.to_numpy())[0]) + 2} is "
                        "incomplete or not numeric (truncated or corrupt file?)")
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
            missing = [f for f in ("done.json", "metrics.json") if not (folder / f).is_file()]
            if missing:
                raise _Unusable(f"no {' and no '.join(missing)} (unfinished or not a run folder)")
            run = Run(name=folder.name, path=folder.resolve(),
                      metrics=_read_json(folder / "metrics.json", {}, dict),
                      weights=_read_json(folder / "weights.json", [], list) or [],
                      provenance=_read_json(folder / "provenance.json", {}, dict) or {},
                      done=_read_json(folder / "done.json", {}, dict) or {},
                      _predictions=_read_predictions(folder / "predictions.csv"))
            for key in ("summary",):
                if not isinstance(run.metrics.get(key, {}), dict):
                    raise _Unusable(f"metrics.json: {key!r} is not a JSON object")
        except _Unusable as err:
            logger.warning("run folder %s left out: %s", folder, err)
            if left_out is not None:
                left_out.append((folder.name, str(err)))
            continue
        runs.append(run)
    return sorted(runs, key=_run_order)


def _run_order(run: Run):
    return (-run.data_percentage, run.fusion != FIXED, run.name)


# --------------------------------------------------------------------------- tables


def _stat(summary: dict, key: str, part: str = "mean"):
    entry = summary.get(key)
    if not isinstance(entry, dict):
        return np.nan
    if part == "ci_low":
        return (entry.get("ci95") or [np.nan, np.nan])[0]
    if part == "ci_high":
        return (entry.get("ci95") or [np.nan, np.nan])[1]
    value = entry.get(part)
    return np.nan if value is None else value


def _fmt(value, digits: int = 3, sign: str = "") -> str:
    """``value`` with ``digits`` decimals (``sign="+"`` always shows the sign); "–" if not a
    finite number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if not np.isfinite(value) else f"{value:{sign}.{digits}f}"


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: QWK mean, SD and 95% CI over folds, accuracy, macro-F1, per-class
    F1, pooled QWK, calibration, trainable fusion parameters and the effective RF share."""
    rows = []
    for run in runs:
        s = run.summary
        mean, sd = _stat(s, "qwk"), _stat(s, "qwk", "sd")
        low, high = _stat(s, "qwk", "ci_low"), _stat(s, "qwk", "ci_high")
        params = s.get("trainable_fusion_params", run.provenance.get("trainable_fusion_params"))
        rows.append({
            "name": run.name,
            "fusion": run.fusion,
            "data %": run.data_percentage,
            "decision": s.get("decision", "argmax"),
            "QWK": f"{_fmt(mean)} ± {_fmt(sd)}",
            "QWK fold t-interval": f"[{_fmt(low)}, {_fmt(high)}]",
            "QWK mean": mean, "QWK sd": sd, "QWK CI low": low, "QWK CI high": high,
            "pooled QWK": (s.get("pooled") or {}).get("qwk", np.nan),
            # Cases by available modality, and the score on those with every modality.
            "cases by modality": ", ".join(f"{k} {v}" for k, v in
                                           (s.get("modality_counts") or {}).items()) or "–",
            "QWK complete cases": (s.get("scores_complete_cases") or {}).get("qwk", np.nan),
            "accuracy": _stat(s, "accuracy"),
            "macro-F1": _stat(s, "macro_f1"),
            **{f"F1 {label}": _stat(s, f"f1_{label}") for label in LABELS},
            "log-loss": _stat(s, "log_loss"), "pooled log-loss": (s.get("pooled") or {}).get(
                "log_loss", np.nan),
            "Brier": _stat(s, "brier"), "ECE": _stat(s, "ece"),
            "trainable fusion params": np.nan if params is None else int(params),
            "RF share": _stat(s, "rf_share"),
            "RF share sd": _stat(s, "rf_share", "sd"),
            "RF influence": _stat(s, "influence_rf_share"),
            # Images the loader could not use (absent in runs made before it was recorded).
            "dropped images": _dropped_images(s),
            "folds": s.get("n_folds", len(run.metrics.get("folds", []))),
            "cases": s.get("n_cases"),
            "data": run.data_name or "?",
            "synthetic": run.synthetic,
        })
    return pd.DataFrame(rows)


def _dropped_images(summary: dict) -> int:
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
    count = _dropped_images(summary)
    detail = ", ".join(f"{reason} {n}" for reason, n in (reasons or {}).items() if n)
    return f"dropped images: {count}" + (f" ({detail})" if count and detail else "")


def _never_trained_folds(run: Run) -> int:
    try:
        return int(run.summary.get("head_never_trained_folds") or 0)
    except (TypeError, ValueError):
        return 0


def _pairing_key(run: Run) -> tuple:
    p = run.params
    return (p.get("seed"), p.get("folds"), p.get("repeats", 1), run.provenance.get("data", {})
            .get("fingerprint"))


def _choose_fixed(fixed_runs: list[Run], run: Run) -> Run | None:
    same = [f for f in fixed_runs if _pairing_key(f) == _pairing_key(run)]
    return (same or fixed_runs or [None])[0]


def _per_fold_qwk_diffs(joined: pd.DataFrame) -> list[float]:
    from .metrics import qwk

    diffs = []
    for _, part in joined.groupby(["repeat", "fold"], sort=True):
        diffs.append(qwk(part["label"], part["pred_a"]) - qwk(part["label"], part["pred_b"]))
    return diffs


def _paired_row(variant_name: str, kind: str, pct: float, fixed: Run, pred_a: pd.DataFrame,
                n_boot: int, random_state: int, note: str = "") -> dict:
    """Pair ``pred_a`` (repeat, case_id, fold, label, patient, pred_a, loss_a) with ``fixed``'s
    predictions (its ``pred``, decided by the same rule, and its per-case log-loss)."""
    from .metrics import case_log_loss, paired_bootstrap_loss, paired_bootstrap_qwk, qwk

    frame = fixed.predictions
    base = frame[["repeat", "case_id", "label", "pred"]].rename(
        columns={"pred": "pred_b", "label": "label_b"})
    base["loss_b"] = case_log_loss(frame["label"], frame[PROBA_COLUMNS].to_numpy(dtype=float))
    joined = pred_a.merge(base, on=["repeat", "case_id"], how="inner")
    row = {"data %": pct, "variant": variant_name, "kind": kind, "vs": fixed.name,
           "cases": len(joined), "patients": joined["patient"].nunique() if len(joined) else 0}
    empty = {"QWK variant": np.nan, "QWK fixed": np.nan, "QWK diff": np.nan, "CI low": np.nan,
             "CI high": np.nan, SHARE_NOT_BETTER: np.nan, "log-loss diff": np.nan,
             "log-loss CI low": np.nan, "log-loss CI high": np.nan, "per-fold diffs": [],
             "mean fold diff": np.nan, "folds better": "–", "verdict": "–"}
    if not len(joined):
        return {**row, **empty, "note": note or "no common cases (different seed or folds?)"}
    if (joined["label"] != joined["label_b"]).any():
        return {**row, **empty, "note": "labels differ for the same case ids: not comparable"}
    boot = paired_bootstrap_qwk(joined["label"].to_numpy(), joined["pred_a"].to_numpy(),
                                joined["pred_b"].to_numpy(), joined["patient"].to_numpy(),
                                n_boot=n_boot, random_state=random_state)
    loss = paired_bootstrap_loss(joined["loss_a"].to_numpy(), joined["loss_b"].to_numpy(),
                                 joined["patient"].to_numpy(), n_boot=n_boot,
                                 random_state=random_state)
    diffs = _per_fold_qwk_diffs(joined)
    n_a = len(pred_a)
    if len(joined) < max(n_a, len(base)):
        note = (note + "; " if note else "") + f"paired on {len(joined)} of {max(n_a, len(base))} cases"
    return {**row,
            "QWK variant": qwk(joined["label"], joined["pred_a"]),
            "QWK fixed": qwk(joined["label"], joined["pred_b"]),
            "QWK diff": boot["delta"], "CI low": boot["ci_low"], "CI high": boot["ci_high"],
            SHARE_NOT_BETTER: boot["share_not_better"],
            "log-loss diff": loss["delta"], "log-loss CI low": loss["ci_low"],
            "log-loss CI high": loss["ci_high"],
            "verdict": verdict_text(boot["ci_low"], boot["ci_high"], loss["ci_low"], loss["ci_high"]),
            "per-fold diffs": [float(d) for d in diffs],
            "mean fold diff": float(np.mean(diffs)) if diffs else np.nan,
            "folds better": f"{sum(d > 0 for d in diffs)}/{len(diffs)}",
            "note": note}


SHARE_NOT_BETTER = "share of resamples ΔQWK ≤ 0"
"""Not a p-value: the bootstrap share of resampled QWK differences at or below zero."""


def verdict_text(qwk_low, qwk_high, loss_low, loss_high) -> str:
    """One phrase that reads both the QWK and the log-loss interval of variant − fixed."""
    from .metrics import interval_verdict

    return (f"QWK: {interval_verdict(qwk_low, qwk_high)}; "
            f"log-loss: {interval_verdict(loss_low, loss_high, lower_is_better=True)}")


def _with_loss(frame: pd.DataFrame, proba_columns: list[str]) -> pd.DataFrame:
    from .metrics import case_log_loss

    return frame.assign(loss_a=case_log_loss(frame["label"], frame[proba_columns].to_numpy(dtype=float)))


def paired_comparisons(runs: list[Run], n_boot: int = 2000, random_state: int = 0,
                       baselines: bool = True) -> pd.DataFrame:
    """Every non-fixed run vs the ``fixed`` run at the same data percentage, paired by case.

    With the same seed and folds the runs scored the same test cases, so their
    predictions are joined on ``(repeat, case_id)``. ``QWK diff`` is
    QWK(variant) - QWK(fixed) on the pooled joined cases, with a 95% bootstrap CI
    that resamples patients (:func:`fusionlib.metrics.paired_bootstrap_qwk`);
    ``per-fold diffs`` are the same difference within each (repeat, fold).
    With ``baselines``, the fixed run's own baselines (RF only, image only,
    stacking; from its ``predictions.csv``) are compared with it too (``kind`` =
    ``baseline``).
    """
    columns = ["data %", "variant", "kind", "vs", "cases", "patients", "QWK variant", "QWK fixed",
               "QWK diff", "CI low", "CI high", SHARE_NOT_BETTER, "log-loss diff",
               "log-loss CI low", "log-loss CI high", "verdict", "per-fold diffs",
               "mean fold diff", "folds better", "note"]
    rows = []
    by_pct: dict[float, list[Run]] = {}
    for run in runs:
        by_pct.setdefault(run.data_percentage, []).append(run)
    for pct in sorted(by_pct, reverse=True):
        group = by_pct[pct]
        fixed_runs = [r for r in group if r.fusion == FIXED and r.predictions is not None]
        if not fixed_runs:
            continue
        for run in group:
            if run.fusion == FIXED or run.predictions is None:
                continue
            fixed = _choose_fixed(fixed_runs, run)
            note = "" if _pairing_key(fixed) == _pairing_key(run) else \
                "seed, folds or data differ from the fixed run"
            if run.decision != fixed.decision:
                note = (note + "; " if note else "") + \
                    f"decision rules differ ({run.decision} vs {fixed.decision}): not comparable"
            pred = _with_loss(run.predictions, PROBA_COLUMNS)[
                ["repeat", "fold", "case_id", "patient", "label", "pred", "loss_a"]]
            rows.append(_paired_row(run.name, "fusion", pct, fixed, pred.rename(columns={"pred": "pred_a"}),
                                    n_boot, random_state, note))
        if baselines:
            fixed = fixed_runs[0]
            frame = fixed.predictions
            for source in sorted({c[: -len("_p_I")] for c in frame.columns if c.endswith("_p_I")}):
                if not (source.endswith("_only") or source == "stacking"):
                    continue
                cols = [f"{source}_p_{label}" for label in LABELS]
                proba = frame[cols].to_numpy(dtype=float)
                ok = np.isfinite(proba).all(axis=1)
                # The baseline decided by the run's own rule (older runs stored none: argmax).
                decided = f"{source}_pred_{fixed.decision}"
                pred_a = frame[decided].to_numpy()[ok] if decided in frame else proba[ok].argmax(axis=1)
                pred = _with_loss(frame.loc[ok], cols)[
                    ["repeat", "fold", "case_id", "patient", "label", "loss_a"]].assign(pred_a=pred_a)
                rows.append(_paired_row(f"{source} (baseline of {fixed.name})", "baseline", pct,
                                        fixed, pred, n_boot, random_state))
    return pd.DataFrame(rows, columns=columns)


def paired_side_by_side(paired: pd.DataFrame) -> pd.DataFrame:
    """The paired differences with one column per data percentage (e.g. 100% | 50%),
    each cell ``delta [CI low, CI high]``, rows by variant (fusion name when it is in the
    run name's place, so ``trainable_100`` and ``trainable_50`` share a row)."""
    if paired is None or not len(paired):
        return pd.DataFrame()
    frame = paired.copy()
    frame["row"] = [_variant_key(v, k) for v, k in zip(frame["variant"], frame["kind"])]
    frame["cell"] = [f"{_fmt(d, sign='+')} [{_fmt(lo, sign='+')}, {_fmt(hi, sign='+')}]"
                     for d, lo, hi in zip(frame["QWK diff"], frame["CI low"], frame["CI high"])]
    table = frame.pivot_table(index="row", columns="data %", values="cell", aggfunc="first")
    table = table[sorted(table.columns, reverse=True)]
    table.columns = [f"{c:g}% of patients" for c in table.columns]
    order = frame.drop_duplicates("row")["row"].tolist()
    return table.loc[order].fillna("–").rename_axis("variant").reset_index()


def _variant_key(name: str, kind: str) -> str:
    if kind == "baseline":
        return re.sub(r" \(baseline of .*\)$", "", name) + " (baseline)"
    # Strip a trailing data-percentage token such as "_100", "_50pct", "-p50".
    return re.sub(r"[_\-]?(p?\d+(\.\d+)?(pct|%)?)$", "", name) or name


def calibration_table(runs: list[Run]) -> pd.DataFrame:
    """Brier score and ECE per run: mean over folds and on the pooled predictions."""
    rows = []
    for run in runs:
        pooled = run.summary.get("pooled") or {}
        rows.append({"name": run.name, "fusion": run.fusion, "data %": run.data_percentage,
                     "Brier (fold mean)": _stat(run.summary, "brier"),
                     "ECE (fold mean)": _stat(run.summary, "ece"),
                     "Brier (pooled)": pooled.get("brier", np.nan),
                     "ECE (pooled)": pooled.get("ece", np.nan)})
    return pd.DataFrame(rows)


SHARE_KINDS = {
    "sensitivity": "rf_share",
    "influence": "influence_rf_share",
    "converged sensitivity": "converged_rf_share",
    "converged influence": "converged_influence_rf_share",
    "start sensitivity": "start_rf_share",
}
"""Learned-weight shares in the report: label -> metric name in ``metrics.json``."""


def rf_share_table(runs: list[Run]) -> pd.DataFrame:
    """RF share per run, overall / I / P / R as mean over folds (± SD for the overall value):
    sensitivity and influence of the deployed head, of the same head converged (same
    penalty, no early stopping) and the start's sensitivity; plus the training-objective gap
    of the deployed head to that optimum."""
    rows = []
    for run in runs:
        row = {"name": run.name, "fusion": run.fusion, "data %": run.data_percentage}
        for label, key in SHARE_KINDS.items():
            if not isinstance(run.summary.get(key), dict):
                row[label] = "–"
                continue
            row[label] = (f"{_fmt(_stat(run.summary, key), 2)} ± {_fmt(_stat(run.summary, key, 'sd'), 2)}"
                          f" ({' / '.join(_fmt(_stat(run.summary, f'{key}_{c}'), 2) for c in LABELS)})")
        row["objective gap"] = _stat(run.summary, "train_objective_gap")
        row["moved from start"] = _stat(run.summary, "moved_from_start")
        rows.append(row)
    return pd.DataFrame(rows)


def provenance_table(runs: list[Run]) -> pd.DataFrame:
    """Where each run came from: git commit, data name and fingerprint, seed, timing, versions."""
    rows = []
    for run in runs:
        p = run.provenance
        data = p.get("data", {})
        versions = p.get("versions", {})
        rows.append({"name": run.name,
                     "data": data.get("name", "?") + (" (SYNTHETIC)" if run.synthetic else ""),
                     "data fingerprint": data.get("fingerprint"),
                     "cases used": data.get("n_cases_used"),
                     "seed": p.get("seed", run.params.get("seed")),
                     "cohort seed": run.params.get("cohort_seed"),
                     "git commit": (p.get("git_commit") or "?")[:12],
                     "seconds": p.get("seconds"),
                     "finished": p.get("finished"),
                     "python": p.get("python"),
                     "versions": ", ".join(f"{k} {v}" for k, v in versions.items())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- HTML helpers


def html_table(frame: pd.DataFrame, table_id: str, caption: str | None = None,
               float_digits: int = 3) -> str:
    """A DataFrame as an HTML table with a stable ``id`` (for browsers and tests) and caption."""
    formatters = {c: (lambda v, d=float_digits: _fmt(v, d)) for c in frame.columns
                  if pd.api.types.is_float_dtype(frame[c])}
    text = frame.to_html(table_id=table_id, index=False, border=0, classes="fl-table",
                         formatters=formatters, na_rep="–", escape=True)
    if caption:
        text = text.replace("<thead>", f"<caption>{html.escape(caption)}</caption>\n  <thead>", 1)
    # Text columns read left-aligned, numbers right-aligned.
    text_columns = [i + 1 for i, c in enumerate(frame.columns)
                    if not pd.api.types.is_numeric_dtype(frame[c])
                    and not frame[c].astype(str).str.match(r"^[\s\d.,+\-–±\[\]%]*$").all()]
    rules = "".join(f"#{table_id} td:nth-child({i}), #{table_id} th:nth-child({i}) "
                    f"{{text-align: left;}}" for i in text_columns)
    style = f"<style>{rules}</style>" if rules else ""
    return f'{style}<div class="fl-table-wrap">{text}</div>'


def figure_html(fig, alt: str, css_class: str = "fl-figure", dpi: int = 100,
                png: str | None = None) -> str:
    """A figure as an ``<img>`` with alt text and an embedded base64 PNG (``png`` when already
    rendered); closes nothing."""
    from .plots import to_base64_png

    png = png if png is not None else to_base64_png(fig, dpi=dpi)
    return (f'<figure class="{css_class}"><img alt="{html.escape(alt, quote=True)}" '
            f'src="data:image/png;base64,{png}"/>'
            f'<figcaption>{html.escape(alt)}</figcaption></figure>')


REPORT_CSS = """
<style>
.fl-table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1.2em 0; }
.fl-table caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0; }
.fl-table th, .fl-table td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; }
.fl-table th { background: #f3f5f8; }
.fl-table td { white-space: nowrap; }
.fl-table-wrap { overflow-x: auto; max-width: 100%; }
.fl-table td:first-child, .fl-table th:first-child { text-align: left; }
.fl-figure { margin: 0.4em 0 1.2em 0; }
.fl-figure img { max-width: 100%; height: auto; }
.fl-figure figcaption { font-size: 11px; color: #666; }
.fl-banner { background: #fff4d6; border: 1px solid #e0b400; padding: 8px 12px; margin: 8px 0;
             border-radius: 4px; }
.fl-synthetic { background: #ffe08a; padding: 0 4px; border-radius: 3px; font-weight: 600; }
.fl-note { color: #555; font-size: 12px; }
</style>
"""


def synthetic_banner(runs: list[Run]) -> str:
    """A warning box naming the runs whose data is synthetic ('' when none is)."""
    synthetic = [r for r in runs if r.synthetic]
    if not synthetic:
        return ""
    names = sorted({r.data_name for r in synthetic})
    return (f'<div class="fl-banner" id="synthetic-banner"><strong>SYNTHETIC DATA.</strong> '
            f"{len(synthetic)} of {len(runs)} runs use synthetic data "
            f"({html.escape(', '.join(names))}), not real patients: their numbers test the "
            f"pipeline and say nothing about real wound healing.</div>")


def head_warning_banner(runs: list[Run]) -> str:
    """A warning box naming the runs with folds whose fusion head never left its start ('' if none).

    Such a fold's "trainable" result is the initial head, not a learned one.
    """
    items = [f"<li><strong>{html.escape(r.name)}</strong>: fusion head never trained in "
             f"{_never_trained_folds(r)} of {r.summary.get('n_folds', '?')} folds</li>"
             for r in runs if _never_trained_folds(r) > 0]
    if not items:
        return ""
    return ('<div class="fl-banner" id="head-never-trained-banner"><strong>WARNING: fusion head '
            "never trained.</strong> In these runs some folds kept the head's starting weights, so "
            "their scores are not those of a learned fusion:<ul>" + "".join(items) + "</ul></div>")


def left_out_html(left_out: list) -> str:
    """The run folders :func:`load_runs` left out, with the reason ('' when none was)."""
    if not left_out:
        return ""
    items = "".join(f"<li><code>{html.escape(str(name))}</code>: {html.escape(str(reason))}</li>"
                    for name, reason in left_out)
    return (f'<div class="fl-banner" id="left-out-runs"><strong>Runs left out ({len(left_out)}).'
            f"</strong> These folders are not in the tables below:<ul>{items}</ul></div>")


def run_links(runs: list[Run], prefix: str = "runs/") -> str:
    """Links to the per-run pages (only runs with an executed notebook)."""
    items = [f'<li><a href="{html.escape(prefix + r.name)}.html">{html.escape(r.name)}</a>'
             f"{' <span class=fl-synthetic>synthetic</span>' if r.synthetic else ''}</li>"
             for r in runs if r.executed_notebook.is_file()]
    if not items:
        return '<p class="fl-note">No per-run notebooks (executed.ipynb) found.</p>'
    return '<p>Per-run notebooks (code hidden):</p><ul id="run-links">' + "".join(items) + "</ul>"


# --------------------------------------------------------------------------- building


_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
"""


def html_exporter():
    """nbconvert's lab HTML exporter with code and prompts hidden and no network scripts
    (require.js, MathJax, Mermaid and widget loaders are left out; images stay embedded)."""
    import jinja2
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True,
                            extra_loaders=[jinja2.DictLoader({"fusionlib_report.html.j2": _TEMPLATE})])
    exporter.template_file = "fusionlib_report.html.j2"
    return exporter


def notebook_to_html(notebook, title: str | None = None, strip_stderr: bool = False) -> str:
    """An executed notebook (path or NotebookNode) as self-contained HTML, code hidden
    (``strip_stderr`` also drops warnings and log lines written to stderr)."""
    import nbformat

    if not hasattr(notebook, "cells"):
        notebook = nbformat.read(str(notebook), as_version=4)
    for cell in notebook.cells:
        if strip_stderr and cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", [])
                               if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    resources = {"metadata": {"name": title or notebook.metadata.get("title", "report")}}
    body, _ = html_exporter().from_notebook_node(notebook, resources=resources)
    return body


def build_report(runs_dir: str | Path = "runs", out_dir: str | Path = "reports",
                 notebook: str | Path | None = None, kernel_name: str | None = None,
                 n_boot: int = 2000) -> Path:
    """Execute the report notebook over ``runs_dir`` and write ``out_dir/index.html``.

    Also writes ``out_dir/runs/<name>.html`` for every run with an
    ``executed.ipynb``. Every file is written atomically. Returns the path of
    ``index.html``. Raises :class:`FusionlibError` when there is no finished run
    or the notebook fails (its partly executed copy is kept next to the report).
    """
    runs_dir = Path(runs_dir).resolve()
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():      # before any work or warning
        writable_folder(out_dir, "the report output folder (--out)")
    runs = load_runs(runs_dir)
    if not runs:
        raise FusionlibError(f"no finished runs in {runs_dir}; run `fusionlib run params/*.yaml` first")
    notebook = Path(notebook) if notebook is not None else REPORT_NOTEBOOK
    if not notebook.is_file():
        raise FusionlibError(f"report notebook not found: {notebook}")
    try:
        return _build(runs, runs_dir, out_dir, notebook, kernel_name, n_boot)
    except OSError as err:
        # A read-only or full output folder: one line naming the path; earlier files stay
        # (every write is atomic).
        if err.errno not in _WRITE_ERRNOS:
            raise
        raise FusionlibError(f"cannot write the report here: {err.strerror}",
                             err.filename or out_dir) from None


_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                 errno.EEXIST}


def _build(runs, runs_dir: Path, out_dir: Path, notebook: Path, kernel_name, n_boot) -> Path:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from .runner import QUIET_KERNEL_ARGS

    writable_folder(out_dir, "the report output folder (--out)")

    # Per-run pages first, so index.html never links to a page that is not there yet.
    for run in runs:
        if run.executed_notebook.is_file():
            try:
                page = notebook_to_html(run.executed_notebook, title=f"run {run.name}")
            except Exception as err:  # a broken notebook must not block the whole report
                logger.warning("could not convert %s: %s", run.executed_notebook, err)
                continue
            atomic_write_text(out_dir / "runs" / f"{run.name}.html", page)

    with tempfile.TemporaryDirectory(prefix=".report-", dir=out_dir) as tmp:
        executed = Path(tmp) / "report.ipynb"
        from .runner import quiet_kernel_channel_races

        quiet_kernel_channel_races()
        try:
            papermill.execute_notebook(
                str(notebook), str(executed),
                parameters={"runs_dir": str(runs_dir), "n_boot": int(n_boot)},
                kernel_name=kernel_name, cwd=str(notebook.parent), progress_bar=False,
                log_output=False, request_save_on_cell_execute=False,
                extra_arguments=QUIET_KERNEL_ARGS)
        except PapermillExecutionError as err:
            kept = out_dir / "report-failed.ipynb"
            if executed.is_file():
                atomic_write_text(kept, executed.read_text(encoding="utf-8"))
            raise FusionlibError(f"report notebook failed in cell {err.exec_count}: {err.ename}: "
                                 f"{err.evalue} (executed copy: {kept})") from err
        page = notebook_to_html(executed, title="fusionlib report", strip_stderr=True)
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    (out_dir / "report-failed.ipynb").unlink(missing_ok=True)
    return index
