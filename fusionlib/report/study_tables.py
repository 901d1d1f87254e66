"""The tables of docs/results.md, built from one study's finished runs (``make results``,
:mod:`fusionlib.study`): every variant against its ``fixed`` run under every decision rule,
the runs' scores, the learned weighting, per-fold detail, the image branch's inputs and the
tabular models on the real table alone. Each takes the runs (``fusionlib.results.Run``) and
returns a DataFrame; :mod:`fusionlib.study` renders them as markdown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..baselines import baseline_sources
from ..branches import CLINICAL_MODELS, ClinicalBranch
from ..data import CLINICAL_FILENAME, LABELS, read_clinical_table
from ..decision import DECISIONS, DEFAULT_DECISION
from ..fusion.options import CLINICAL
from ..metrics import qwk
from ..results import classification_scores, headline_metrics
from ..splits import patient_folds

def _modalities(run) -> list[str]:
    return run.setting("data", "modalities") or [CLINICAL, "thermal_map"]

PROBA = [f"p_{label}" for label in LABELS]


def _pairs(runs: list) -> list[tuple]:
    """(percentage, variant run, fixed run) for every non-fixed run: the fixed run of the same
    data, seeds and folds at the same percentage."""
    from .tables import pairing_key

    out = []
    for run in runs:
        if run.fusion == "fixed":
            continue
        fixed = [f for f in runs if f.fusion == "fixed" and f.data_percentage == run.data_percentage
                 and pairing_key(f) == pairing_key(run)]
        if fixed:
            out.append((run.data_percentage, run, fixed[0]))
    return sorted(out, key=lambda t: -t[0])


def _joined(variant: pd.DataFrame, fixed: pd.DataFrame, rule: str, source: str = "") -> pd.DataFrame:
    """One row per (seed, repeat, case): ``source`` of ``variant`` (the fused output, or a
    baseline's column prefix) as ``a``, fixed's fused output as ``b``, both decided by ``rule``."""
    prefix = f"{source}_" if source else ""
    a = variant[["seed", "repeat", "fold", "case_id", "patient", "label", f"{prefix}pred_{rule}",
                 *[prefix + c for c in PROBA]]]
    a = a.rename(columns={f"{prefix}pred_{rule}": "pred_a",
                          **{prefix + c: f"a_{c}" for c in PROBA}})
    b = fixed[["seed", "repeat", "case_id", f"pred_{rule}", *PROBA]].rename(
        columns={f"pred_{rule}": "pred_b", **{c: f"b_{c}" for c in PROBA}})
    return a.merge(b, on=["seed", "repeat", "case_id"], how="inner")


def comparison_table(runs: list, n_boot: int = 2000, settings=None, metrics=None) -> pd.DataFrame:
    """Every variant (and every baseline of the fixed run) minus fixed at the same data
    percentage, under every decision rule: for each headline metric (``metrics``, default
    :func:`fusionlib.results.headline_metrics`: QWK and log-loss) the difference over seeds
    with the verdict's interval, the per-seed differences, the detectable difference at 80 %
    power and the four-way verdict; the first metric's seeds' share and the decision
    agreement. ``variant`` is what a row is (the run's fusion variant, or a baseline), ``run``
    the run's name; ``attrs["metrics"]`` the metrics."""
    from .conclusions import DEFAULT_SETTINGS
    from .verdict import compare_over_seeds

    settings = settings or DEFAULT_SETTINGS
    metrics = headline_metrics() if metrics is None else list(metrics)

    rows = []
    pairs = _pairs(runs)
    fixed_runs = list({id(f): f for _, _, f in pairs}.values())
    # (percentage, what the row is, its run's name, run, fixed, baseline source)
    items = [(pct, run.fusion, run.name, run, fixed, "") for pct, run, fixed in pairs]
    items += [(f.data_percentage, f"{b} (baseline)", f.name, f, f, b) for f in fixed_runs
              for b in baseline_sources(_modalities(f))
              if f"{b}_pred_{DEFAULT_DECISION}" in f.predictions]
    # At each percentage: the trainable family (the question), the other variants, baselines.
    items.sort(key=lambda t: (-t[0], bool(t[5]), not t[1].startswith("trainable")))
    for pct, variant, name, run, fixed, source in items:
        folds = int(run.setting("protocol", "folds", 5) or 5)
        for rule in DECISIONS:
            c = compare_over_seeds(_joined(run.predictions, fixed.predictions, rule, source),
                                   "pred_a", "pred_b", [f"a_{p}" for p in PROBA],
                                   [f"b_{p}" for p in PROBA], folds, n_boot=n_boot,
                                   settings=settings, metrics=metrics)
            row = {"data %": pct, "variant": variant, "run": name, "vs": fixed.name,
                   "decision": rule, "seeds": c["seeds"]}
            for i, m in enumerate(metrics):
                q, d = c[m.name], f"Δ{m.label}"
                row.update({d: q["delta"], f"{d} interval": q["interval"],
                            f"{d} per seed": q["per_seed"], f"detectable {d}": q["detectable"],
                            f"{m.label} verdict": q["verdict"]})
                if i == 0:
                    row.update({"seed share": q["seed_share"],
                                "agreement": c["agreement"]["agreement"]})
            rows.append({**row, "compare": c})
    table = pd.DataFrame(rows)
    table.attrs["metrics"] = metrics
    return table


def runs_overview(runs: list) -> pd.DataFrame:
    """Per run: QWK over seeds (mean ± SD), pooled QWK and log-loss, cases per seed."""
    from .tables import runs_table

    table = runs_table(runs)
    keep = ["name", "data %", "QWK over seeds", "pooled QWK", "log-loss", "cases"]
    table = table[[c for c in keep if c in table]].copy()
    table["data %"] = table["data %"].map(lambda v: f"{v:g}")
    return table


def headline_pair(runs: list, variant: str = "trainable") -> tuple | None:
    """(run, fixed run) of the study's headline question: the first run of fusion ``variant``
    at the largest data percentage that has a fixed run, by what the run is, not its name."""
    return next(((run, fixed) for _, run, fixed in _pairs(runs) if run.fusion == variant), None)


def fold_table(runs: list, variant: str = "trainable", rule: str = DEFAULT_DECISION) -> pd.DataFrame:
    """Per seed and fold: log-loss and QWK of the headline run of fusion ``variant``
    (:func:`headline_pair`) and its fixed run; per seed: pooled."""
    from ..metrics import case_log_loss

    pair = headline_pair(runs, variant)
    if pair is None:
        return pd.DataFrame()
    j = _joined(pair[0].predictions, pair[1].predictions, rule)
    y = j["label"].to_numpy(dtype=int)
    j = j.assign(loss_a=case_log_loss(y, j[[f"a_{p}" for p in PROBA]].to_numpy(dtype=float)),
                 loss_b=case_log_loss(y, j[[f"b_{p}" for p in PROBA]].to_numpy(dtype=float)))

    def row(seed, fold, rows):
        return {"seed": seed, "fold": fold, "log-loss variant": rows["loss_a"].mean(),
                "log-loss fixed": rows["loss_b"].mean(),
                "QWK variant": qwk(rows["label"], rows["pred_a"]),
                "QWK fixed": qwk(rows["label"], rows["pred_b"])}

    out = []
    for seed, rows in j.groupby("seed", sort=True):
        out += [row(int(seed), int(fold), f) for fold, f in rows.groupby("fold", sort=True)]
        out.append(row(int(seed), "pooled", rows))
    return pd.DataFrame(out)


def weights_table(runs: list) -> pd.DataFrame:
    """Learned weighting per run, mean over seeds and folds: sensitivity and influence
    clinical share (overall and per class) of the deployed head, the converged head and the
    start; beside them the influence share of the fixed mix on the same cases (its paired
    ``fixed`` run), mean ± SD over seeds. ``attrs["clinical"]`` maps each run's name to its
    clinical model (:class:`~fusionlib.results.ClinicalNames`)."""
    from .verdict import share_text, influence_over_seeds

    fixed_of = {id(run): fixed for _, run, fixed in _pairs(runs)}
    rows = []
    for run in runs:
        frame = run.folds
        if run.fusion == "fixed" or "clinical_share" not in frame:
            continue
        fixed = fixed_of.get(id(run))
        row = {"data %": f"{run.data_percentage:g}", "variant": run.fusion, "run": run.name,
               "influence (mean ± SD over seeds)": share_text(influence_over_seeds(run)),
               "fixed mix's influence, same cases": (
                   share_text(influence_over_seeds(fixed, run.seeds)) if fixed else "–")}
        for prefix, label in (("", "deployed"), ("converged_", "converged"), ("start_", "start")):
            for kind, short in (("clinical_share", "sens"), ("influence_clinical_share", "infl")):
                cols = [f"{prefix}{kind}", *[f"{prefix}{kind}_{c}" for c in LABELS]]
                if all(c in frame for c in cols):
                    row[f"{label} {short}"] = " / ".join(f"{frame[c].mean():.2f}" for c in cols)
        for col, label in (("train_objective_gap", "objective gap"),
                           ("moved_from_start", "moved from start")):
            if col in frame:
                row[label] = frame[col].mean()
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["clinical"] = {run.name: run.clinical for run in runs}
    return table


def rule_qwk_table(runs: list) -> pd.DataFrame:
    """Pooled QWK of every run's fused output under every decision rule, mean over seeds (and
    the range over seeds): how much a score depends on the rule."""
    rows = []
    for run in runs:
        frame = run.predictions
        row = {"run": run.name}
        for rule in DECISIONS:
            values = [qwk(f["label"], f[f"pred_{rule}"]) for _, f in frame.groupby("seed")]
            row[rule] = f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"
        rows.append(row)
    return pd.DataFrame(rows)


def branch_gap_table(runs: list, variant: str = "trainable",
                     modality: str = "thermal_map") -> pd.DataFrame:
    """Image branch train/test consistency (mean over seeds and folds): top-class probability
    and QWK of the out-of-fold training rows, of the test rows by the mean of the inner CNNs
    and by single inner CNNs (the head's input); ``attrs["head_log_loss"]`` holds the
    trainable head's test log-loss with either input."""
    pair = headline_pair(runs, variant)
    run = pair[0] if pair else None
    f = run.folds if run is not None else pd.DataFrame()
    if f"{modality}_train_top_p" not in f:
        return pd.DataFrame()
    rows = []
    for label, suffix in (("training rows (out-of-fold, one CNN)", "train_{}"),
                          ("test rows, mean of the inner CNNs", "test_{}_mean_of_models"),
                          ("test rows, single inner CNNs (the head's input)", "test_{}_single_model")):
        rows.append({"image probabilities": label,
                     "mean top-class probability": f[f"{modality}_{suffix.format('top_p')}"].mean(),
                     "QWK": f[f"{modality}_{suffix.format('qwk')}"].mean()})
    table = pd.DataFrame(rows)
    table.attrs["head_log_loss"] = (float(f["log_loss_mean_of_models_input"].mean()),
                                    float(f["log_loss"].mean()))
    return table


def cross_validate_clinical(cohort, branch: ClinicalBranch | None = None, n_splits: int = 5,
                            random_state: int = 0) -> tuple[np.ndarray, dict]:
    """Clinical-only patient-grouped K-fold: pooled out-of-fold probabilities and their scores."""
    branch = branch or ClinicalBranch(random_state=random_state)
    oof = np.full((cohort.n_cases, 3), np.nan)
    for fold in patient_folds(cohort.y, cohort.groups, n_splits, random_state):
        oof[fold.test] = branch.fit_predict(cohort, fold.train, fold.test)
    return oof, classification_scores(cohort.y, oof)


def clinical_cv_scores(cohort, model: str, seed: int, folds: int = 5, n_jobs: int = 2) -> dict:
    """One seed of ``fusionlib metadata-cv``: ``model`` alone on the clinical table,
    patient-grouped K-fold, the scores of the pooled out-of-fold predictions (argmax); the forest
    with 300 trees (the documented figure), every other model with its registry defaults."""
    options = {"n_estimators": 300} if model == "random_forest" else {}
    branch = ClinicalBranch(model, options, random_state=seed, n_jobs=n_jobs)
    return cross_validate_clinical(cohort, branch, n_splits=folds, random_state=seed)[1]


def clinical_models_table(data_dir: Path, seeds=(0, 1, 2, 3, 4), folds: int = 5,
                          n_jobs: int = 2) -> pd.DataFrame:
    """Every registered tabular model on a clinical table alone (:func:`clinical_cv_scores`,
    what ``fusionlib metadata-cv`` prints), mean ± SD over ``seeds``."""
    cohort = read_clinical_table(Path(data_dir) / CLINICAL_FILENAME)
    rows = []
    for model in CLINICAL_MODELS:
        scores = [clinical_cv_scores(cohort, model, seed, folds, n_jobs) for seed in seeds]
        row = {"model": model}
        for key, label in (("qwk", "QWK"), ("accuracy", "accuracy"), ("macro_f1", "macro-F1"),
                           ("f1_I", "F1 of I")):
            values = np.array([sc[key] for sc in scores])
            row[label] = f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
        rows.append(row)
    return pd.DataFrame(rows)
