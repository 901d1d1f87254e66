"""Figures of what the fusion head learned: the raw fusion weights per fold, the effective
clinical share, and the head's training curve.

Inputs are what an experiment writes (``weights.json`` entries, ``metrics.json`` fold rows,
the head's history); each fusion variant's Keras-free view (:mod:`fusionlib.fusion.views`)
says how to draw its weights. ``clinical`` is the clinical model's short label
(:attr:`fusionlib.results.ClinicalNames.short`: "RF" for the default random forest), which
labels the clinical branch's weights and shares. Re-exported by :mod:`fusionlib.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..data import LABELS
from ..fusion import CLINICAL, FIXED_CLINICAL_WEIGHT, FUSIONS
from .figures import RF_COLOR as _RF_COLOR
from .figures import empty_figure as _empty
from .figures import finite_values as _finite
from .figures import new_figure as _figure

FIXED_CLINICAL_SHARE = FIXED_CLINICAL_WEIGHT
"""The old study's fixed clinical share, drawn as the dashed reference line."""


# --------------------------------------------------------------------------- fusion weights


def fold_label(entry: Mapping, i: int) -> str:
    """A fold's label ("fold 2", "r1 f2", "s0 fold 2") from its ``weights.json`` entry."""
    if "fold" in entry:
        repeat = entry.get("repeat", 0)
        label = f"r{repeat} f{entry['fold']}" if repeat else f"fold {entry['fold']}"
        # A several-seed run has each fold once per seed.
        return f"s{entry['seed']} {label}" if entry.get("seed") is not None else label
    return f"fold {i}"


def weight_view(entry: Mapping, clinical: str = "clinical"):
    """The variant's own view of one fold's raw weights (``fusionlib.fusion.views``; no
    Keras), its clinical rows labelled ``clinical``, or None for a variant this version does
    not know."""
    name = entry.get("fusion") or entry["raw"].get("fusion")
    return FUSIONS[name].heatmap(entry["raw"], {CLINICAL: clinical}) if name in FUSIONS else None


def fusion_weight_heatmaps(weights: Sequence[Mapping], title: str | None = None, ncols: int = 5,
                           clinical: str = "clinical"):
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
    labels = [fold_label(w, i) for i, w in enumerate(weights)]

    views = [weight_view(w, clinical) for w in weights]
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
        ax.set_ylabel(f"{clinical} weight a_c")
    else:
        a = [float(np.mean(v.matrix[0])) for v in views]
        ax.bar(x, a, 0.6, color=_RF_COLOR, label=f"a ({clinical} weight)")
        ax.set_ylabel(f"{clinical} weight a")
    ax.axhline(FIXED_CLINICAL_SHARE, ls="--", color="k", lw=1, label="fixed 0.70")
    ax.set_ylim(0, 1)
    ax.set_xticks(x, labels, fontsize=8, rotation=30 if len(x) > 6 else 0)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def clinical_share(fold_rows: Mapping[str, Sequence[Mapping]] | Sequence[Mapping],
                   title: str | None = None, clinical: str = "clinical"):
    """Effective clinical share, overall and per class, with its spread over folds/repeats.

    ``fold_rows`` is one run's fold rows (``metrics.json["folds"]``) or a mapping
    ``{run name: fold rows}``. Each run gets a bar at the mean with the fold values as
    dots and a +/- SD whisker, for overall, I, P and R; the dashed line is the fixed
    0.70 mix.
    """
    if not isinstance(fold_rows, Mapping):
        fold_rows = {"run": fold_rows}
    keys = [("clinical_share", "overall"), *[(f"clinical_share_{c}", c) for c in LABELS]]
    runs = {}
    for name, rows in fold_rows.items():
        values = [_finite([r.get(k) for r in rows]) for k, _ in keys]
        if any(len(v) for v in values):
            runs[name] = values
    if not runs:
        return _empty(f"no effective {clinical} share (single-modality runs)")
    import matplotlib  # loads with the first figure (see .figures)

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
    ax.axhline(FIXED_CLINICAL_SHARE, ls="--", color="k", lw=1.2, label=f"fixed 70% {clinical}")
    ax.set_xticks(range(len(keys)), [label for _, label in keys])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"effective {clinical} share")
    ax.set_title(title or f"Effective {clinical} share (mean, ±SD, folds as dots)", fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig


SHARE_KEYS = ("overall", *LABELS)


def influence_summary(panels: Sequence[Mapping], ncols: int = 4):
    """What each variant learned, one panel per variant: its clinical influence share (overall
    and per class I / P / R; mean with a ±SD whisker over every fold of every seed) beside the
    fixed mix's on the same cases. ``panels``: mappings with ``title``, ``variant`` and
    ``fixed`` (each {key: values over folds} for the keys of :data:`SHARE_KEYS`; ``fixed``
    may be None)."""
    panels = [p for p in panels if any(len(_finite(p["variant"].get(k, []))) for k in SHARE_KEYS)]
    if not panels:
        return _empty("no clinical influence shares logged (single-modality runs)")
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = _figure(2.75 * ncols + 0.3, 2.1 * nrows + 0.45, nrows, ncols, sharey=True)
    x = np.arange(len(SHARE_KEYS))
    for ax, panel in zip(axes.flat, panels):
        for offset, key, color, label in ((-0.2, "variant", _RF_COLOR, "variant"),
                                          (0.2, "fixed", "0.6", "fixed mix, same cases")):
            shares = panel.get(key)
            if not shares:
                continue
            values = [_finite(shares.get(k, [])) for k in SHARE_KEYS]
            means = [v.mean() if len(v) else np.nan for v in values]
            sds = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in values]
            ax.bar(x + offset, means, 0.38, color=color, label=label)
            ax.errorbar(x + offset, means, yerr=sds, fmt="none", ecolor="k", capsize=2, lw=0.8)
        ax.set_title(panel["title"], fontsize=8)
        ax.set_xticks(x, SHARE_KEYS, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylim(0, 1.05)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel("clinical influence share", fontsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


# --------------------------------------------------------------------------- head training


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
