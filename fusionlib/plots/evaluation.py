"""Matplotlib figures for the notebooks and the report.

Every function returns a :class:`matplotlib.figure.Figure` (and never calls
``plt.show``), so the same figure can be displayed inline, saved or embedded.
Inputs are the plain data structures an experiment writes (``metrics.json``
fold rows, ``weights.json`` entries, ``predictions.csv`` columns) or the
DataFrames of :mod:`fusionlib.report`, so no figure needs a Keras model.

This module holds the evaluation and data figures; the learned-weight figures live in
:mod:`fusionlib.plots.weights` and the shared figure helpers and outputs (PNG, ``<img>``,
notebook display) in :mod:`fusionlib.plots.figures`. Every one of them is importable from
:mod:`fusionlib.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from ..data import LABELS
from ..metrics import brier_score, expected_calibration_error, reliability_curve
from .figures import RF_COLOR as _RF_COLOR
from .figures import empty_figure as _empty
from .figures import figure_html, show_figure, to_base64_png  # noqa: F401 - plots.show_figure, ...
from .figures import finite_values as _finite
from .figures import new_figure as _figure
from .weights import (FIXED_CLINICAL_SHARE, clinical_share,  # noqa: F401
                      fusion_weight_heatmaps, influence_summary, training_curve)

__all__ = ["confusion_matrix", "confusion_matrices", "qwk_comparison", "paired_differences",
           "verdict_intervals", "influence_summary",
           "reliability_diagram", "class_mix", "sample_thermal_maps", "fusion_weight_heatmaps",
           "clinical_share", "training_curve", "FIXED_CLINICAL_SHARE", "to_base64_png",
           "figure_html", "show_figure"]

# matplotlib's patches and lines are imported where a figure draws them (as the Figure itself
# in .figures): importing this package does not load matplotlib.


# --------------------------------------------------------------------------- confusion matrix


def confusion_matrix(y_true, y_pred, title: str | None = None, normalize: bool = True, ax=None):
    """Confusion matrix of the three phases: counts, and row-normalised shading.

    Each cell shows the count and (when ``normalize``) the share of its true class,
    and the colour follows that share, so rare classes read as clearly as common ones.
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    n = len(LABELS)
    counts = np.zeros((n, n), dtype=int)
    np.add.at(counts, (y_true, y_pred), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = counts / counts.sum(axis=1, keepdims=True)
    rates = np.nan_to_num(rates)
    if ax is None:
        fig, axes = _figure(3.6, 3.3)
        ax = axes[0, 0]
    else:
        fig = ax.figure
    shade = rates if normalize else counts / max(counts.max(), 1)
    ax.imshow(shade, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            text = f"{counts[i, j]}" + (f"\n{100 * rates[i, j]:.0f}%" if normalize else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if shade[i, j] > 0.55 else "black")
    ax.set_xticks(range(n), LABELS)
    ax.set_yticks(range(n), LABELS)
    ax.set_xlabel("predicted phase")
    ax.set_ylabel("true phase")
    ax.set_title(title or "Confusion matrix", fontsize=10)
    fig.tight_layout()
    return fig


def confusion_matrices(panels: Mapping[str, tuple], ncols: int = 4):
    """One confusion matrix per entry ``{title: (y_true, y_pred)}`` in a grid."""
    if not panels:
        return _empty("no predictions")
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = _figure(3.3 * ncols, 3.1 * nrows, nrows, ncols)
    for ax, (title, (y_true, y_pred)) in zip(axes.flat, panels.items()):
        confusion_matrix(y_true, y_pred, title=title, ax=ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- kappa


def qwk_comparison(table, title: str | None = None):
    """Mean QWK per run with its 95% t-interval over folds, grouped by data percentage.

    ``table`` is :func:`fusionlib.report.runs_table` (columns ``name``, ``fusion``,
    ``data %``, ``QWK mean``, ``QWK CI low``, ``QWK CI high``).
    """
    if table is None or not len(table):
        return _empty("no runs")
    table = table.sort_values(["data %", "fusion", "name"], ascending=[False, True, True])
    fig, axes = _figure(6.5, 0.42 * len(table) + 1.3)
    ax = axes[0, 0]
    y = np.arange(len(table))[::-1]
    mean = table["QWK mean"].to_numpy(dtype=float)
    low = table["QWK CI low"].to_numpy(dtype=float)
    high = table["QWK CI high"].to_numpy(dtype=float)
    colors = [("k" if f == "fixed" else _RF_COLOR) for f in table["fusion"]]
    ax.errorbar(mean, y, xerr=[np.nan_to_num(mean - low), np.nan_to_num(high - mean)], fmt="none",
                ecolor="0.4", capsize=3)
    ax.scatter(mean, y, c=colors, zorder=3)
    labels = [f"{n}  ({p:g}%)" for n, p in zip(table["name"], table["data %"])]
    ax.set_yticks(y, labels, fontsize=8)
    for pct in table["data %"].unique()[1:]:
        cut = y[np.flatnonzero(table["data %"].to_numpy() == pct)[0]] + 0.5
        ax.axhline(cut, color="0.8", lw=0.8)
    fixed = table[table["fusion"] == "fixed"]
    for _, row in fixed.iterrows():
        ax.axvline(row["QWK mean"], color="k", ls=":", lw=0.8)
    finite = np.concatenate([_finite(low), _finite(high), _finite(mean)])
    if len(finite):
        ax.set_xlim(max(-1.0, finite.min() - 0.05), min(1.0, finite.max() + 0.05))
    ax.set_xlabel("QWK (mean over folds, 95% t-interval over folds; clipped to [-1, 1])")
    ax.set_title(title or "Quadratic-weighted kappa per run (black: fixed 70/30)", fontsize=10)
    fig.tight_layout()
    return fig


def paired_differences(paired, title: str | None = None):
    """QWK difference of each variant minus ``fixed``: pooled delta with its 95% paired
    bootstrap CI (bar) and the per-fold differences (dots), one panel per data %."""
    if paired is None or not len(paired):
        return _empty("no paired comparisons (needs a `fixed` run at the same data %)")
    percents = sorted(paired["data %"].unique(), reverse=True)
    fig, axes = _figure(min(14.0, 5.6 * len(percents) + 1.0),
                        0.5 * paired.groupby("data %").size().max() + 1.9, 1, len(percents),
                        sharex=True)
    for ax, pct in zip(axes[0], percents):
        part = paired[paired["data %"] == pct].reset_index(drop=True)
        y = np.arange(len(part))[::-1]
        delta = part["QWK diff"].to_numpy(dtype=float)
        low = part["CI low"].to_numpy(dtype=float)
        high = part["CI high"].to_numpy(dtype=float)
        colors = ["#2ca02c" if lo > 0 else ("#d62728" if hi < 0 else "0.45")
                  for lo, hi in zip(low, high)]
        ax.hlines(y, low, high, colors=colors, lw=3, alpha=0.6)
        ax.scatter(delta, y, color=colors, zorder=3, s=30, label="pooled Δ (95% CI)")
        for yi, folds in zip(y, part["per-fold diffs"]):
            folds = _finite(folds or [])
            ax.scatter(folds, np.full(len(folds), yi - 0.22), marker="|", color="k", s=40,
                       label="per fold" if yi == y[0] else None)
        ax.axvline(0, color="k", ls="--", lw=1)
        ax.set_yticks(y, part["variant"], fontsize=8)
        ax.set_title(f"{pct:g}% of patients", fontsize=10)
        ax.set_xlabel("QWK(variant) − QWK(fixed)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(title or "Paired QWK difference vs fixed 70/30 (green: CI above 0, red: below)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=2, frameon=False)
    return fig


VERDICT_COLORS = {"better": "#2ca02c", "worse": "#d62728", "equivalent": "#1f77b4",
                  "inconclusive": "0.45"}
"""One colour per four-way verdict (:mod:`fusionlib.report.conclusions`)."""


VERDICT_PANELS = (("qwk", "ΔQWK (> 0: better)"), ("log_loss", "Δlog-loss (< 0: better)"))
"""The verdict figure's panels for the built-in headline metrics: (metric, axis label)."""


def verdict_intervals(rows: Sequence[Mapping], title: str | None = None,
                      panels: Sequence[tuple[str, str]] = VERDICT_PANELS):
    """The verdict at a glance: per comparison (``rows``: ``label`` and, per metric of
    ``panels`` (metric name, axis label), a mapping with ``delta``, ``interval`` (low, high),
    ``margin`` and ``verdict``), the difference to fixed with its deciding 95 % interval, the
    shaded equivalence band ±margin and the zero line; one panel per metric, coloured by
    verdict."""
    if not rows:
        return _empty("no comparison with a fixed run")
    # At least ~3 rows' height, and half a row of room above and below, so that a short
    # table's intervals do not sit on the axes' edges.
    fig, axes = _figure(2.3 * len(panels), 0.27 * max(len(rows), 3) + 1.3, 1, len(panels),
                        sharey=True)
    y = np.arange(len(rows))[::-1]
    for ax, (metric, label) in zip(axes[0], panels):
        margin = rows[0][metric]["margin"]
        ax.axvspan(-margin, margin, color="#1f77b4", alpha=0.12, lw=0)
        ax.axvline(0, color="k", lw=0.8)
        for yi, row in zip(y, rows):
            m = row[metric]
            color = VERDICT_COLORS.get(m["verdict"], "0.45")
            ax.hlines(yi, *m["interval"], color=color, lw=2.5)
            ax.plot(m["delta"], yi, "o", color=color, ms=5)
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", color="0.9", lw=0.6)
    axes[0, 0].set_yticks(y, [row["label"] for row in rows], fontsize=8)
    axes[0, 0].set_ylim(-0.6, len(rows) - 0.4)
    from matplotlib.patches import Patch

    handles = [matplotlib_line(c, v) for v, c in VERDICT_COLORS.items()]
    handles.append(Patch(color="#1f77b4", alpha=0.12, label="± equivalence margin"))
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(title or "Each variant minus fixed: estimate and deciding 95 % interval",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig


def matplotlib_line(color: str, label: str):
    """A legend entry: a short line in ``color``."""
    from matplotlib.lines import Line2D

    return Line2D([0], [0], color=color, lw=2.5, marker="o", ms=4, label=label)


# --------------------------------------------------------------------------- calibration


def reliability_diagram(curves: Mapping[str, tuple], title: str | None = None, n_bins: int = 10):
    """Reliability diagram of several probability sources on the same cases.

    ``curves`` maps a name to ``(y_true, proba)``; the legend gives each source's
    Brier score and ECE. Marker size follows the number of cases in the bin.
    """
    if not curves:
        return _empty("no predictions")
    fig, axes = _figure(4.8, 4.2)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect calibration")
    for name, (y_true, proba) in curves.items():
        proba = np.asarray(proba, dtype=float)
        ok = np.isfinite(proba).all(axis=1)
        y = np.asarray(y_true)[ok]
        proba = proba[ok]
        if not len(y):
            continue
        curve = reliability_curve(y, proba, n_bins=n_bins)
        brier = brier_score(y, proba)
        ece = expected_calibration_error(y, proba, n_bins=n_bins)
        sizes = 8 + 60 * np.asarray(curve["count"]) / max(sum(curve["count"]), 1)
        line, = ax.plot(curve["confidence"], curve["accuracy"], "-",
                        label=f"{name}: Brier {brier:.3f}, ECE {ece:.3f}")
        ax.scatter(curve["confidence"], curve["accuracy"], s=sizes, color=line.get_color(), zorder=3)
    ax.set_xlim(0.3, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "Reliability", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- data


def class_mix(counts, title: str | None = None):
    """Bar chart of the phase counts (``{label: count}``, a Cohort, or label codes)."""
    if hasattr(counts, "class_counts"):
        counts = counts.class_counts()
    elif not isinstance(counts, Mapping):
        codes = np.asarray(counts, dtype=int)
        counts = {label: int((codes == i).sum()) for i, label in enumerate(LABELS)}
    labels = list(counts)
    values = np.asarray([counts[k] for k in labels], dtype=float)
    total = max(values.sum(), 1)
    fig, axes = _figure(4.0, 3.0)
    ax = axes[0, 0]
    bars = ax.bar(labels, values, color=["#d62728", "#ff7f0e", "#2ca02c"][: len(labels)])
    for bar, v in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, v, f"{int(v)}\n({100 * v / total:.0f}%)",
                ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, values.max() * 1.25 if values.max() > 0 else 1)
    ax.set_ylabel("cases")
    ax.set_xlabel("phase (I inflammatory, P proliferative, R remodelling)")
    ax.set_title(title or "Class mix", fontsize=10)
    fig.tight_layout()
    return fig


def sample_thermal_maps(cohort, n: int = 6, modality: str = "thermal_map", random_state: int = 0,
                        ncols: int = 3):
    """A few images of ``modality`` with their wound boxes, one per phase in turn."""
    from matplotlib.patches import Rectangle

    images = cohort.images[cohort.images["modality"] == modality]
    if not len(images):
        return _empty(f"no {modality} images")
    labels = cohort.cases.set_index("case_id")["label"]
    images = images.assign(label=labels.reindex(images["case_id"]).to_numpy())
    rng = np.random.default_rng(random_state)
    picks = []
    by_class = {c: g for c, g in images.groupby("label")}
    while len(picks) < min(n, len(images)):
        progressed = False
        for c in sorted(by_class):
            group = by_class[c]
            unused = group[~group.index.isin([p.name for p in picks])]
            if len(unused) and len(picks) < n:
                picks.append(unused.iloc[rng.integers(len(unused))])
                progressed = True
        if not progressed:
            break
    ncols = max(1, min(ncols, len(picks)))
    nrows = math.ceil(len(picks) / ncols)
    fig, axes = _figure(2.8 * ncols, 2.9 * nrows, nrows, ncols)
    for ax, row in zip(axes.flat, picks):
        image = _read_image(row["path"])
        ax.imshow(image)
        if np.isfinite([row["xmin"], row["ymin"], row["xmax"], row["ymax"]]).all():
            ax.add_patch(Rectangle((row["xmin"], row["ymin"]), row["xmax"] - row["xmin"],
                                   row["ymax"] - row["ymin"], fill=False, edgecolor="red", lw=1.5))
        label = LABELS[int(row["label"])] if np.isfinite(row["label"]) else "?"
        ax.set_title(f"{row['case_id']} ({label})", fontsize=8)
        ax.axis("off")
    for ax in list(axes.flat)[len(picks):]:
        ax.axis("off")
    fig.suptitle(f"Sample {modality} images with wound boxes", fontsize=10)
    fig.tight_layout()
    return fig


def _read_image(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
