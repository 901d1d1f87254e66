"""Matplotlib figures for the notebooks and the report.

Every function returns a :class:`matplotlib.figure.Figure` (and never calls
``plt.show``), so the same figure can be displayed inline, saved or embedded.
Inputs are the plain data structures an experiment writes (``metrics.json``
fold rows, ``weights.json`` entries, ``predictions.csv`` columns) or the
DataFrames of :mod:`fusionlib.report`, so no figure needs a Keras model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .data import LABELS
from .fusion import FIXED_CLINICAL_WEIGHT, FUSIONS

FIXED_RF_SHARE = FIXED_CLINICAL_WEIGHT
"""The old study's fixed RF share, drawn as the dashed reference line."""

_RF_COLOR = "#1f77b4"
_IMG_COLOR = "#ff7f0e"


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs):
    """A pyplot-free Figure (no global state, never auto-shown twice in notebooks)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _empty(message: str, width: float = 5, height: float = 1.6):
    fig, axes = _figure(width, height)
    ax = axes[0, 0]
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="0.35",
            transform=ax.transAxes, wrap=True)
    return fig


def _finite(values) -> np.ndarray:
    array = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return array[np.isfinite(array)]


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


# --------------------------------------------------------------------------- fusion weights


def _fold_label(entry: Mapping, i: int) -> str:
    if "fold" in entry:
        repeat = entry.get("repeat", 0)
        return f"r{repeat} f{entry['fold']}" if repeat else f"fold {entry['fold']}"
    return f"fold {i}"


def _heatmap(entry: Mapping):
    """The variant's own view of one fold's raw weights (``fusionlib.fusion.views``; no
    Keras), or None for a variant this version does not know."""
    name = entry.get("fusion") or entry["raw"].get("fusion")
    return FUSIONS[name].heatmap(entry["raw"]) if name in FUSIONS else None


def fusion_weight_heatmaps(weights: Sequence[Mapping], title: str | None = None, ncols: int = 5):
    """The raw learned fusion weights of every fold.

    ``weights`` is the list in ``weights.json`` (one entry per fold with ``fusion``
    and ``raw``); each variant's registry view says what to draw. Kernel views
    (``trainable``, ``trainable_rf_biased``, ``gated``, ``mlp`` input layer) get one heatmap
    per fold (rows: modality x input class, columns: output); mix views (``convex``,
    ``per_class_convex``, ``fixed``) get bars of the clinical weight ``a`` (or ``a_c`` per
    class) per fold, with the dashed fixed 0.70 line.
    """
    weights = [w for w in weights if isinstance(w, Mapping) and w.get("raw")]
    if not weights:
        return _empty("no fusion weights recorded")
    fusion = weights[0].get("fusion") or weights[0]["raw"].get("fusion", "?")
    title = title or f"{fusion}: learned fusion weights per fold"
    raws = [w["raw"] for w in weights]
    labels = [_fold_label(w, i) for i, w in enumerate(weights)]

    views = [_heatmap(w) for w in weights]
    if any(v is None for v in views):
        return _empty(f"no view of the fusion weights of {fusion!r}")
    if all(v.kind == "kernel" for v in views):
        ncols = max(1, min(ncols, len(views)))
        nrows = math.ceil(len(views) / ncols)
        n_out = views[0].matrix.shape[1]
        cell_w = 0.38 * max(n_out, 3) + 1.3
        fig, axes = _figure(cell_w * ncols + 0.8, 0.32 * views[0].matrix.shape[0] * nrows + 1.1 * nrows,
                            nrows, ncols)
        limit = max(float(np.max(np.abs(v.matrix))) for v in views) or 1.0
        image = None
        for k, (ax, view) in enumerate(zip(axes.flat, views)):
            matrix, rows, cols = view.matrix, view.rows, view.cols
            image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
            ax.set_title(labels[k], fontsize=9)
            ax.set_xticks(range(len(cols)), cols if len(cols) <= 6 else [""] * len(cols),
                          fontsize=8)
            ax.set_yticks(range(len(rows)), rows if k % ncols == 0 else [""] * len(rows),
                          fontsize=8)
            if matrix.size <= 30:
                for (i, j), v in np.ndenumerate(matrix):
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(v) > 0.6 * limit else "black")
            if view.block_rows:
                for b in range(1, len(view.modalities)):
                    ax.axhline(view.block_rows * b - 0.5, color="k", lw=1)
        for ax in list(axes.flat)[len(views):]:
            ax.axis("off")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        if image is not None:
            fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label="weight")
        return fig

    # Mix views: the clinical weight a (one per fold), or a_c (one per class and fold).
    fig, axes = _figure(max(5.5, 0.9 * len(raws) + 3.5), 3.0)
    ax = axes[0, 0]
    x = np.arange(len(raws))
    if all(v.matrix.shape[1] == len(LABELS) for v in views):
        a_c = np.vstack([v.matrix[0] for v in views])
        width = 0.8 / a_c.shape[1]
        for c in range(a_c.shape[1]):
            ax.bar(x + (c - (a_c.shape[1] - 1) / 2) * width, a_c[:, c], width,
                   label=f"a_{LABELS[c]}")
        ax.set_ylabel("RF weight a_c")
    else:
        a = [float(np.mean(v.matrix[0])) for v in views]
        ax.bar(x, a, 0.6, color=_RF_COLOR, label="a (RF weight)")
        ax.set_ylabel("RF weight a")
    ax.axhline(FIXED_RF_SHARE, ls="--", color="k", lw=1, label="fixed 0.70")
    ax.set_ylim(0, 1)
    ax.set_xticks(x, labels, fontsize=8, rotation=30 if len(x) > 6 else 0)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def rf_share(fold_rows: Mapping[str, Sequence[Mapping]] | Sequence[Mapping], title: str | None = None):
    """Effective RF share, overall and per class, with its spread over folds/repeats.

    ``fold_rows`` is one run's fold rows (``metrics.json["folds"]``) or a mapping
    ``{run name: fold rows}``. Each run gets a bar at the mean with the fold values as
    dots and a +/- SD whisker, for overall, I, P and R; the dashed line is the fixed
    0.70 mix.
    """
    if not isinstance(fold_rows, Mapping):
        fold_rows = {"run": fold_rows}
    keys = [("rf_share", "overall"), *[(f"rf_share_{c}", c) for c in LABELS]]
    runs = {}
    for name, rows in fold_rows.items():
        values = [_finite([r.get(k) for r in rows]) for k, _ in keys]
        if any(len(v) for v in values):
            runs[name] = values
    if not runs:
        return _empty("no effective RF share (single-modality runs)")
    import matplotlib

    fig, axes = _figure(min(11.0, 5.0 + 0.9 * len(runs)), 3.4)
    ax = axes[0, 0]
    width = 0.8 / len(runs)
    colors = matplotlib.colormaps["tab10"]
    rng = np.random.default_rng(0)
    for k, (name, values) in enumerate(runs.items()):
        centers = np.arange(len(keys)) + (k - (len(runs) - 1) / 2) * width
        means = [v.mean() if len(v) else np.nan for v in values]
        sds = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in values]
        ax.bar(centers, means, width * 0.9, color=colors(k % 10), alpha=0.55, label=name)
        ax.errorbar(centers, means, yerr=sds, fmt="none", ecolor="k", capsize=3, lw=1)
        for c, v in zip(centers, values):
            ax.scatter(c + rng.uniform(-width * 0.2, width * 0.2, len(v)), v, s=12,
                       color=colors(k % 10), edgecolor="k", linewidth=0.4, zorder=3)
    ax.axhline(FIXED_RF_SHARE, ls="--", color="k", lw=1.2, label="fixed 70% RF")
    ax.set_xticks(range(len(keys)), [label for _, label in keys])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("effective RF share")
    ax.set_title(title or "Effective RF share (mean, ±SD, folds as dots)", fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
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


# --------------------------------------------------------------------------- calibration


def reliability_diagram(curves: Mapping[str, tuple], title: str | None = None, n_bins: int = 10):
    """Reliability diagram of several probability sources on the same cases.

    ``curves`` maps a name to ``(y_true, proba)``; the legend gives each source's
    Brier score and ECE. Marker size follows the number of cases in the bin.
    """
    from .metrics import brier_score, expected_calibration_error, reliability_curve

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
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def training_curve(history: Mapping, title: str | None = None):
    """Fusion-head training: train and validation loss per evaluated epoch, best epoch marked."""
    epochs = history.get("epoch") or []
    if not epochs:
        return _empty(f"no head training ({history.get('stopped', 'nothing to train')})")
    fig, axes = _figure(5.0, 3.0)
    ax = axes[0, 0]
    ax.plot(epochs, history.get("train_loss", []), label="train loss")
    if history.get("val_loss"):
        ax.plot(epochs, history["val_loss"], label="validation loss")
    if history.get("best_epoch"):
        ax.axvline(history["best_epoch"], ls="--", color="k", lw=1, label="best epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.set_title(title or "Fusion head training", fontsize=10)
    fig.tight_layout()
    return fig


def to_base64_png(fig, dpi: int = 100) -> str:
    """The figure as a base64 PNG string (for ``<img src="data:image/png;base64,...">``)."""
    import base64
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def show_figure(fig, alt: str, dpi: int = 100) -> None:
    """Display ``fig`` in a notebook with alt text (an ``<img alt=...>``), not a bare PNG.

    The output carries the HTML (what JupyterLab and nbconvert render, so reports
    converted from executed notebooks have no image without a description) and
    the PNG itself (for tools that read ``image/png`` outputs).
    """
    from IPython.display import display

    from .report import figure_html

    png = to_base64_png(fig, dpi=dpi)
    display({"text/html": figure_html(fig, alt, png=png), "image/png": png}, raw=True,
            metadata={"image/png": {"alt": alt}})
