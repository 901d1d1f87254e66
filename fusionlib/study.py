"""The multi-seed comparison behind docs/results.md: every variant against ``fixed`` 70/30,
under every decision rule, with proper scores, over several seeds.

``python -m fusionlib.study`` (``make results``) runs the studies in :data:`STUDIES` for
each seed (in-process ``run_experiment`` calls sharing the branch cache; finished runs
under ``runs-study/`` are reused), then rewrites the generated sections of
``docs/results.md`` -- the text between ``<!-- generated:NAME -->`` and
``<!-- /generated:NAME -->`` -- and leaves the hand-written prose around them alone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .data import LABELS
from .decision import DECISIONS, DEFAULT_DECISION
from .metrics import case_log_loss, interval_verdict, qwk, seed_averaged_bootstrap

VARIANTS = ("trainable", "trainable_rf_biased", "mlp", "convex", "per_class_convex", "gated")
STUDIES = {
    "default": {"preset": "dfu_like", "runs": [("fixed", 100), *[(v, 100) for v in VARIANTS],
                                               ("fixed", 50), ("trainable", 50)],
                # The head fitted with balanced class weights: a prior change inside the weights,
                # beside the decision rules' prior change on the outputs (docs/protocol.md).
                "extra": {"trainable_classweight_100": ("trainable", 100,
                                                        {"head": {"class_weight": "balanced"}})}},
    "fixed_mix_wrong": {"preset": "fixed_mix_wrong",
                        "runs": [("fixed", 100), *[(v, 100) for v in VARIANTS]]},
    # The table knows I (and some P), the images R (and some P): per-class weights must differ.
    "complementary": {"preset": "complementary",
                      "runs": [("fixed", 100), *[(v, 100) for v in VARIANTS]]},
}
"""Study name -> synthetic preset and its (fusion, data percentage) runs."""

SEEDS = (0, 1, 2)
PROBA = [f"p_{label}" for label in LABELS]


def run_name(fusion: str, percentage: float) -> str:
    return f"{fusion}_{percentage:g}"


def study_plan(study: str) -> list[tuple[str, str, float, dict]]:
    """``(run name, fusion, data percentage, other parameters)`` of every run of a study."""
    spec = STUDIES[study]
    plan = [(run_name(f, p), f, p, {}) for f, p in spec["runs"]]
    return plan + [(name, f, p, dict(extra)) for name, (f, p, extra) in spec.get("extra", {}).items()]


def study_runs(study: str, seed: int, root: Path, cache_dir: Path, progress=print) -> None:
    """Run (or reuse) every run of one study for one seed; fixed first, so it trains the branches."""
    from .experiment import run_experiment
    from .params import validate
    from .runner import code_version

    spec = STUDIES[study]
    code = code_version()
    for name, fusion, pct, extra in study_plan(study):
        params = validate({"name": name, "fusion": {"variant": fusion},
                           "data": {"preset": spec["preset"]},
                           "protocol": {"data_percentage": pct, "seed": seed}, **extra})
        folder = root / study / f"seed{seed}" / params.name
        stamp = folder / "params.json"
        # A finished run is reused only with the same experiment code and parameters. The tables
        # read every rule's predictions (pred_<rule>), never the run's headline, so the run's
        # own `decision` does not make it stale.
        wanted = json.dumps({"code_version": code, **{k: v for k, v in params.to_dict().items()
                                                      if k != "decision"}}, sort_keys=True)
        if stamp.is_file() and stamp.read_text() == wanted and (folder / "predictions.csv").is_file():
            continue
        started = time.time()
        result = run_experiment(params, cache_dir=cache_dir, progress=False, log=lambda *_: None)
        result.save(folder)
        stamp.write_text(wanted)
        progress(f"{study} seed {seed} {params.name}: {time.time() - started:.0f} s")


def _load(root: Path, study: str, seed: int, name: str) -> pd.DataFrame:
    return pd.read_csv(root / study / f"seed{seed}" / name / "predictions.csv", dtype={"case_id": str})


def _pair(variant: pd.DataFrame, fixed: pd.DataFrame, rule: str, source: str = "") -> dict:
    """One seed's paired arrays of a source of ``variant`` (the fused output, or a baseline
    column prefix) against fixed's fused output, both decided by ``rule``."""
    proba_cols = PROBA if not source else [f"{source}_p_{label}" for label in LABELS]
    pred_col = f"pred_{rule}" if not source else f"{source}_pred_{rule}"
    a = variant[["repeat", "fold", "case_id", "patient", "label", pred_col, *proba_cols]].rename(
        columns={pred_col: "pred_a", **{c: f"a_{i}" for i, c in enumerate(proba_cols)}})
    b = fixed[["repeat", "case_id", f"pred_{rule}", *PROBA]].rename(
        columns={f"pred_{rule}": "pred_b", **{c: f"b_{i}" for i, c in enumerate(PROBA)}})
    joined = a.merge(b, on=["repeat", "case_id"], how="inner")
    y = joined["label"].to_numpy()
    return {"y": y, "pred_a": joined["pred_a"].to_numpy(), "pred_b": joined["pred_b"].to_numpy(),
            "loss_a": case_log_loss(y, joined[[f"a_{i}" for i in range(3)]].to_numpy()),
            "loss_b": case_log_loss(y, joined[[f"b_{i}" for i in range(3)]].to_numpy()),
            "groups": joined["patient"].to_numpy(), "fold": joined["fold"].to_numpy()}


def comparison_table(root: Path, study: str, seeds, n_boot: int = 2000) -> pd.DataFrame:
    """Every variant (and baseline) minus fixed at the same data percentage, per decision rule:
    ΔQWK and Δlog-loss averaged over seeds, with their patient-bootstrap intervals."""
    spec = STUDIES[study]
    rows = []
    for pct in sorted({p for _, p in spec["runs"]}, reverse=True):
        fixed = {s: _load(root, study, s, run_name("fixed", pct)) for s in seeds}
        others = [(name, name, "") for name, f, p, _ in study_plan(study) if p == pct and f != "fixed"]
        others += [(f"{b} (baseline)", run_name("fixed", pct), b)
                   for b in ("stacking", "metadata_only", "thermal_map_only")]
        for label, name, source in others:
            frames = {s: _load(root, study, s, name) for s in seeds}
            for rule in DECISIONS:
                pairs = [_pair(frames[s], fixed[s], rule, source) for s in seeds]
                boot = seed_averaged_bootstrap(pairs, n_boot=n_boot)
                q, ll = boot["qwk"], boot["log_loss"]
                rows.append({"data %": pct, "variant": label, "decision": rule,
                             "ΔQWK": q["delta"], "ΔQWK low": q["ci_low"], "ΔQWK high": q["ci_high"],
                             "ΔQWK per seed": [p["qwk"] for p in boot["per_seed"]],
                             "QWK verdict": interval_verdict(q["ci_low"], q["ci_high"]),
                             "Δlog-loss": ll["delta"], "Δlog-loss low": ll["ci_low"],
                             "Δlog-loss high": ll["ci_high"],
                             "Δlog-loss per seed": [p["log_loss"] for p in boot["per_seed"]],
                             "log-loss verdict": interval_verdict(ll["ci_low"], ll["ci_high"], True)})
    return pd.DataFrame(rows)


def fold_table(root: Path, study: str, seeds, variant: str = "trainable", pct: float = 100,
               rule: str = DEFAULT_DECISION) -> pd.DataFrame:
    """Per seed and fold: log-loss of ``variant`` and fixed; per seed: pooled QWK of both."""
    rows = []
    for s in seeds:
        pair = _pair(_load(root, study, s, run_name(variant, pct)),
                     _load(root, study, s, run_name("fixed", pct)), rule)
        for fold in np.unique(pair["fold"]):
            m = pair["fold"] == fold
            rows.append({"seed": s, "fold": int(fold), "log-loss variant": pair["loss_a"][m].mean(),
                         "log-loss fixed": pair["loss_b"][m].mean(),
                         "QWK variant": qwk(pair["y"][m], pair["pred_a"][m]),
                         "QWK fixed": qwk(pair["y"][m], pair["pred_b"][m])})
        rows.append({"seed": s, "fold": "pooled", "log-loss variant": pair["loss_a"].mean(),
                     "log-loss fixed": pair["loss_b"].mean(),
                     "QWK variant": qwk(pair["y"], pair["pred_a"]),
                     "QWK fixed": qwk(pair["y"], pair["pred_b"])})
    return pd.DataFrame(rows)


def weights_table(root: Path, study: str, seeds) -> pd.DataFrame:
    """Learned weighting per run, mean over seeds and folds: sensitivity and influence RF
    share (overall and per class) of the deployed head, the converged head and the start."""
    rows = []
    for name, fusion, _, _ in study_plan(study):
        if fusion == "fixed":
            continue
        folds = []
        for s in seeds:
            metrics = json.loads((root / study / f"seed{s}" / name / "metrics.json").read_text())
            folds += metrics["folds"]
        frame = pd.DataFrame(folds)
        row = {"run": name}
        for prefix, label in (("", "deployed"), ("converged_", "converged"), ("start_", "start")):
            for kind, short in (("rf_share", "sens"), ("influence_rf_share", "infl")):
                cols = [f"{prefix}{kind}", *[f"{prefix}{kind}_{c}" for c in LABELS]]
                if all(c in frame for c in cols):
                    row[f"{label} {short}"] = " / ".join(f"{frame[c].mean():.2f}" for c in cols)
        row["objective gap"] = frame["train_objective_gap"].mean()
        row["moved from start"] = frame["moved_from_start"].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def rule_qwk_table(root: Path, study: str, seeds) -> pd.DataFrame:
    """Pooled QWK of every run's fused output under every decision rule, mean over seeds (and
    the range over seeds): how much each source's score depends on the rule."""
    rows = []
    for name, _, _, _ in study_plan(study):
        row = {"run": name}
        for rule in DECISIONS:
            values = []
            for s in seeds:
                frame = _load(root, study, s, name)
                values.append(qwk(frame["label"], frame[f"pred_{rule}"]))
            row[rule] = f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"
        rows.append(row)
    return pd.DataFrame(rows)


def branch_gap_table(root: Path, study: str, seeds, name: str = "trainable_100",
                     modality: str = "thermal_map") -> pd.DataFrame:
    """Image branch train/test consistency (mean over seeds and folds): top-class probability
    and QWK of the out-of-fold training rows, of the test rows by the mean of the inner CNNs
    (the old head input) and by single inner CNNs (the new one); ``attrs["head_log_loss"]``
    holds the trainable head's test log-loss with either input."""
    folds = []
    for s in seeds:
        metrics = json.loads((root / study / f"seed{s}" / name / "metrics.json").read_text())
        folds += metrics["folds"]
    f = pd.DataFrame(folds)
    rows = []
    for label, suffix in (("training rows (out-of-fold, one CNN)", "train"),
                          ("test rows, mean of the inner CNNs (before)", "test_{}_mean_of_models"),
                          ("test rows, single inner CNNs (after)", "test_{}_single_model")):
        top = f"{modality}_train_top_p" if suffix == "train" else f"{modality}_{suffix.format('top_p')}"
        q = f"{modality}_train_qwk" if suffix == "train" else f"{modality}_{suffix.format('qwk')}"
        rows.append({"image probabilities": label, "mean top-class probability": f[top].mean(),
                     "QWK": f[q].mean()})
    table = pd.DataFrame(rows)
    table.attrs["head_log_loss"] = (float(f["log_loss_mean_of_models_input"].mean()),
                                    float(f["log_loss"].mean()))
    return table


def _signed(v) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:+.3f}"


def markdown_comparison(table: pd.DataFrame, rules=None) -> str:
    rules = list(rules or DECISIONS)
    lines = ["| data | variant − fixed | decision | ΔQWK [95 % CI] | per seed | QWK verdict | "
             "Δlog-loss [95 % CI] | per seed | log-loss verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in table[table["decision"].isin(rules)].iterrows():
        lines.append(
            f"| {r['data %']:g} % | {r['variant']} | {r['decision']} | {_signed(r['ΔQWK'])} "
            f"[{_signed(r['ΔQWK low'])}, {_signed(r['ΔQWK high'])}] | "
            f"{', '.join(_signed(v) for v in r['ΔQWK per seed'])} | {r['QWK verdict']} | "
            f"{_signed(r['Δlog-loss'])} [{_signed(r['Δlog-loss low'])}, {_signed(r['Δlog-loss high'])}] | "
            f"{', '.join(_signed(v) for v in r['Δlog-loss per seed'])} | {r['log-loss verdict']} |")
    return "\n".join(lines)


def markdown_frame(frame: pd.DataFrame, digits: int = 3) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, r in frame.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the generated section ``name`` replaced by ``body`` (appended if absent)."""
    start, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def sections(root: Path, seeds, n_boot: int, studies=None) -> dict:
    """The generated sections of docs/results.md for ``studies`` (default: all), by name."""
    out = {}
    for study in studies or STUDIES:
        table = comparison_table(root, study, seeds, n_boot)
        out[f"{study}-comparison"] = markdown_comparison(table)
        out[f"{study}-weights"] = markdown_frame(weights_table(root, study, seeds), 2)
        out[f"{study}-rules"] = markdown_frame(rule_qwk_table(root, study, seeds))
        folds = fold_table(root, study, seeds)
        out[f"{study}-trainable-folds"] = markdown_frame(folds)
        gap = branch_gap_table(root, study, seeds)
        before, after = gap.attrs["head_log_loss"]
        out[f"{study}-branch-gap"] = (markdown_frame(gap) + f"\n\nTrainable head, test log-loss (mean "
                                      f"over seeds and folds): {before:.3f} on the mean of the inner "
                                      f"CNNs' probabilities, {after:.3f} fusing each CNN's "
                                      f"probabilities and averaging the fused outputs.")
    provenances = [json.loads(p.read_text()) for study in (studies or STUDIES) for s in seeds
                   for p in (root / study / f"seed{s}").glob("*/provenance.json")]
    commits = sorted({(p.get("git_commit") or "?")[:12] for p in provenances})
    provenance = provenances[0]
    out["provenance"] = (f"Seeds {', '.join(map(str, seeds))}; {n_boot} bootstrap resamples; "
                         f"{len(provenances)} runs at commit{'s' if len(commits) > 1 else ''} "
                         f"{', '.join(f'`{c}`' for c in commits)}; versions "
                         + ", ".join(f"{k} {v}" for k, v in provenance.get("versions", {}).items())
                         + f"; Python {provenance.get('python')}.")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusionlib.study", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--studies", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    parser.add_argument("--root", default="runs-study")
    parser.add_argument("--cache", default=".cache")
    parser.add_argument("--out", default="docs/results.md")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--no-run", action="store_true", help="only re-render from finished runs")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not args.no_run:
        for study in args.studies:
            for seed in args.seeds:
                study_runs(study, seed, root, Path(args.cache))
    from ._io import atomic_write_text

    out = Path(args.out)
    text = out.read_text(encoding="utf-8") if out.is_file() else "# Results\n"
    for name, body in sections(root, args.seeds, args.n_boot, args.studies).items():
        text = replace_section(text, name, body)
        if name.endswith(("-trainable-folds", "-rules")):  # the benchmark's figures, on screen too
            print(f"\n{name}\n{body}")
    atomic_write_text(out, text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
