"""The report page: its sections computed from the finished runs, and the page that holds them.

A reader's order: the answers in words with one figure (each variant minus fixed, the deciding
interval, the equivalence band) on the first screen, then the compact verdict table (one
interval, the one that decides) with the other intervals, the per-seed values and the method
folded into details; then what a conclusive study would take, the runs, what each variant
learned, calibration, confusion matrices and provenance. Every table fits 1280 px: the columns
a reader needs first are shown, the others sit in an expandable "more columns" table below.

:func:`report_sections` computes the sections (no Jupyter needed); ``fusionlib report`` writes
them as one self-contained page (:func:`render_page`) and ``notebooks/report.ipynb`` displays
the same sections in JupyterLab (:func:`show_sections`).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import plots
from ..plots.figures import figure_html
from ..plots.weights import SHARE_KEYS
from ..results import (DEFAULT_CLINICAL_MODEL, PROBA_COLUMNS, Run, common_clinical_names,
                       headline_metrics, load_runs)
from ..results.registry import CLINICAL_PLACEHOLDER
from .conclusions import AGREEMENT_NOTE, DEFAULT_SETTINGS, ConclusionSettings
from .html import (REPORT_CSS, confusion_tables_html, head_warning_banner, html_table,
                   left_out_html, run_links, synthetic_banner, table_with_more, weight_tables_html)
from .tables import (calibration_table, clinical_share_table, fmt, paired_comparisons,
                     provenance_table, runs_table, runs_table_columns)
from .verdict import (INFLUENCE_COLUMNS, plan_display, verdict_compact, verdict_details,
                      verdict_sentences, verdict_table, weighting_sentences)

TITLE = "Trainable fusion vs the fixed 70/30 mix"


@dataclass
class Section:
    """One part of the report: an anchor ``id`` (the navigation links to it), a ``title``,
    its HTML ``body``; ``open`` says whether it starts unfolded."""

    id: str
    title: str
    body: str
    open: bool = True
    nav: str = ""                                   # short label in the navigation bar

    def html(self) -> str:
        state = " open" if self.open else ""
        return (f'<section id="{self.id}" class="fl-section"><details{state}>'
                f'<summary><h2>{html.escape(self.title)}</h2></summary>\n{self.body}\n'
                f"</details></section>")


@dataclass
class ReportContent:
    """Everything the report shows: the header and its sections, and the answers in words
    (what ``fusionlib report`` prints)."""

    header: str
    sections: list[Section]
    answers: list[str] = field(default_factory=list)


def _pct(value: float) -> str:
    return f"{value:g}%"


def _p(text: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<p{cls}>{text}</p>"


def _figure(fig, alt: str, css_class: str = "fl-figure") -> str:
    return figure_html(fig, alt, css_class=css_class)


# --------------------------------------------------------------------------- the answers

METHOD_HTML = (
    "Each variant against the <code>fixed</code> run at the same data percentage, over every "
    "seed of the runs: ΔQWK = QWK(variant) − QWK(fixed) averaged over seeds. <strong>The 95 % "
    "interval that decides</strong> is the patients + seeds interval: a bootstrap over patients "
    "of the seed-averaged difference plus the seeds' own spread, so it holds the training "
    "variation between seeds as well as the sampling of patients (simulated coverage 0.95-0.98, "
    "<code>bench/bench_coverage.py</code>). Each verdict is one of four: <em>better</em> or "
    "<em>worse</em> (the interval excludes 0), <em>equivalent</em> within the margin (two "
    "one-sided tests: the 90 % interval inside ±margin) or <em>inconclusive</em> (neither: too "
    "small a study to tell). The <strong>detectable difference</strong> is the true difference "
    "this study would find four times in five (80 % power; noncentral t from the same standard "
    "error and degrees of freedom). <strong>Decided alike</strong> is the share of cases where "
    "the variant and fixed predict the same class; QWK can move only through the others. "
    "Δlog-loss &lt; 0: the variant's probabilities are better. The <strong>clinical influence "
    "share</strong> is the clinical branch's part of the fused output's variation across test "
    "cases, for the variant and for the fixed mix on the same cases: compare these two, not the "
    "fixed mix's nominal weight. For contrast only (they do not decide): the patient bootstrap "
    "alone (misses what moves a seed's models as a whole) and the corrected resampled t over "
    "every (seed, fold). docs/protocol.md has the reasons and the margins.")


def _verdict_figure_rows(verdict: pd.DataFrame) -> list[dict]:
    rows = []
    for (_, row), c in zip(verdict.iterrows(), verdict.attrs.get("compare", [])):
        rows.append({"label": f"{row['variant']} {row['data %']:g}%",
                     **{m.name: {k: c[m.name][k] for k in ("delta", "interval", "margin", "verdict")}
                        for m in _verdict_metrics(verdict)}})
    return rows


def _verdict_metrics(verdict: pd.DataFrame) -> list:
    return verdict.attrs.get("metrics") or headline_metrics()


def _verdict_panels(verdict: pd.DataFrame) -> list[tuple[str, str]]:
    """The verdict figure's panels: (metric, axis label), one per headline metric."""
    return [(m.name, f"Δ{m.label} ({'>' if m.higher_is_better else '<'} 0: better)")
            for m in _verdict_metrics(verdict)]


def answers_section(verdict: pd.DataFrame, answers: list[str]) -> Section:
    """The first screen: the answers in words beside the verdict figure, then the compact
    verdict table and the details."""
    if not len(verdict):
        body = _p('No verdict: no run with <code>fusion: {variant: fixed}</code> at the data '
                  'percentage of another run.', "fl-note") + '<ul id="verdict-answers"></ul>'
        return Section("answers", "Answers", body, nav="Answers")
    items = []
    for text in answers:
        question, _, rest = text.partition("? ")
        items.append(f"<li><strong>{html.escape(question)}?</strong> {html.escape(rest)}</li>"
                     if rest else f"<li>{html.escape(text)}</li>")
    figure = _figure(plots.verdict_intervals(_verdict_figure_rows(verdict),
                                             panels=_verdict_panels(verdict)),
                     "Verdict: each variant minus fixed with its deciding 95 % interval and the "
                     "equivalence margin", "fl-figure fl-verdict-figure")
    first = (f'<div class="fl-first"><ul id="verdict-answers">{"".join(items)}</ul>'
             f"{figure}</div>")
    compact = html_table(verdict_compact(verdict), "verdict-table",
                         "Verdict: each variant minus fixed over the runs' seeds (the deciding "
                         "95 % interval in brackets)")
    details = "".join(html_table(frame, f"verdict-{key}", caption)
                      for key, (caption, frame) in verdict_details(verdict).items())
    more = (f'<details id="verdict-details"><summary>Other intervals, each seed, decision '
            f"agreement and the method</summary>{_p(METHOD_HTML)}"
            f'{_p(html.escape(AGREEMENT_NOTE), "fl-note")}{details}</details>')
    return Section("answers", "Answers", first + compact + more, nav="Answers")


PLANNER_HTML = (
    "The planner (<code>fusionlib plan --runs-dir ...</code>) splits each comparison's measured "
    "variance into its sources: the patients (shrinks as 1/patients), training noise that "
    "differs from visit to visit (1/patients and 1/seeds) and a shift of a seed's models as a "
    "whole (1/seeds only). From them it predicts the deciding interval at other numbers of "
    "patients and seeds and names the cheapest design that detects a difference as large as "
    "the margin or the observed one at 80 % power, so that a null result there shows "
    "equivalence. Checked against simulation: <code>bench/bench_power.py</code>.")

_PLAN_MAIN = ["data %", "variant", "metric", "Δ", "verdict", "detectable now (80% power)",
              "conclusive at", "its detectable", "its equivalence power"]


def planner_section(verdict: pd.DataFrame) -> Section:
    if not len(verdict):
        return Section("planner", "What it would take", _p("No comparison to plan from.",
                                                            "fl-note"), nav="Planner")
    plan = plan_display(verdict)
    body = _p(PLANNER_HTML) + table_with_more(
        plan, "plan-table", "What a conclusive study would take, per comparison and metric",
        [c for c in _PLAN_MAIN if c in plan], ["data %", "variant", "metric"])
    return Section("planner", "What it would take", body, nav="Planner")


# --------------------------------------------------------------------------- runs and pairs

_RUNS_MAIN = ["name", "fusion", "data %", "QWK", "QWK over seeds", "accuracy", "macro-F1",
              "log-loss", "Brier", f"{CLINICAL_PLACEHOLDER} influence", "cases", "dropped images"]


def clinical_model_note(runs: list[Run]) -> str:
    """One sentence naming the clinical model when it is not the default random forest (the
    report has always read without one for it): "The clinical branch is gradient boosting
    (clinical.model: hist_gradient_boosting).", or each model's runs when they differ."""
    by_model: dict[str, list[Run]] = {}
    for run in runs:
        by_model.setdefault(run.clinical_model, []).append(run)
    if set(by_model) <= {DEFAULT_CLINICAL_MODEL}:
        return ""
    if len(by_model) == 1:
        (model, same), = by_model.items()
        return (f" The clinical branch is {html.escape(same[0].clinical.long)} "
                f"(<code>clinical.model: {html.escape(model)}</code>).")
    listed = "; ".join(f"{html.escape(of[0].clinical.long)} "
                       f"({html.escape(', '.join(r.name for r in of))})"
                       for of in by_model.values())
    return f" The clinical branch differs between runs: {listed}."


def runs_section(runs: list[Run]) -> Section:
    table = runs_table(runs)
    shown = table.assign(**{"data %": table["data %"].map(_pct),
                            "data": [d + (" (SYNTHETIC)" if s else "")
                                     for d, s in zip(table["data"], table["synthetic"])]})
    shown = shown[runs_table_columns(runs)]
    clinical = common_clinical_names(runs).short
    main = [c.replace(CLINICAL_PLACEHOLDER, clinical) for c in _RUNS_MAIN]
    body = (_p("Every finished run: QWK as mean ± SD over the outer folds (of one seed, averaged "
               "over the seeds of a several-seed run; it treats the trained models as fixed), its "
               "spread over seeds, the proper scores (log-loss, Brier: lower is better, "
               "independent of the decision rule) and the clinical branch's influence share "
               "(1.0: only the clinical branch matters). The other columns are below the table.")
            + table_with_more(shown, "kappa-table", "Scores per run",
                              [c for c in main if c in shown], ["name"])
            + _figure(plots.qwk_comparison(table),
                      "QWK per run with its 95% t-interval over folds (trained models held fixed)")
            + run_links(runs))
    return Section("runs", "Runs", body, nav="Runs")


def _paired_main(metrics: list) -> list[str]:
    """The pooled-case table's columns shown before "more": per headline metric its
    difference and interval."""
    return ["data %", "variant", "vs", "cases",
            *[c for m in metrics for c in (f"{m.label} diff", f"{m.label} diff 95% CI")],
            "verdict"]


def paired_section(runs: list[Run], n_boot: int) -> Section:
    paired = paired_comparisons(runs, n_boot=n_boot)
    intro = _p("For contrast, not to decide: each variant and the fixed run's baselines "
               "(clinical only, image only, logistic stacking) against the fixed mix on the "
               "pooled cases, both decided by the same rule, with a 95 % bootstrap over "
               "patients that holds the trained models fixed (a rerun with another seed moves "
               "these differences too; the verdict above includes that). Many comparisons are "
               "shown at once: about one in twenty 95 % intervals excludes 0 by chance.")
    if not len(paired):
        body = intro + _p('No paired comparison: no run with <code>fusion: {variant: fixed}'
                          '</code> at the data percentage of another run.', "fl-note")
        body += '<p id="paired-table"></p>'
        return Section("paired", "Pooled-case comparison", body, open=False, nav="Pooled")
    metrics = headline_metrics()
    bounds = {m.label: ("CI low", "CI high") if i == 0 else
              (f"{m.label} CI low", f"{m.label} CI high") for i, m in enumerate(metrics)}
    shown = paired.assign(**{
        "data %": paired["data %"].map(_pct),
        **{f"{label} diff 95% CI": [f"[{fmt(lo, 3, '+')}, {fmt(hi, 3, '+')}]"
                                    for lo, hi in zip(paired[low], paired[high])]
           for label, (low, high) in bounds.items()},
        "per-fold diffs": [", ".join(f"{d:+.3f}" for d in ds) for ds in paired["per-fold diffs"]],
    }).drop(columns=[*(c for pair in bounds.values() for c in pair), "kind"], errors="ignore")
    body = (intro + table_with_more(shown, "paired-table",
                                    "Variant − fixed on the same pooled cases and decision rule",
                                    [c for c in _paired_main(metrics) if c in shown],
                                    ["data %", "variant"])
            + _figure(plots.paired_differences(paired),
                      "Paired QWK difference vs fixed per data percentage (bar: 95% bootstrap "
                      "over patients, ticks: folds)"))
    return Section("paired", "Pooled-case comparison", body, open=False, nav="Pooled")


# --------------------------------------------------------------------------- learned weights

def _shares(run: Run, seeds=None) -> dict | None:
    frame = run.folds
    if frame is None or "influence_clinical_share" not in frame:
        return None
    if seeds is not None and "seed" in frame:
        frame = frame[frame["seed"].isin(list(seeds))]
    return {key: frame[col].to_numpy(dtype=float) if col in frame else np.array([])
            for key, col in zip(SHARE_KEYS, INFLUENCE_COLUMNS)}


def weights_section(runs: list[Run], verdict: pd.DataFrame) -> Section:
    """Per variant one panel of what it learned on average beside the fixed mix's, the share
    table, and every fold's raw weights folded away per run."""
    panels = []
    by_name = {r.name: r for r in runs}
    # Each variant beside the fixed run its verdict compares it with (same cases); a variant
    # without one still gets its panel.
    fixed_of = dict(zip(verdict["run"], verdict["vs"])) if len(verdict) else {}
    learned = [r for r in runs if r.fusion != "fixed"]
    order = {name: i for i, name in enumerate(fixed_of)}
    for run in sorted(learned, key=lambda r: order.get(r.name, len(order))):
        fixed = by_name.get(fixed_of.get(run.name, ""))
        panels.append({"title": f"{run.fusion}, {run.data_percentage:g}%",
                       "variant": _shares(run, run.seeds) or {},
                       "fixed": _shares(fixed, run.seeds) if fixed is not None else None})
    sentences = weighting_sentences(verdict)
    listing = ('<ul id="weighting-answers">' + "".join(f"<li>{html.escape(s)}</li>"
                                                       for s in sentences) + "</ul>")
    summary = _figure(plots.influence_summary(panels),
                      "weights: what each variant learned -- clinical influence share (mean ± SD "
                      "over folds and seeds) beside the fixed mix's on the same cases")
    shares = clinical_share_table(runs)
    shares = shares.assign(**{"data %": shares["data %"].map(_pct)})
    intro = _p(
        "Two shares answer \"how much does the fused output follow the clinical branch"
        f"{html.escape(common_clinical_names(runs).named)}?\". The "
        "<strong>influence share</strong> is how much of the fused output's actual variation "
        "across test cases comes from the clinical branch: it answers \"what weighting did it "
        "learn\" for these data. The <strong>sensitivity share</strong> is how strongly the "
        "output responds to a unit change of the clinical probabilities (the head itself; "
        "<code>fixed</code> reads its setting, 0.70). Raw kernels are not identifiable (adding a "
        "constant to a modality's rows changes nothing), so compare variants by the shares.")
    per_fold = []
    for run in runs:
        if run.fusion == "fixed" or not run.weights:
            continue
        per_fold.append(f'<details class="fl-weights-run" id="weights-{html.escape(run.name)}">'
                        f"<summary>{html.escape(run.name)}: raw weights of every fold</summary>"
                        f"{weight_tables_html(run.weights, run.clinical.short)}</details>")
    folded = ('<h3>Raw learned weights per fold</h3>' + "".join(per_fold)) if per_fold else ""
    body = (intro + listing + summary
            + table_with_more(shares, "rf-share-table",
                              "Clinical share per run: influence and sensitivity, deployed, "
                              "converged and start (mean ± SD over folds; I / P / R)",
                              [c for c in ("name", "fusion", "data %", "influence", "sensitivity",
                                           "moved from start") if c in shares], ["name"])
            + folded)
    return Section("weights", "Learned weights", body, nav="Weights")


# --------------------------------------------------------------------------- calibration etc.


def calibration_section(runs: list[Run], percents: list[float]) -> Section:
    table = calibration_table(runs)
    body = _p("Reliability of the fused probabilities (top-class confidence against accuracy; "
              "marker size follows the cases in the bin) and each run's Brier score and expected "
              "calibration error (ECE). Lower is better for both.")
    body += html_table(table.assign(**{"data %": table["data %"].map(_pct)}), "calibration-table",
                       "Brier score and ECE per run")
    for p in percents:
        curves = {r.name: (r.predictions["label"].to_numpy(),
                           r.predictions[PROBA_COLUMNS].to_numpy())
                  for r in runs if r.data_percentage == p and r.predictions is not None}
        body += _figure(plots.reliability_diagram(curves, title=f"Reliability, {_pct(p)} of patients"),
                        f"Reliability diagram of every variant, {_pct(p)} of patients")
    return Section("calibration", "Calibration", body, open=False, nav="Calibration")


def confusion_section(runs: list[Run], percents: list[float]) -> Section:
    body = _p("Pooled over folds and seeds; each cell gives the count and the share of its true "
              "class (rows: true phase, columns: predicted).")
    for p in percents:
        panels = {r.name: (r.predictions["label"].to_numpy(), r.predictions["pred"].to_numpy())
                  for r in runs if r.data_percentage == p and r.predictions is not None}
        body += f"<h3>{_pct(p)} of patients</h3>" + confusion_tables_html(panels)
    return Section("confusion", "Confusion matrices", body, open=False, nav="Confusion")


def provenance_section(runs: list[Run]) -> Section:
    table = provenance_table(runs)
    details = []
    for r in runs:
        badge = ' <span class="fl-synthetic">SYNTHETIC DATA</span>' if r.synthetic else ""
        details.append(f"<details><summary>{html.escape(r.name)}{badge}: parameters</summary><pre>"
                       f"{html.escape(json.dumps(r.params, indent=2, sort_keys=True))}</pre>"
                       f"</details>")
    body = (_p("Where every number comes from: the code commit, the package versions, the data "
               "set and its fingerprint, seeds and run times.")
            + table_with_more(table, "provenance-table", "Provenance per run",
                              [c for c in ("name", "data", "data fingerprint", "cases used", "seed",
                                           "git commit", "seconds", "finished") if c in table],
                              ["name"])
            + "".join(details))
    return Section("provenance", "Provenance", body, open=False, nav="Provenance")


# --------------------------------------------------------------------------- assembling


def report_content(runs: list[Run], left_out: list | None = None, runs_dir: str | Path = "runs",
                   n_boot: int = 2000,
                   settings: ConclusionSettings = DEFAULT_SETTINGS) -> ReportContent:
    """Every section of the report over ``runs`` (the verdict's bootstrap with ``n_boot``
    resamples and the ``settings``' margins), and the answers in words."""
    if not runs:
        raise ValueError("no runs to report on")
    percents = sorted({r.data_percentage for r in runs}, reverse=True)
    verdict = verdict_table(runs, n_boot=n_boot, settings=settings)
    answers = verdict_sentences(verdict)
    header = (f"<h1>{TITLE}</h1>"
              + _p(f"Does a trainable fusion of the clinical and image class probabilities beat "
                   f"the fixed 70/30 mix, and what weighting does it learn? {len(runs)} runs at "
                   f"{', '.join(_pct(p) for p in percents)} of the patients from "
                   f"<code>{html.escape(str(runs_dir))}</code>; headline metric quadratic-weighted "
                   f"kappa (QWK).{clinical_model_note(runs)}", "fl-lede")
              + synthetic_banner(runs) + head_warning_banner(runs) + left_out_html(left_out or []))
    sections = [answers_section(verdict, answers), planner_section(verdict), runs_section(runs),
                weights_section(runs, verdict), paired_section(runs, n_boot),
                calibration_section(runs, percents), confusion_section(runs, percents),
                provenance_section(runs)]
    return ReportContent(header, sections, answers)


def report_sections(runs_dir: str | Path = "runs", n_boot: int = 2000,
                    settings: ConclusionSettings = DEFAULT_SETTINGS) -> ReportContent:
    """:func:`report_content` of the finished runs in ``runs_dir`` (for the notebook)."""
    left_out: list = []
    runs = load_runs(runs_dir, left_out=left_out)
    if not runs:
        raise ValueError(f"no finished runs in {runs_dir}")
    return report_content(runs, left_out, runs_dir, n_boot, settings)


def render_page(content: ReportContent, title: str = "fusionlib report") -> str:
    """The whole report as one self-contained HTML page: a navigation bar, the header and the
    sections; no script and nothing fetched from the network."""
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.nav or s.title)}</a>'
                  for s in content.sections)
    body = "\n".join(s.html() for s in content.sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title>{REPORT_CSS}</head>\n<body>"
            f'<nav class="fl-nav" id="report-nav"><span class="fl-brand">fusionlib report</span>'
            f"{nav}</nav>\n<main>{content.header}\n{body}</main></body></html>\n")


def show_sections(content: ReportContent) -> None:
    """Display the header and every section in a notebook (JupyterLab, papermill)."""
    from IPython.display import HTML, display

    display(HTML(REPORT_CSS + content.header))
    for section in content.sections:
        display(HTML(section.html()))
