"""The report's verdict table: each variant against ``fixed`` over the seeds of its runs, and
the seed's three questions answered in words.

Two intervals for variant − fixed, both over every seed of the runs (docs/protocol.md and
``bench/bench_coverage.py`` for their coverage):

* the **seed-averaged patient bootstrap** (:func:`fusionlib.metrics.seed_averaged_bootstrap`):
  patients resampled, every seed's difference recomputed on the draw and averaged; it misses
  training variation that shifts a seed's models as a whole;
* the **corrected resampled t** (:func:`fusionlib.metrics.corrected_resampled_t`) over the
  per-(seed, fold) differences: it contains that variation and is conservative.

The verdict reads the corrected t (the one whose simulated coverage did not fall below 95 %);
the smallest detectable difference is its half-width.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import (case_log_loss, corrected_resampled_t, interval_verdict, qwk,
                       seed_averaged_bootstrap)
from ..results import FIXED, PROBA_COLUMNS, Run
from .tables import _choose_fixed, fmt

VERDICT_COLUMNS = ["data %", "variant", "vs", "seeds", "ΔQWK", "ΔQWK per seed",
                   "ΔQWK corrected t", "ΔQWK patient bootstrap", "smallest detectable ΔQWK",
                   "QWK verdict", "Δlog-loss", "Δlog-loss corrected t", "log-loss verdict",
                   "RF influence share"]


def _interval(low, high) -> str:
    return f"[{fmt(low, 3, '+')}, {fmt(high, 3, '+')}]"


def verdict_row(run: Run, fixed: Run, n_boot: int = 2000, random_state: int = 0) -> dict | None:
    """``run`` against ``fixed`` over their common seeds; None when they share no case."""
    a, b = run.predictions, fixed.predictions
    b = b[["seed", "repeat", "case_id", "pred", *PROBA_COLUMNS]]
    joined = a.merge(b, on=["seed", "repeat", "case_id"], suffixes=("", "_b"))
    if not len(joined):
        return None
    seeds, qwk_folds, loss_folds = [], [], []
    for _, rows in joined.groupby("seed", sort=True):
        y = rows["label"].to_numpy(dtype=int)
        loss_a = case_log_loss(y, rows[PROBA_COLUMNS].to_numpy(dtype=float))
        loss_b = case_log_loss(y, rows[[f"{c}_b" for c in PROBA_COLUMNS]].to_numpy(dtype=float))
        seeds.append({"y": y, "pred_a": rows["pred"].to_numpy(), "pred_b": rows["pred_b"].to_numpy(),
                      "loss_a": loss_a, "loss_b": loss_b, "groups": rows["patient"].to_numpy()})
        for _, fold in rows.assign(_d=loss_a - loss_b).groupby(["repeat", "fold"]):
            f_y = fold["label"].to_numpy(dtype=int)
            qwk_folds.append(qwk(f_y, fold["pred"]) - qwk(f_y, fold["pred_b"]))
            loss_folds.append(float(fold["_d"].mean()))
    boot = seed_averaged_bootstrap(seeds, n_boot=n_boot, random_state=random_state)
    folds = int(run.setting("protocol", "folds", 5) or 5)
    ratio = 1 / (folds - 1)
    enough = len(qwk_folds) >= 2
    t_qwk = corrected_resampled_t(qwk_folds, ratio) if enough else None
    t_loss = corrected_resampled_t(loss_folds, ratio) if enough else None
    q, loss = boot["qwk"], boot["log_loss"]
    summary = run.summary.get("influence_rf_share") or {}
    per_class = [((run.summary.get(f"influence_rf_share_{c}") or {}).get("mean")) for c in "IPR"]
    return {
        "data %": run.data_percentage, "variant": run.name, "vs": fixed.name,
        "seeds": len(seeds), "ΔQWK": q["delta"],
        "ΔQWK per seed": ", ".join(fmt(p["qwk"], 3, "+") for p in boot["per_seed"]),
        "ΔQWK corrected t": _interval(t_qwk["ci_low"], t_qwk["ci_high"]) if t_qwk else "–",
        "ΔQWK patient bootstrap": _interval(q["ci_low"], q["ci_high"]),
        "smallest detectable ΔQWK": ((t_qwk["ci_high"] - t_qwk["ci_low"]) / 2 if t_qwk else np.nan),
        "QWK verdict": interval_verdict(t_qwk["ci_low"], t_qwk["ci_high"]) if t_qwk else "?",
        "Δlog-loss": loss["delta"],
        "Δlog-loss corrected t": _interval(t_loss["ci_low"], t_loss["ci_high"]) if t_loss else "–",
        "log-loss verdict": (interval_verdict(t_loss["ci_low"], t_loss["ci_high"], lower_is_better=True)
                             if t_loss else "?"),
        "RF influence share": (f"{fmt(summary.get('mean'), 2)} (I/P/R "
                               + " / ".join(fmt(v, 2) for v in per_class) + ")"
                               if summary.get("mean") is not None else "–"),
    }


def verdict_table(runs: list[Run], n_boot: int = 2000, random_state: int = 0) -> pd.DataFrame:
    """One row per non-fixed run with predictions, against the ``fixed`` run of its data
    percentage (seeds, folds and data alike when there is one), largest percentage first."""
    rows = []
    by_pct: dict[float, list[Run]] = {}
    for run in runs:
        if run.predictions is not None:
            by_pct.setdefault(run.data_percentage, []).append(run)
    for pct in sorted(by_pct, reverse=True):
        fixed_runs = [r for r in by_pct[pct] if r.fusion == FIXED]
        for run in by_pct[pct]:
            if run.fusion == FIXED or not fixed_runs or run.decision != fixed_runs[0].decision:
                continue
            row = verdict_row(run, _choose_fixed(fixed_runs, run), n_boot, random_state)
            if row is not None:
                rows.append(row)
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def verdict_sentences(table: pd.DataFrame) -> list[str]:
    """The three questions answered from the table's ``trainable`` rows (plain text)."""
    out = []
    trainable = table[table["variant"].str.fullmatch(r"trainable_\d+")] if len(table) else table
    for _, row in trainable.iterrows():
        word = {"better": "Yes", "worse": "No, it is worse",
                "no detectable difference": "Not detectably"}.get(row["QWK verdict"], "Unclear")
        out.append(f"Does trainable fusion beat fixed 70/30 at {row['data %']:g} % of the "
                   f"patients? {word}: ΔQWK {fmt(row['ΔQWK'], 3, '+')} over {row['seeds']} "
                   f"seed(s) ({row['ΔQWK per seed']}), corrected t {row['ΔQWK corrected t']}; "
                   f"differences smaller than {fmt(row['smallest detectable ΔQWK'], 3)} cannot be "
                   f"told from zero here. Its probabilities: Δlog-loss {fmt(row['Δlog-loss'], 3, '+')} "
                   f"{row['Δlog-loss corrected t']}, {row['log-loss verdict']}.")
    full = trainable[trainable["data %"] == trainable["data %"].max()] if len(trainable) else trainable
    for _, row in full.iterrows():
        out.append(f"What weighting does it learn? At {row['data %']:g} %, the RF's share of the "
                   f"fused output's variation across test cases (influence) is "
                   f"{row['RF influence share']}; the fixed mix weighs the RF 0.70.")
    return out
