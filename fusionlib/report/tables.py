"""The report's tables, each a DataFrame built from finished runs (:class:`fusionlib.results.Run`).

The metric columns come from :data:`fusionlib.results.METRICS` (its ``runs``, ``calibration``
and ``shares`` tables); the paired comparisons' statistics from :mod:`fusionlib.metrics`.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..baselines import baseline_sources
from ..data import LABELS
from ..metrics import paired_comparison
from ..results import (FIXED, HEADLINE, METRICS, PROBA_COLUMNS, Metric, Run,
                       common_clinical_names, dropped_images_count, headline_metrics,
                       metrics_in)


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


def fmt(value, digits: int = 3, sign: str = "") -> str:
    """``value`` with ``digits`` decimals (``sign="+"`` always shows the sign); "–" if not a
    finite number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if not np.isfinite(value) else f"{value:{sign}.{digits}f}"


# --------------------------------------------------------------------------- runs


def _runs_frame_metrics(scored: bool) -> list:
    """The metrics in the runs frame: those the runs table or the calibration table shows (the
    headline has its own columns), scored ones before the trainable-parameter count, read ones
    (learned-weight shares) after it."""
    return [m for m in METRICS.values() if m.name != HEADLINE and m.scored == scored
            and {"runs", "calibration"} & set(m.tables)]


def _metric_columns(summary: dict, metrics: list, clinical: str) -> dict:
    out = {}
    for m in metrics:
        label = m.label_in("runs", clinical)
        out[label] = _stat(summary, m.name)
        for part in m.extra:
            if part == "sd":
                out[f"{label} sd"] = _stat(summary, m.name, "sd")
            elif part == "pooled":
                out[f"pooled {label}"] = (summary.get("pooled") or {}).get(m.name, np.nan)
    return out


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: the headline (QWK) mean, SD and 95% CI over folds, pooled and on the
    complete cases; every metric of the runs and calibration tables (mean over folds, plus
    its SD or pooled value where the metric asks for it); the trainable fusion parameters.
    Share columns name the runs' clinical model ("RF share"; "clinical share" for runs of
    different models)."""
    head = METRICS[HEADLINE].label
    scores, shares = _runs_frame_metrics(True), _runs_frame_metrics(False)
    clinical = common_clinical_names(runs).short
    rows = []
    for run in runs:
        s = run.summary
        mean, sd = _stat(s, HEADLINE), _stat(s, HEADLINE, "sd")
        low, high = _stat(s, HEADLINE, "ci_low"), _stat(s, HEADLINE, "ci_high")
        params = s.get("trainable_fusion_params", run.provenance.get("trainable_fusion_params"))
        rows.append({
            "name": run.name,
            "fusion": run.fusion,
            "data %": run.data_percentage,
            "decision": s.get("decision", "argmax"),
            head: f"{fmt(mean)} ± {fmt(sd)}",
            f"{head} fold t-interval": f"[{fmt(low)}, {fmt(high)}]",
            f"{head} over seeds": _over_seeds(s),
            f"{head} mean": mean, f"{head} sd": sd, f"{head} CI low": low, f"{head} CI high": high,
            f"pooled {head}": (s.get("pooled") or {}).get(HEADLINE, np.nan),
            # Cases by available modality, and the score on those with every modality.
            "cases by modality": ", ".join(f"{k} {v}" for k, v in
                                           (s.get("modality_counts") or {}).items()) or "–",
            f"{head} complete cases": (s.get("scores_complete_cases") or {}).get(HEADLINE, np.nan),
            **_metric_columns(s, scores, clinical),
            "trainable fusion params": np.nan if params is None else int(params),
            **_metric_columns(s, shares, clinical),
            # Images the loader could not use (absent in runs made before it was recorded).
            "dropped images": dropped_images_count(s),
            "folds": s.get("n_folds", len(run.metrics.get("folds", []))),
            "cases": s.get("n_cases"),
            "data": run.data_name or "?",
            "synthetic": run.synthetic,
        })
    return pd.DataFrame(rows)


def _over_seeds(summary: dict) -> str:
    """The headline's per-seed means summarised: ``mean ± sd (n seeds)``; "–" for one seed."""
    by_seed = ((summary.get("by_seed") or {}).get("metrics") or {}).get(HEADLINE) or {}
    per_seed = [v for v in by_seed.get("per_seed") or [] if v is not None]
    if len(per_seed) < 2:
        return "–"
    return f"{fmt(by_seed['mean'])} ± {fmt(by_seed['sd'])} ({len(per_seed)} seeds)"


def runs_table_columns(runs: list[Run] | None = None) -> list[str]:
    """The columns of :func:`runs_table` the report shows, in order: the metrics of the
    ``runs`` table of :data:`fusionlib.results.METRICS` between the headline and the counts,
    labelled for ``runs``' clinical model (none given: the default model's)."""
    head = METRICS[HEADLINE].label
    shown = metrics_in("runs")
    clinical = common_clinical_names(runs or []).short
    return ["name", "fusion", "data %", "decision", head, f"{head} fold t-interval",
            f"{head} over seeds",
            f"pooled {head}", *[m.label_in("runs", clinical) for m in shown if m.scored],
            "trainable fusion params",
            *[m.label_in("runs", clinical) for m in shown if not m.scored],
            "folds", "cases", "dropped images", "cases by modality", f"{head} complete cases", "data"]


# --------------------------------------------------------------------------- paired comparisons


def share_not_better(metric: Metric) -> str:
    """The column of the bootstrap share of resampled differences that are not better (≤ 0
    where higher is better, ≥ 0 where lower is): not a p-value."""
    return f"share of resamples Δ{metric.label} {'≤' if metric.higher_is_better else '≥'} 0"


def paired_columns(metrics: list[Metric] | None = None) -> list[str]:
    """The pooled-case table's columns: the first headline metric (default
    :func:`fusionlib.results.headline_metrics`) of each side, its difference, interval and
    :func:`share_not_better`, then every other one's difference and interval."""
    lead, *others = headline_metrics() if metrics is None else metrics
    columns = ["data %", "variant", "kind", "vs", "cases", "patients", f"{lead.label} variant",
               f"{lead.label} fixed", f"{lead.label} diff", "CI low", "CI high",
               share_not_better(lead)]
    for m in others:
        columns += [f"{m.label} diff", f"{m.label} CI low", f"{m.label} CI high"]
    return columns + ["verdict", "per-fold diffs", "mean fold diff", "folds better", "note"]


SHARE_NOT_BETTER = share_not_better(METRICS[HEADLINE])
"""Not a p-value: the bootstrap share of resampled QWK differences at or below zero."""

PAIRED_COLUMNS = paired_columns()
"""The pooled-case table's columns with the built-in metrics (QWK, log-loss)."""


def pairing_key(run: Run) -> tuple:
    """What a variant must share with its ``fixed`` run: seeds, folds, repeats and data."""
    return (tuple(run.seeds), run.setting("protocol", "folds"),
            run.setting("protocol", "repeats", 1), run.provenance.get("data", {}).get("fingerprint"))


def choose_fixed(fixed_runs: list[Run], run: Run) -> Run | None:
    same = [f for f in fixed_runs if pairing_key(f) == pairing_key(run)]
    return (same or fixed_runs or [None])[0]


def _paired_row(variant_name: str, kind: str, pct: float, fixed: Run, pred_a: pd.DataFrame,
                n_boot: int, random_state: int, note: str = "", metrics: list[Metric] = ()) -> dict:
    """Pair ``pred_a`` (seed, repeat, case_id, fold, label, patient, pred_a, and ``a_<name>``
    per-case values of each per-case metric) with ``fixed``'s predictions (its ``pred``,
    decided by the same rule, and its per-case values)."""
    frame = fixed.predictions
    base = frame[["seed", "repeat", "case_id", "label", "pred"]].rename(
        columns={"pred": "pred_b", "label": "label_b"})
    for m in metrics:
        if m.per_case is not None:
            base[f"b_{m.name}"] = m.per_case(frame["label"],
                                             frame[PROBA_COLUMNS].to_numpy(dtype=float))
    joined = pred_a.merge(base, on=["seed", "repeat", "case_id"], how="inner")
    row = {"data %": pct, "variant": variant_name, "kind": kind, "vs": fixed.name,
           "cases": len(joined), "patients": joined["patient"].nunique() if len(joined) else 0}
    lead, *others = metrics
    columns = paired_columns(metrics)
    empty = {**{c: np.nan for c in columns[columns.index(f"{lead.label} variant"):
                                           columns.index("verdict")]},
             "per-fold diffs": [], "mean fold diff": np.nan, "folds better": "–", "verdict": "–"}
    if not len(joined):
        return {**row, **empty, "note": note or "no common cases (different seed or folds?)"}
    if (joined["label"] != joined["label_b"]).any():
        return {**row, **empty, "note": "labels differ for the same case ids: not comparable"}
    cases = {m.name: (joined[f"a_{m.name}"].to_numpy(), joined[f"b_{m.name}"].to_numpy())
             for m in metrics if m.per_case is not None}
    c = paired_comparison(joined["label"].to_numpy(), joined["pred_a"].to_numpy(),
                          joined["pred_b"].to_numpy(), None, None, joined["patient"].to_numpy(),
                          joined[["seed", "repeat", "fold"]].to_numpy(), n_boot=n_boot,
                          random_state=random_state, metrics=[m.paired for m in metrics],
                          cases=cases)
    n_a = len(pred_a)
    if len(joined) < max(n_a, len(base)):
        note = (note + "; " if note else "") + f"paired on {len(joined)} of {max(n_a, len(base))} cases"
    boot = c["by_metric"][lead.name]
    out = {**row,
           f"{lead.label} variant": c["a"], f"{lead.label} fixed": c["b"],
           f"{lead.label} diff": boot["delta"], "CI low": boot["ci_low"], "CI high": boot["ci_high"],
           share_not_better(lead): boot["share_not_better"]}
    for m in others:
        b = c["by_metric"][m.name]
        out.update({f"{m.label} diff": b["delta"], f"{m.label} CI low": b["ci_low"],
                    f"{m.label} CI high": b["ci_high"]})
    return {**out, "verdict": c["verdict"], "per-fold diffs": c["fold_diffs"],
            "mean fold diff": c["mean_fold_diff"], "folds better": c["folds_better"],
            "note": note}


def _with_cases(frame: pd.DataFrame, proba_columns: list[str], metrics: list[Metric]) -> pd.DataFrame:
    """``frame`` with ``a_<name>``: each per-case metric's per-case values of ``proba_columns``."""
    proba = frame[proba_columns].to_numpy(dtype=float)
    return frame.assign(**{f"a_{m.name}": m.per_case(frame["label"], proba)
                           for m in metrics if m.per_case is not None})


def paired_comparisons(runs: list[Run], n_boot: int = 2000, random_state: int = 0,
                       baselines: bool = True, metrics: list[Metric] | None = None) -> pd.DataFrame:
    """Every non-fixed run vs the ``fixed`` run at the same data percentage, paired by case.

    With the same seed and folds the runs scored the same test cases, so their
    predictions are joined on ``(seed, repeat, case_id)``. ``QWK diff`` is
    QWK(variant) - QWK(fixed) on the pooled joined cases, with a 95% bootstrap CI
    that resamples patients (:func:`fusionlib.metrics.paired_bootstrap_qwk`);
    ``per-fold diffs`` are the same difference within each (seed, repeat, fold).
    With ``baselines``, the fixed run's own baselines (clinical only, image only,
    stacking; from its ``predictions.csv``) are compared with it too (``kind`` =
    ``baseline``). Every headline metric (``metrics``, default
    :func:`fusionlib.results.headline_metrics`) gets its difference and interval, the first
    one also each side's value and the per-fold differences.
    """
    metrics = headline_metrics() if metrics is None else list(metrics)
    case_columns = [f"a_{m.name}" for m in metrics if m.per_case is not None]
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
            fixed = choose_fixed(fixed_runs, run)
            note = "" if pairing_key(fixed) == pairing_key(run) else \
                "seed, folds or data differ from the fixed run"
            if run.decision != fixed.decision:
                note = (note + "; " if note else "") + \
                    f"decision rules differ ({run.decision} vs {fixed.decision}): not comparable"
            pred = _with_cases(run.predictions, PROBA_COLUMNS, metrics)[
                ["seed", "repeat", "fold", "case_id", "patient", "label", "pred", *case_columns]]
            rows.append(_paired_row(run.name, "fusion", pct, fixed, pred.rename(columns={"pred": "pred_a"}),
                                    n_boot, random_state, note, metrics))
        if baselines:
            fixed = fixed_runs[0]
            frame = fixed.predictions
            sources = baseline_sources(fixed.setting("data", "modalities")
                                       or ["metadata", "thermal_map"])
            for source in sorted({c[: -len("_p_I")] for c in frame.columns if c.endswith("_p_I")}):
                if source not in sources:
                    continue
                cols = [f"{source}_p_{label}" for label in LABELS]
                proba = frame[cols].to_numpy(dtype=float)
                ok = np.isfinite(proba).all(axis=1)
                # The baseline decided by the run's own rule (older runs stored none: argmax).
                decided = f"{source}_pred_{fixed.decision}"
                pred_a = frame[decided].to_numpy()[ok] if decided in frame else proba[ok].argmax(axis=1)
                pred = _with_cases(frame.loc[ok], cols, metrics)[
                    ["seed", "repeat", "fold", "case_id", "patient", "label", *case_columns]
                ].assign(pred_a=pred_a)
                rows.append(_paired_row(f"{source} (baseline of {fixed.name})", "baseline", pct,
                                        fixed, pred, n_boot, random_state, metrics=metrics))
    return pd.DataFrame(rows, columns=paired_columns(metrics))


def paired_side_by_side(paired: pd.DataFrame) -> pd.DataFrame:
    """The paired differences with one column per data percentage (e.g. 100% | 50%),
    each cell ``delta [CI low, CI high]``, rows by variant (fusion name when it is in the
    run name's place, so ``trainable_100`` and ``trainable_50`` share a row)."""
    if paired is None or not len(paired):
        return pd.DataFrame()
    frame = paired.copy()
    frame["row"] = [_variant_key(v, k) for v, k in zip(frame["variant"], frame["kind"])]
    frame["cell"] = [f"{fmt(d, sign='+')} [{fmt(lo, sign='+')}, {fmt(hi, sign='+')}]"
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


# --------------------------------------------------------------------------- calibration, weights, provenance


def calibration_table(runs: list[Run]) -> pd.DataFrame:
    """The calibration table's metrics (Brier, ECE) per run: mean over folds and on the pooled
    predictions."""
    shown = metrics_in("calibration")
    rows = []
    for run in runs:
        pooled = run.summary.get("pooled") or {}
        rows.append({"name": run.name, "fusion": run.fusion, "data %": run.data_percentage,
                     **{f"{m.label_in('calibration')} (fold mean)": _stat(run.summary, m.name)
                        for m in shown},
                     **{f"{m.label_in('calibration')} (pooled)": pooled.get(m.name, np.nan)
                        for m in shown}})
    return pd.DataFrame(rows)


def clinical_share_table(runs: list[Run]) -> pd.DataFrame:
    """The learned-weight table's metrics per run: each share as ``mean ± SD (I / P / R)``
    over folds (sensitivity and influence of the deployed head, of the same head converged at
    the same penalty, the start's sensitivity), the others (training-objective gap of the
    deployed head to that optimum, how far it moved from its start) as their mean."""
    shown = metrics_in("shares")
    rows = []
    for run in runs:
        s = run.summary
        row = {"name": run.name, "fusion": run.fusion, "data %": run.data_percentage}
        for m in shown:
            label, key = m.label_in("shares"), m.name
            if not m.per_class:
                row[label] = _stat(s, key)
            elif not isinstance(s.get(key), dict):
                row[label] = "–"
            else:
                row[label] = (f"{fmt(_stat(s, key), 2)} ± {fmt(_stat(s, key, 'sd'), 2)}"
                              f" ({' / '.join(fmt(_stat(s, f'{key}_{c}'), 2) for c in LABELS)})")
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
                     "seed": ", ".join(str(s) for s in p.get("seeds") or run.seeds),
                     "cohort seed": run.setting("data", "cohort_seed"),
                     "git commit": (p.get("git_commit") or "?")[:12],
                     "seconds": p.get("seconds"),
                     "finished": p.get("finished"),
                     "python": p.get("python"),
                     "versions": ", ".join(f"{k} {v}" for k, v in versions.items())})
    return pd.DataFrame(rows)
