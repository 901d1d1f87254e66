"""Heatmaps as coloured HTML tables: the per-fold fusion weights without a matplotlib figure.

A notebook shows fifteen folds' weights in a few milliseconds this way (the matplotlib grid
took seconds per run), and the tables stay sharp at any zoom. The report
(:mod:`fusionlib.report.html`) uses the same tables with its stylesheet; in a notebook the
tables carry their own layout.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np

from .weights import fold_label, weight_view

__all__ = ["diverging_colour", "heatmap_html", "weight_tables_html"]

NOTEBOOK_LAYOUT = "display:flex;flex-wrap:wrap;gap:10px"
"""The tables side by side where no stylesheet says so (a notebook's output)."""


def diverging_colour(value: float, limit: float) -> tuple[str, str]:
    """A cell's background (white to red for positive, to blue for negative) and text colour."""
    t = max(-1.0, min(1.0, value / limit)) if limit > 0 and np.isfinite(value) else 0.0
    end = (178, 24, 43) if t > 0 else (33, 102, 172)
    rgb = tuple(round(255 + (e - 255) * abs(t)) for e in end)
    return f"rgb{rgb}", ("#fff" if abs(t) > 0.6 else "#111")


def _cell_text(value: float) -> str:
    # round first: -0.001 reads 0.00, not -0.00
    value = float(value)
    return f"{round(value, 2) + 0.0:.2f}" if np.isfinite(value) else "–"


def heatmap_html(matrix: np.ndarray, rows: list[str], cols: list[str], caption: str,
                 limit: float | None = None) -> str:
    """A small matrix as an HTML table whose cells are coloured by value (``limit``: the value
    of full colour; default the largest absolute entry)."""
    matrix = np.asarray(matrix, dtype=float)
    finite = np.abs(matrix[np.isfinite(matrix)])
    limit = limit if limit is not None else (float(finite.max()) if finite.size else 1.0)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for r, values in zip(rows, matrix):
        cells = []
        for v in values:
            background, color = diverging_colour(v, limit)
            cells.append(f'<td style="background:{background};color:{color}">{_cell_text(v)}</td>')
        body.append(f"<tr><th>{html.escape(str(r))}</th>{''.join(cells)}</tr>")
    return (f'<table class="fl-heat"><caption>{html.escape(caption)}</caption>'
            f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def weight_tables_html(weights: Sequence[Mapping], clinical: str = "clinical",
                       layout: str | None = None) -> str:
    """Every fold's raw fusion weights, one coloured table per fold on one colour scale (each
    variant's Keras-free view says what the rows and columns are; ``clinical``, the clinical
    model's short label, heads the clinical branch's rows). ``layout``: an inline style for
    the tables' box (:data:`NOTEBOOK_LAYOUT` in a notebook; the report styles it itself)."""
    entries = [w for w in weights if isinstance(w, dict) and w.get("raw")]
    # A variant this version does not know has no view and is left out.
    views = [(fold_label(w, i), view) for i, w in enumerate(entries)
             if (view := weight_view(w, clinical)) is not None]
    if not views:
        return '<p class="fl-note">No fusion weights recorded.</p>'
    limit = max(float(np.nanmax(np.abs(v.matrix))) for _, v in views) or 1.0
    tables = "".join(heatmap_html(v.matrix, v.rows, v.cols, label, limit) for label, v in views)
    style = f' style="{layout}"' if layout else ""
    return f'<div class="fl-heatmaps"{style}>{tables}</div>'
