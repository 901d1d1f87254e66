"""The report's verdict table: each variant against ``fixed`` over the seeds of its runs, and
the seed's three questions answered in words.

The verdict reads one 95 % interval for variant − fixed over every seed of the runs, the
**patients + seeds t** (:func:`fusionlib.metrics.patients_and_seeds_interval`): the
seed-averaged patient bootstrap's variance plus the seeds' own spread, as measured. Its
half-width is the smallest detectable difference. Beside it, for
contrast: the seed-averaged patient bootstrap alone (misses training effects that move a
seed's models as a whole) and the corrected resampled t over every (seed, fold) (covers them,
conservatively). Their simulated coverage: bench/bench_coverage.py, docs/protocol.md."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import (case_log_loss, corrected_resampled_t, interval_verdict,
                       patients_and_seeds_interval, qwk, seed_averaged_bootstrap)
from ..results import FIXED, PROBA_COLUMNS, Run
from .tables import _choose_fixed, fmt

VERDICT_COLUMNS = ["data %", "variant", "vs", "seeds", "ΔQWK", "ΔQWK per seed", "ΔQWK interval",
                   "ΔQWK patient bootstrap", "ΔQWK corrected t", "smallest detectable ΔQWK",
                   "QWK verdict", "seeds' share of ΔQWK variance", "Δlog-loss",
                   "Δlog-loss per seed", "Δlog-loss interval", "log-loss verdict",
                   "RF influence share"]


def _interval(low, high) -> str:
    return f"[{fmt(low, 3, '+')}, {fmt(high, 3, '+')}]"


def seed_share(combined: dict) -> float:
    """The seeds' spread as a share of the variance of a
    :func:`fusionlib.metrics.patients_and_seeds_interval` (0 = all patients, 1 = all seeds)."""
    se = combined["se"]
    return float(combined["se_seeds"] ** 2 / se ** 2) if np.isfinite(se) and se > 0 else 0.0


def compare_over_seeds(joined: pd.DataFrame, pred_a: str, pred_b: str, proba_a: list[str],
                       proba_b: list[str], folds: int, n_boot: int = 2000,
                       random_state: int = 0) -> dict:
    """Variant a minus baseline b on the same cases of every seed: ``joined`` holds one row per
    (seed, repeat, case) with ``label``, ``patient``, ``fold``, both predictions and both sets of
    class probabilities. For QWK and log-loss: the seed-averaged difference, each seed's, and
    three 95 % intervals -- the verdict's (patients + seeds t,
    :func:`fusionlib.metrics.patients_and_seeds_interval`), the seed-averaged patient bootstrap
    and the corrected resampled t over every (seed, repeat, fold) -- with the verdict."""
    seeds, fold_deltas = [], {"qwk": [], "log_loss": []}
    for _, rows in joined.groupby("seed", sort=True):
        y = rows["label"].to_numpy(dtype=int)
        loss_a = case_log_loss(y, rows[proba_a].to_numpy(dtype=float))
        loss_b = case_log_loss(y, rows[proba_b].to_numpy(dtype=float))
        seeds.append({"y": y, "pred_a": rows[pred_a].to_numpy(), "pred_b": rows[pred_b].to_numpy(),
                      "loss_a": loss_a, "loss_b": loss_b, "groups": rows["patient"].to_numpy()})
        for _, fold in rows.assign(_d=loss_a - loss_b).groupby(["repeat", "fold"]):
            f_y = fold["label"].to_numpy(dtype=int)
            fold_deltas["qwk"].append(qwk(f_y, fold[pred_a]) - qwk(f_y, fold[pred_b]))
            fold_deltas["log_loss"].append(float(fold["_d"].mean()))
    boot = seed_averaged_bootstrap(seeds, n_boot=n_boot, random_state=random_state)
    out = {"seeds": len(seeds)}
    for name, lower_is_better in (("qwk", False), ("log_loss", True)):
        b = boot[name]
        t = (corrected_resampled_t(fold_deltas[name], 1 / (folds - 1))
             if len(fold_deltas[name]) >= 2 and folds > 1 else None)
        # The seeds' spread as measured, without taking per-visit training noise out of it
        # (seed_averaged_bootstrap's "combined" does): a little wider, and on simulated cohorts
        # nearer 95 % in more settings, above all with 5 seeds (bench/bench_coverage.py).
        per_seed = [p[name] for p in boot["per_seed"]]
        c = patients_and_seeds_interval(b["delta"], b["combined"]["se_patients"], per_seed,
                                        boot["n_patients"])
        low, high = c["ci_low"], c["ci_high"]
        out[name] = {"delta": b["delta"], "per_seed": per_seed,
                     "interval": (low, high), "bootstrap": (b["ci_low"], b["ci_high"]),
                     "corrected_t": (t["ci_low"], t["ci_high"]) if t else (np.nan, np.nan),
                     "half_width": (high - low) / 2,
                     # How much of the uncertainty is retraining rather than patients.
                     "seed_share": seed_share(c),
                     "verdict": interval_verdict(low, high, lower_is_better=lower_is_better)}
    return out


def verdict_row(run: Run, fixed: Run, n_boot: int = 2000, random_state: int = 0) -> dict | None:
    """``run`` against ``fixed`` over their common seeds, each decided by its own run's rule;
    None when they share no case."""
    b = fixed.predictions[["seed", "repeat", "case_id", "pred", *PROBA_COLUMNS]]
    joined = run.predictions.merge(b, on=["seed", "repeat", "case_id"], suffixes=("", "_b"))
    if not len(joined):
        return None
    folds = int(run.setting("protocol", "folds", 5) or 5)
    c = compare_over_seeds(joined, "pred", "pred_b", PROBA_COLUMNS,
                           [f"{col}_b" for col in PROBA_COLUMNS], folds, n_boot, random_state)
    q, loss = c["qwk"], c["log_loss"]
    summary = run.summary.get("influence_rf_share") or {}
    per_class = [((run.summary.get(f"influence_rf_share_{k}") or {}).get("mean")) for k in "IPR"]
    return {
        "data %": run.data_percentage, "variant": run.name, "vs": fixed.name,
        "seeds": c["seeds"], "ΔQWK": q["delta"],
        "ΔQWK per seed": ", ".join(fmt(v, 3, "+") for v in q["per_seed"]),
        "ΔQWK interval": _interval(*q["interval"]),
        "ΔQWK patient bootstrap": _interval(*q["bootstrap"]),
        "ΔQWK corrected t": _interval(*q["corrected_t"]),
        "smallest detectable ΔQWK": q["half_width"], "QWK verdict": q["verdict"],
        "seeds' share of ΔQWK variance": q["seed_share"],
        "Δlog-loss": loss["delta"],
        "Δlog-loss per seed": ", ".join(fmt(v, 3, "+") for v in loss["per_seed"]),
        "Δlog-loss interval": _interval(*loss["interval"]), "log-loss verdict": loss["verdict"],
        "RF influence share": (f"{fmt(summary.get('mean'), 2)} (I/P/R "
                               + " / ".join(fmt(v, 2) for v in per_class) + ")"
                               if summary.get("mean") is not None else "–"),
    }


def verdict_table(runs: list[Run], n_boot: int = 2000, random_state: int = 0) -> pd.DataFrame:
    """One row per non-fixed run with predictions, against the ``fixed`` run of its data
    percentage (seeds, folds and data alike when there is one), largest percentage first,
    the trainable family first within it."""
    rows = []
    by_pct: dict[float, list[Run]] = {}
    for run in runs:
        if run.predictions is not None:
            by_pct.setdefault(run.data_percentage, []).append(run)
    for pct in sorted(by_pct, reverse=True):
        fixed_runs = [r for r in by_pct[pct] if r.fusion == FIXED]
        # The question first: the trainable family, then the other learned weightings.
        for run in sorted(by_pct[pct], key=lambda r: not r.fusion.startswith("trainable")):
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
                   f"seed(s) ({row['ΔQWK per seed']}), 95 % interval {row['ΔQWK interval']}; "
                   f"differences smaller than {fmt(row['smallest detectable ΔQWK'], 3)} cannot be "
                   f"told from zero here. Its probabilities: Δlog-loss {fmt(row['Δlog-loss'], 3, '+')} "
                   f"{row['Δlog-loss interval']}, {row['log-loss verdict']}.")
    full = trainable[trainable["data %"] == trainable["data %"].max()] if len(trainable) else trainable
    for _, row in full.iterrows():
        out.append(f"What weighting does it learn? At {row['data %']:g} %, the RF's share of the "
                   f"fused output's variation across test cases (influence) is "
                   f"{row['RF influence share']}; the fixed mix weighs the RF 0.70.")
    return out
