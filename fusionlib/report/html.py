"""The report as HTML: tables, heatmaps, banners and the stylesheet (the pieces :mod:`.page`
puts together; :mod:`.build` writes the page)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

import pandas as pd

from ..data import LABELS
from ..plots.figures import figure_html  # noqa: F401 - fusionlib.report.figure_html
from ..plots.heat import diverging_colour as _diverging
from ..plots.heat import heatmap_html, weight_tables_html  # noqa: F401 - the report's names
from ..results import Run
from .tables import fmt

REPORT_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "report.ipynb"
"""The report's sections in JupyterLab (:func:`fusionlib.report.page.show_sections`)."""


def _never_trained_folds(run: Run) -> int:
    """Folds whose fusion head kept its start weights (0 for runs made before it was counted)."""
    try:
        return int(run.summary.get("head_never_trained_folds") or 0)
    except (TypeError, ValueError):
        return 0


# --------------------------------------------------------------------------- HTML helpers


def html_table(frame: pd.DataFrame, table_id: str, caption: str | None = None,
               float_digits: int = 3) -> str:
    """A DataFrame as an HTML table with a stable ``id`` (for browsers and tests) and caption.

    Numbers are right-aligned, text left-aligned; a text column with long entries wraps, so
    that the table fits the page instead of running off its right edge."""
    formatters = {c: (lambda v, d=float_digits: fmt(v, d)) for c in frame.columns
                  if pd.api.types.is_float_dtype(frame[c])}
    text = frame.to_html(table_id=table_id, index=False, border=0, classes="fl-table",
                         formatters=formatters, na_rep="–", escape=True)
    if caption:
        text = text.replace("<thead>", f"<caption>{html.escape(caption)}</caption>\n  <thead>", 1)
    rules = []
    for i, c in enumerate(frame.columns, start=1):
        if pd.api.types.is_numeric_dtype(frame[c]):
            continue
        values = frame[c].astype(str)
        if not values.str.match(r"^[\s\d.,+\-–±\[\]%]*$").all():
            rules.append(f"#{table_id} td:nth-child({i}), #{table_id} th:nth-child({i}) "
                         f"{{text-align: left;}}")
        if len(values) and values.str.len().max() > _WRAP_AT:
            rules.append(f"#{table_id} td:nth-child({i}) {{white-space: normal; "
                         f"min-width: 12em;}}")
    style = f"<style>{''.join(rules)}</style>" if rules else ""
    return f'{style}<div class="fl-table-wrap">{text}</div>'


_WRAP_AT = 28      # characters: a longer text cell wraps


def table_with_more(frame: pd.DataFrame, table_id: str, caption: str, main: list[str],
                    key: list[str]) -> str:
    """``frame``'s ``main`` columns as the table ``table_id``; its other columns (with the
    ``key`` columns that name a row) in a folded table ``<table_id>-more`` below it."""
    rest = [c for c in frame.columns if c not in main and c not in key]
    out = html_table(frame[main], table_id, caption)
    if rest:
        out += (f'<details class="fl-more"><summary>More columns ({len(rest)})</summary>'
                f"{html_table(frame[key + rest], f'{table_id}-more', caption + ': more columns')}"
                f"</details>")
    return out


def confusion_tables_html(panels: dict) -> str:
    """Per run a confusion matrix (rows: true class, columns: predicted) as a table: count and
    share of the true class in each cell, shaded by the share."""
    out = []
    for name, (y_true, y_pred) in panels.items():
        y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
        k = len(LABELS)
        counts = np.zeros((k, k), dtype=int)
        np.add.at(counts, (y_true, y_pred), 1)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        rows = []
        for i, label in enumerate(LABELS):
            cells = []
            for j in range(k):
                background, color = _diverging(shares[i, j], 1.0)
                cells.append(f'<td style="background:{background};color:{color}">'
                             f"{counts[i, j]}<br><small>{100 * shares[i, j]:.0f}%</small></td>")
            rows.append(f"<tr><th>{label}</th>{''.join(cells)}</tr>")
        head = "".join(f"<th>{c}</th>" for c in LABELS)
        out.append(f'<table class="fl-heat fl-confusion" id="confusion-{html.escape(name)}">'
                   f"<caption>{html.escape(name)}</caption><thead><tr><th>true / predicted</th>"
                   f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return f'<div class="fl-heatmaps">{"".join(out)}</div>'


REPORT_CSS = """
<style>
body { margin: 0; color: #1d1d1d; background: #fff;
       font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1248px; margin: 0 auto; padding: 0 16px 40px 16px; box-sizing: border-box; }
h1 { font-size: 20px; margin: 8px 0 2px 0; }
h2 { font-size: 17px; margin: 0; display: inline; }
h3 { font-size: 14px; margin: 14px 0 4px 0; }
p { margin: 4px 0 8px 0; }
code { font-size: 12px; }
.fl-lede { color: #333; margin: 2px 0 4px 0; }
.fl-nav { position: sticky; top: 0; z-index: 10; background: #f7f8fa; border-bottom: 1px solid #d8dce3;
          padding: 5px 16px; font-size: 13px; white-space: nowrap; overflow: hidden; }
.fl-nav a { margin-right: 16px; color: #0b5cad; text-decoration: none; }
.fl-nav a:hover { text-decoration: underline; }
.fl-brand { font-weight: 600; margin-right: 22px; color: #444; }
.fl-section { border-top: 1px solid #e3e6ea; padding: 8px 0 6px 0; scroll-margin-top: 32px; }
.fl-section > details > summary { cursor: pointer; margin-bottom: 6px; }
details > summary { cursor: pointer; }
details.fl-more, details#verdict-details, details.fl-weights-run { margin: 0 0 10px 0; }
details.fl-more > summary, details#verdict-details > summary, details.fl-weights-run > summary
  { color: #0b5cad; font-size: 12px; }
.fl-first { display: grid; grid-template-columns: minmax(0, 1.8fr) minmax(0, 1fr); gap: 14px;
            align-items: start; }
#verdict-answers { margin: 0; padding-left: 16px; font-size: 12.5px; line-height: 1.35; }
#verdict-answers li { margin: 0 0 3px 0; }
.fl-verdict-figure { margin: 0; }
.fl-verdict-figure figcaption { display: none; }
.fl-table { border-collapse: collapse; font-size: 12px; margin: 0.3em 0 0.8em 0; }
.fl-table caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0; }
.fl-table th, .fl-table td { padding: 3px 7px; border-bottom: 1px solid #ddd; text-align: right;
                             vertical-align: top; }
.fl-table th { background: #f3f5f8; white-space: normal; vertical-align: bottom; }
.fl-table td { white-space: nowrap; }
.fl-table-wrap { overflow-x: auto; max-width: 100%; }
.fl-table td:first-child, .fl-table th:first-child { text-align: left; }
.fl-figure { margin: 0.4em 0 1em 0; }
.fl-figure img { max-width: 100%; height: auto; }
.fl-figure figcaption { font-size: 11px; color: #666; }
.fl-heatmaps { display: flex; flex-wrap: wrap; gap: 10px; margin: 4px 0 10px 0; }
.fl-heat { border-collapse: collapse; font-size: 10px; }
.fl-heat caption { font-size: 11px; font-weight: 600; text-align: left; }
.fl-heat th { font-weight: normal; color: #444; padding: 1px 4px; text-align: right; }
.fl-heat td { padding: 2px 4px; text-align: center; min-width: 2.4em; border: 1px solid #fff; }
.fl-confusion td { min-width: 3.6em; font-size: 11px; }
.fl-banner { background: #fff4d6; border: 1px solid #e0b400; padding: 4px 10px; margin: 6px 0;
             border-radius: 4px; }
.fl-synthetic { background: #ffe08a; padding: 0 4px; border-radius: 3px; font-weight: 600; }
.fl-note { color: #555; font-size: 12px; }
pre { white-space: pre-wrap; word-break: break-word; font-size: 11px; }
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
