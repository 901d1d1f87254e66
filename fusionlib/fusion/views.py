"""Keras-free views of a variant's raw weights: the matrix a figure shows.

A variant's layer reports ``raw_weights()`` (what ``weights.json`` stores as ``"raw"``);
its registry entry names a *view* that turns that dictionary into a :class:`Heatmap`.
:func:`fusionlib.fusion.heatmap` (for a layer: ``heatmap(layer.raw_weights())``) and
:func:`fusionlib.plots.fusion_weight_heatmaps` (which only has ``weights.json``, no model, and
must not import TensorFlow) both go through the view,
so no figure picks a matrix by guessing dictionary keys.

Two kinds:

* ``"kernel"``: a learned kernel over the concatenated probabilities; rows are
  modality x input class, columns the layer's outputs (drawn as a heatmap).
* ``"mix"``: the clinical table's share in a convex mix, one column (overall) or one
  per class (drawn as bars against the fixed 0.70 line).

Rows are labelled by :func:`short` modality names. The clinical branch's label is its
model's ("RF", "GB"), which the raw weights do not record: a caller that knows it passes
``names`` to :meth:`~fusionlib.fusion.registry.FusionSpec.heatmap`, which hands the view
a copy of ``raw`` with ``raw["names"]`` (``{modality: label}``); without it the row reads
"clinical".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .options import CLINICAL

SHORT_NAMES = {CLINICAL: "clinical", "thermal_map": "therm"}
"""Short modality names for row labels; the clinical one stands in where the clinical model's
own label (``raw["names"]``) is not given."""


@dataclass(frozen=True)
class Heatmap:
    """A 2-D matrix with its row and column labels, and how to draw it."""

    kind: str                      # "kernel" or "mix"
    matrix: np.ndarray             # (rows, columns)
    rows: list[str]
    cols: list[str]
    block_rows: int = 0            # rows per modality block to separate with lines (0: none)
    modalities: list[str] = field(default_factory=list)


def _labels() -> tuple[str, ...]:
    from ..data import LABELS  # imported late: the registry stays light to import

    return tuple(LABELS)


def short(modality: str, names=None) -> str:
    """The row label of ``modality``: ``names[modality]`` when given, else :data:`SHORT_NAMES`'
    or its first six letters."""
    return (names or {}).get(modality) or SHORT_NAMES.get(modality, modality[:6])


def _input_rows(raw, n_rows: int) -> list[str]:
    """Row labels ``modality:class`` for a kernel fed the concatenated probabilities."""
    names = raw.get("names")
    rows = [f"{short(m, names)}:{c}" for m in raw.get("modalities") or [] for c in _labels()]
    return rows if len(rows) == n_rows else [str(i) for i in range(n_rows)]


def kernel_view(key: str, columns, blocks: bool = False):
    """A view of the kernel stored under ``raw[key]``; ``columns(n_cols)`` labels its
    columns; ``blocks`` draws a line between modalities' row blocks."""

    def view(raw) -> Heatmap:
        matrix = np.asarray(raw[key], dtype=float)
        if matrix.ndim == 1:
            matrix = matrix.reshape(-1, 1)
        modalities = list(raw.get("modalities") or [])
        return Heatmap("kernel", matrix, _input_rows(raw, matrix.shape[0]),
                       list(columns(matrix.shape[1])),
                       block_rows=3 if blocks and len(modalities) > 1 else 0,
                       modalities=modalities)

    return view


def output_columns(n: int) -> list[str]:
    return [f"→{c}" for c in _labels()[:n]]


def hidden_columns(n: int) -> list[str]:
    return [f"h{j}" for j in range(n)]


def gate_columns(n: int) -> list[str]:
    return ["gate"] if n == 1 else [f"gate{j}" for j in range(n)]


def mix_view(raw) -> Heatmap:
    """The first modality's (the clinical table's) weight: ``a_c`` per class when the raw
    weights have it (per-class mixes), else the single weight ``a`` (or ``weights[0]``)."""
    modalities = list(raw.get("modalities") or [])
    first = short(modalities[0], raw.get("names")) if modalities else "0"
    if "a_c" in raw:
        values = np.asarray(raw["a_c"], dtype=float)
    elif "a" in raw:
        values = np.asarray([raw["a"]], dtype=float)
    else:
        values = np.asarray(raw["weights"][0], dtype=float).reshape(-1)
    cols = ["a"] if values.size == 1 else [f"a_{c}" for c in _labels()[: values.size]]
    return Heatmap("mix", values.reshape(1, -1), [first], cols, modalities=modalities)
