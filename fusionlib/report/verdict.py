"""The report's verdict table: each variant against ``fixed`` over the seeds of its runs, and
the questions answered in words for every row, keyed by the run's fusion variant and data
percentage (never its name).

The verdict reads one 95 % interval for variant − fixed over every seed of the runs, the
**patients + seeds t** (:func:`fusionlib.metrics.patients_and_seeds_interval`): the
seed-averaged patient bootstrap's variance plus the seeds' own spread, as measured. From the
same standard error and degrees of freedom (:mod:`.conclusions`): the detectable difference
at 80 % power, and the four-way verdict -- better, worse, equivalent within the margin (two
one-sided tests) or inconclusive. Beside it the decision agreement, and for
contrast: the seed-averaged patient bootstrap alone (misses training effects that move a
seed's models as a whole) and the corrected resampled t over every (seed, fold) (covers them,
conservatively). Their simulated coverage: bench/bench_coverage.py, docs/protocol.md."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import corrected_resampled_t, patients_and_seeds_interval, seed_averaged_bootstrap
from ..data import LABELS
from ..fusion.options import CLINICAL, FIXED_CLINICAL_WEIGHT
from ..results import FIXED, PROBA_COLUMNS, Metric, Run, headline_metrics
from .conclusions import (BETTER, DEFAULT_SETTINGS, EQUIVALENT, INCONCLUSIVE, WORSE,
                          ConclusionSettings, decision_agreement, detectable_difference,
                          equivalence_interval, four_way_verdict, verdict_words)
from .planner import VarianceComponents, plan_table
from .tables import choose_fixed, fmt

def verdict_columns(metrics: list[Metric] | None = None) -> list[str]:
    """The verdict table's columns: per headline metric (default
    :func:`fusionlib.results.headline_metrics`) its difference, per seed, interval, detectable
    difference and verdict; after the first one's the decision agreement and its contrast
    intervals; then the influence shares."""
    metrics = headline_metrics() if metrics is None else metrics
    columns = ["data %", "variant", "run", "vs", "seeds"]
    for i, m in enumerate(metrics):
        d = f"Δ{m.label}"
        columns += [d, f"{d} per seed", f"{d} interval", f"detectable {d} (80 % power)",
                    f"{m.label} verdict"]
        if i == 0:
            columns += ["decision agreement", f"{d} patient bootstrap", f"{d} corrected t",
                        f"seeds' share of {d} variance"]
    return columns + ["clinical influence share", "fixed's clinical influence share"]


VERDICT_COLUMNS = verdict_columns()
"""The verdict table's columns with the built-in metrics (QWK, log-loss)."""


def _metrics_of(table: pd.DataFrame) -> list[Metric]:
    """The headline metrics a verdict table was built with."""
    return table.attrs.get("metrics") or headline_metrics()


INFLUENCE_COLUMNS = ("influence_clinical_share",
                     *[f"influence_clinical_share_{c}" for c in LABELS])
"""The fold columns of the clinical influence share: overall, then per class (I, P, R)."""


def _interval(low, high) -> str:
    return f"[{fmt(low, 3, '+')}, {fmt(high, 3, '+')}]"


def seed_share(combined: dict) -> float:
    """The seeds' spread as a share of the variance of a
    :func:`fusionlib.metrics.patients_and_seeds_interval` (0 = all patients, 1 = all seeds)."""
    se = combined["se"]
    return float(combined["se_seeds"] ** 2 / se ** 2) if np.isfinite(se) and se > 0 else 0.0


def compare_over_seeds(joined: pd.DataFrame, pred_a: str, pred_b: str, proba_a: list[str],
                       proba_b: list[str], folds: int, n_boot: int = 2000,
                       random_state: int = 0,
                       settings: ConclusionSettings = DEFAULT_SETTINGS,
                       metrics: list[Metric] | None = None) -> dict:
    """Variant a minus baseline b on the same cases of every seed: ``joined`` holds one row per
    (seed, repeat, case) with ``label``, ``patient``, ``fold``, both predictions and both sets of
    class probabilities. For each headline metric (``metrics``, default
    :func:`fusionlib.results.headline_metrics`: QWK and log-loss), keyed by its name: the
    seed-averaged difference, each seed's, three 95 % intervals -- the verdict's (patients +
    seeds t, :func:`fusionlib.metrics.patients_and_seeds_interval`), the seed-averaged patient
    bootstrap and the corrected resampled t over every (seed, repeat, fold) -- the detectable
    difference at the settings' power, the four-way verdict with the settings' margin, its
    direction honoured, and the variance components the planner reads
    (:class:`.planner.VarianceComponents`); and the decision agreement of a and b."""
    metrics = headline_metrics() if metrics is None else list(metrics)
    seeds, fold_deltas = [], {m.name: [] for m in metrics}
    for _, rows in joined.groupby("seed", sort=True):
        y = rows["label"].to_numpy(dtype=int)
        cases, diffs = {}, {}
        for m in metrics:
            if m.per_case is not None:
                cases[m.name] = (m.per_case(y, rows[proba_a].to_numpy(dtype=float)),
                                 m.per_case(y, rows[proba_b].to_numpy(dtype=float)))
                diffs[f"_d_{m.name}"] = cases[m.name][0] - cases[m.name][1]
        seeds.append({"y": y, "pred_a": rows[pred_a].to_numpy(), "pred_b": rows[pred_b].to_numpy(),
                      "cases": cases, "groups": rows["patient"].to_numpy()})
        for _, fold in rows.assign(**diffs).groupby(["repeat", "fold"]):
            f_y = fold["label"].to_numpy(dtype=int)
            for m in metrics:
                fold_deltas[m.name].append(
                    float(fold[f"_d_{m.name}"].mean()) if m.per_case is not None else
                    m.paired.score(f_y, fold[pred_a]) - m.paired.score(f_y, fold[pred_b]))
    paired = [m.paired for m in metrics]
    boot = seed_averaged_bootstrap(seeds, n_boot=n_boot, random_state=random_state,
                                   metrics=paired)
    # Each seed's own patient bootstrap: with the seed-averaged one it separates the training
    # noise that differs from visit to visit from the patients' part (the planner needs both).
    single = [seed_averaged_bootstrap([s], n_boot=n_boot, random_state=random_state,
                                      metrics=paired)
              for s in seeds] if len(seeds) > 1 else [boot]
    n_per_seed = float(np.mean([len(np.unique(s["groups"])) for s in seeds]))
    out = {"seeds": len(seeds),
           "agreement": decision_agreement(joined, pred_a, pred_b)}
    for m in metrics:
        name, lower_is_better = m.name, not m.higher_is_better
        b = boot[name]
        t = (corrected_resampled_t(fold_deltas[name], 1 / (folds - 1))
             if len(fold_deltas[name]) >= 2 and folds > 1 else None)
        # The seeds' spread as measured, without taking per-visit training noise out of it
        # (seed_averaged_bootstrap's "combined" does): a little wider, and on simulated cohorts
        # nearer 95 % in more settings, above all with 5 seeds (bench/bench_coverage.py).
        per_seed = [p[name] for p in boot["per_seed"]]
        c = patients_and_seeds_interval(b["delta"], b["combined"]["se_patients"], per_seed,
                                        boot["n_patients"], level=settings.level)
        low, high = c["ci_low"], c["ci_high"]
        se_single = [sb[name]["combined"]["se_patients"] for sb in single]
        margin = settings.margin(name)
        detectable = detectable_difference(c["se"], c["df"], settings.power, settings.level)
        verdict = four_way_verdict(b["delta"], c["se"], c["df"], margin, lower_is_better,
                                   settings.level)
        out[name] = {"delta": b["delta"], "per_seed": per_seed,
                     "interval": (low, high), "bootstrap": (b["ci_low"], b["ci_high"]),
                     "corrected_t": (t["ci_low"], t["ci_high"]) if t else (np.nan, np.nan),
                     "se": c["se"], "df": c["df"],
                     "half_width": (high - low) / 2,
                     "equivalence_interval": equivalence_interval(b["delta"], c["se"], c["df"],
                                                                  settings.level),
                     "detectable": detectable, "margin": margin,
                     # How much of the uncertainty is retraining rather than patients.
                     "seed_share": seed_share(c),
                     "verdict": verdict,
                     "verdict_words": verdict_words(verdict, margin, detectable),
                     "components": VarianceComponents.measure(
                         b["delta"], b["combined"]["se_patients"], se_single, per_seed,
                         n_per_seed),
                     "raw_parts": VarianceComponents.raw_parts(
                         b["combined"]["se_patients"], se_single, per_seed)}
    return out


def fixed_clinical_weight(run: Run) -> float | None:
    """The clinical table's weight in a ``fixed`` run's mix (its ``fusion.options.weights``,
    else the default 0.70); None without a clinical branch."""
    modalities = run.setting("data", "modalities") or [CLINICAL, "thermal_map"]
    if CLINICAL not in modalities:
        return None
    weights = (run.setting("fusion", "options") or {}).get("weights")
    if weights is None:
        return FIXED_CLINICAL_WEIGHT if len(modalities) > 1 else 1.0
    return float(weights) if np.isscalar(weights) else float(weights[modalities.index(CLINICAL)])


def influence_over_seeds(run: Run, seeds=None) -> dict | None:
    """The clinical branch's influence share of a run's deployed heads: per seed the mean over
    its folds, then mean and SD over ``seeds`` (default: all of the run's), overall and per
    class (I, P, R); None when the run logged none."""
    frame = run.folds
    if ("influence_clinical_share" not in frame
            or not frame["influence_clinical_share"].notna().any()):
        return None
    if "seed" not in frame:
        frame = frame.assign(seed=run.seeds[0])
    if seeds is not None:
        frame = frame[frame["seed"].isin(list(seeds))]
    cols = list(INFLUENCE_COLUMNS)
    per_seed = frame.groupby("seed")[[c for c in cols if c in frame]].mean()
    if not len(per_seed):
        return None
    sd = per_seed.std(ddof=1) if len(per_seed) > 1 else per_seed.iloc[0] * 0.0
    return {"mean": float(per_seed["influence_clinical_share"].mean()),
            "sd": float(sd["influence_clinical_share"]),
            "per_class": [float(per_seed[c].mean()) if c in per_seed else float("nan")
                          for c in cols[1:]],
            "seeds": int(len(per_seed))}


def share_text(share: dict | None) -> str:
    """An :func:`influence_over_seeds` result as "mean ± SD (I/P/R ...)" ("–" for None)."""
    if share is None:
        return "–"
    return (f"{fmt(share['mean'], 2)} ± {fmt(share['sd'], 2)} (I/P/R "
            + " / ".join(fmt(v, 2) for v in share["per_class"]) + ")")


def verdict_row(run: Run, fixed: Run, n_boot: int = 2000, random_state: int = 0,
                settings: ConclusionSettings = DEFAULT_SETTINGS,
                metrics: list[Metric] | None = None) -> dict | None:
    """``run`` against ``fixed`` over their common seeds, each decided by its own run's rule;
    None when they share no case. The private ``_compare`` entry holds
    :func:`compare_over_seeds`' whole result (the planner reads its variance components)."""
    b = fixed.predictions[["seed", "repeat", "case_id", "pred", *PROBA_COLUMNS]]
    joined = run.predictions.merge(b, on=["seed", "repeat", "case_id"], suffixes=("", "_b"))
    if not len(joined):
        return None
    folds = int(run.setting("protocol", "folds", 5) or 5)
    c = compare_over_seeds(joined, "pred", "pred_b", PROBA_COLUMNS,
                           [f"{col}_b" for col in PROBA_COLUMNS], folds, n_boot, random_state,
                           settings, metrics)
    agree = c["agreement"]
    common = sorted(joined["seed"].unique())
    row = {"data %": run.data_percentage, "variant": run.fusion, "run": run.name,
           "vs": fixed.name, "seeds": c["seeds"]}
    for i, m in enumerate(metrics or headline_metrics()):
        q, d = c[m.name], f"Δ{m.label}"
        row.update({d: q["delta"], f"{d} per seed": ", ".join(fmt(v, 3, "+") for v in q["per_seed"]),
                    f"{d} interval": _interval(*q["interval"]),
                    f"detectable {d} (80 % power)": q["detectable"],
                    f"{m.label} verdict": q["verdict_words"]})
        if i == 0:
            row.update({"decision agreement": agree["agreement"],
                        f"{d} patient bootstrap": _interval(*q["bootstrap"]),
                        f"{d} corrected t": _interval(*q["corrected_t"]),
                        f"seeds' share of {d} variance": q["seed_share"]})
    return {
        **row,
        "clinical influence share": share_text(influence_over_seeds(run, common)),
        "fixed's clinical influence share": share_text(influence_over_seeds(fixed, common)),
        "_compare": c, "_fixed_weight": fixed_clinical_weight(fixed),
        "_influence": (influence_over_seeds(run, common), influence_over_seeds(fixed, common)),
        "_clinical": run.clinical,
    }


def verdict_table(runs: list[Run], n_boot: int = 2000, random_state: int = 0,
                  settings: ConclusionSettings = DEFAULT_SETTINGS,
                  metrics: list[Metric] | None = None) -> pd.DataFrame:
    """One row per non-fixed run with predictions, against the ``fixed`` run of its data
    percentage (seeds, folds and data alike when there is one), largest percentage first,
    the trainable family first within it. Rows are keyed by what a run is -- its fusion
    variant and data percentage -- never by its name. ``table.attrs["compare"]`` holds each
    row's :func:`compare_over_seeds` result, ``attrs["fixed_weight"]`` the fixed mix's
    clinical weight and ``attrs["clinical"]`` the variant's clinical model
    (:class:`~fusionlib.results.ClinicalNames`), in row order. The metrics compared are
    ``metrics`` (default: the headline metrics of :data:`fusionlib.results.METRICS`;
    ``attrs["metrics"]``)."""
    metrics = headline_metrics() if metrics is None else list(metrics)
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
            row = verdict_row(run, choose_fixed(fixed_runs, run), n_boot, random_state, settings,
                              metrics)
            if row is not None:
                rows.append(row)
    columns = verdict_columns(metrics)
    table = pd.DataFrame([{k: r[k] for k in columns} for r in rows], columns=columns)
    table.attrs["compare"] = [r["_compare"] for r in rows]
    table.attrs["fixed_weight"] = [r["_fixed_weight"] for r in rows]
    table.attrs["influence"] = [r["_influence"] for r in rows]
    table.attrs["clinical"] = [r["_clinical"] for r in rows]
    table.attrs["settings"] = settings
    table.attrs["metrics"] = metrics
    return table


_ANSWER = {BETTER: "Yes", WORSE: "No, it is worse", EQUIVALENT: "No: equivalent",
           INCONCLUSIVE: "Not shown either way"}


def _variant_phrase(variant: str) -> str:
    return "trainable fusion" if variant == "trainable" else f"the {variant} fusion"


def _mix_phrase(weight) -> str:
    return (f"the fixed {round(100 * weight):d}/{round(100 * (1 - weight)):d} mix"
            if weight is not None else "the fixed mix")


def beat_sentences(table: pd.DataFrame) -> list[str]:
    """For every row: does the variant beat the fixed mix, with the deciding interval, the
    verdict (and what this study could detect), the log-loss verdict and how often the two
    decide alike. Short enough that all of them fit the report's first screen."""
    out = []
    compare = table.attrs.get("compare") or [None] * len(table)
    weights = table.attrs.get("fixed_weight") or [None] * len(table)
    lead, *others = _metrics_of(table)
    d = f"Δ{lead.label}"
    for (_, row), c, w in zip(table.iterrows(), compare, weights):
        verdict = c[lead.name]["verdict"] if c else "?"
        text = (f"Does {_variant_phrase(row['variant'])} (run {row['run']}) beat "
                f"{_mix_phrase(w)} (run {row['vs']}) at {row['data %']:g} % of the patients? "
                f"{_ANSWER.get(verdict, 'Unclear')}: {d} {fmt(row[d], 3, '+')} "
                f"{row[f'{d} interval']}, {row[f'{lead.label} verdict']}")
        if verdict in (BETTER, WORSE, EQUIVALENT):
            text += f" (this study detects {fmt(row[f'detectable {d} (80 % power)'], 3)})"
        for m in others:
            # A proper score reads the probabilities; a score of decisions is named as itself.
            subject = "Probabilities" if m.per_case is not None else m.label[:1].upper() + m.label[1:]
            dm = f"Δ{m.label}"
            text += (f". {subject} {c[m.name]['verdict'] if c else '?'}: {dm} "
                     f"{fmt(row[dm], 3, '+')} {row[f'{dm} interval']}")
        text += "."
        if np.isfinite(row["decision agreement"]):
            text += f" The two decide alike on {100 * row['decision agreement']:.0f} % of cases."
        out.append(text)
    return out


def weighting_sentences(table: pd.DataFrame) -> list[str]:
    """For every row at the largest data percentage with logged shares: what weighting the
    variant learns -- its clinical influence share set against the fixed mix's on the same
    cases (not against the fixed mix's nominal weight). A clinical model other than the
    default is named: "the clinical (gradient boosting) branch's share"."""
    out = []
    if not len(table):
        return out
    weights = table.attrs.get("fixed_weight") or [None] * len(table)
    models = table.attrs.get("clinical") or [None] * len(table)
    top = table["data %"].max()
    for (_, row), w, model in zip(table.iterrows(), weights, models):
        if row["data %"] != top or row["clinical influence share"] == "–":
            continue
        setting = f" (its setting: clinical weight {w:.2f})" if w is not None else ""
        fixed_share = row["fixed's clinical influence share"]
        out.append(f"What weighting does {_variant_phrase(row['variant'])} (run {row['run']}) "
                   f"learn? At {row['data %']:g} %, the clinical{model.named if model else ''} "
                   f"branch's share of the fused "
                   f"output's variation across test cases (influence, mean ± SD over seeds) is "
                   f"{row['clinical influence share']}, against {fixed_share} for the fixed mix "
                   f"on the same cases{setting}.")
    return out


def verdict_sentences(table: pd.DataFrame) -> list[str]:
    """The report's answers, as its first screen and ``fusionlib report`` show them: for every
    row whether the variant beats the fixed mix (:func:`beat_sentences`), then what weighting
    the question's own variant learns -- the first row at the largest percentage, the
    trainable family first (:func:`weighting_sentences` has every variant's). Keyed by each
    row's fusion variant and data percentage, never by a run's name."""
    if not len(table):
        return []
    return beat_sentences(table) + weighting_sentences(table)[:1]


def verdict_display(table: pd.DataFrame) -> pd.DataFrame:
    """The verdict table as the report shows it: figures rounded to what another machine
    reproduces (docs/results.md: ±0.01 in a run's mean, ±0.035 in one seed's ΔQWK)."""
    pct = table["data %"].map(lambda v: f"{v:g}%")
    metrics = _metrics_of(table)
    signed = {f"Δ{m.label}": table[f"Δ{m.label}"].map(lambda v: fmt(v, 3, "+")) for m in metrics}
    plain = {f"detectable Δ{m.label} (80 % power)": table[f"detectable Δ{m.label} (80 % power)"].map(
        lambda v: fmt(v, 3)) for m in metrics}
    share = f"seeds' share of Δ{metrics[0].label} variance"
    return table.assign(**{"data %": pct, **signed, **plain,
                            "decision agreement": table["decision agreement"].map(
                                lambda v: f"{100 * v:.0f} %" if np.isfinite(v) else "–"),
                            share: table[share].map(lambda v: fmt(v, 2))})


def _with_interval(delta, interval: str) -> str:
    return f"{fmt(delta, 3, '+')} {interval}"


def verdict_compact(table: pd.DataFrame) -> pd.DataFrame:
    """The verdict table as the report's first screen shows it: one row per comparison, the
    deciding interval only, the verdicts as one word, the clinical influence shares of the
    variant and of the fixed mix on the same cases side by side."""
    compare = table.attrs.get("compare") or [None] * len(table)
    influence = table.attrs.get("influence") or [(None, None)] * len(table)
    metrics = _metrics_of(table)
    rows = []
    for (_, row), c, (mine, fixed) in zip(table.iterrows(), compare, influence):
        out = {"data %": f"{row['data %']:g}%", "variant": row["variant"]}
        for i, m in enumerate(metrics):
            d = f"Δ{m.label}"
            out[f"{d} [95 % interval]"] = _with_interval(row[d], row[f"{d} interval"])
            out[f"{m.label} verdict"] = c[m.name]["verdict"] if c else "–"
            if i == 0:
                out[f"detectable {d} (80 % power)"] = fmt(row[f"detectable {d} (80 % power)"], 3)
                out["decided alike"] = (f"{100 * row['decision agreement']:.0f} %"
                                        if np.isfinite(row["decision agreement"]) else "–")
        out["clinical influence: variant / fixed"] = (
            f"{fmt(mine['mean'], 2)} / {fmt(fixed['mean'], 2)}"
            if mine is not None and fixed is not None else "–")
        rows.append(out)
    return pd.DataFrame(rows)


def verdict_details(table: pd.DataFrame) -> dict[str, tuple[str, pd.DataFrame]]:
    """What the compact verdict table leaves out, as tables keyed by an id: the verdicts in
    words with every interval and each seed's difference, per metric; the decision agreement
    and where the disagreeing cases go; the influence shares per class."""
    shown = verdict_display(table)
    key = ["data %", "variant"]
    compare = table.attrs.get("compare") or [None] * len(table)
    agreement = pd.DataFrame([{
        "decided alike": row["decision agreement"],
        "disagreeing cases per seed": fmt(c["agreement"]["disagree"], 0) if c else "–",
        "variant right there": fmt(c["agreement"]["variant_right"], 2) if c else "–",
        "fixed right there": fmt(c["agreement"]["fixed_right"], 2) if c else "–"}
        for (_, row), c in zip(shown.iterrows(), compare)])
    lead, *others = _metrics_of(table)
    d = f"Δ{lead.label}"
    details = {f"{lead.name.replace('_', '-')}-details": (
        f"{d}: the verdict in words, each seed's difference and the intervals for contrast",
        shown[key + ["run", "seeds", d, f"{d} per seed", f"{d} interval", f"{lead.label} verdict",
                     f"{d} patient bootstrap", f"{d} corrected t",
                     f"seeds' share of {d} variance"]])}
    for m in others:
        dm = f"Δ{m.label}"
        details[f"{m.name.replace('_', '-')}-details"] = (
            f"{dm}: the verdict in words and each seed's difference",
            shown[key + [dm, f"{dm} per seed", f"{dm} interval", f"{m.label} verdict"]])
    return {
        **details,
        "agreement-details": ("Decision agreement: where the two decide differently",
                              pd.concat([shown[key].reset_index(drop=True), agreement], axis=1)),
        "influence-details": ("Clinical influence share, mean ± SD over seeds (I / P / R)",
                              shown[key + ["clinical influence share",
                                           "fixed's clinical influence share"]]),
    }


def plan_display(table: pd.DataFrame) -> pd.DataFrame:
    """The planner's table (:func:`.planner.plan_table`) as the report shows it."""
    plan = plan_table(table)
    if not len(plan):
        return plan
    for col in plan.columns:
        if plan[col].dtype.kind == "f":
            plan[col] = plan[col].map(lambda v: fmt(v, 3))
    plan["data %"] = plan["data %"] + "%"
    return plan
