"""The learned-weight analysis: raw fusion weights, the sensitivity (effective clinical) share and
the influence share.

Raw weights (:func:`raw_fusion_weights`) are not comparable across variants --
a ``trainable`` kernel, a convex ``a`` and an MLP mean different things -- and
even within ``trainable`` they are not identifiable: every modality's
probabilities sum to 1, so adding a constant to all of a modality's kernel
entries (or to all logits) changes nothing.  The *effective share* reads every
fusion head on the same scale, from its behaviour on real probability rows:

For each row and each modality ``m``, take the Jacobian ``J_m = d fused / d p_m``
(3x3) of the fusion head with respect to that modality's probability vector,
and project both sides onto the tangent space of the probability simplex,
``P = I - 11^T / 3``, ``Jt_m = P J_m P``.  The projection removes what the head
cannot see or produce: moving ``p_m`` off the simplex (along ``1``), a constant
added to all logits, or to a modality's kernel rows.  Then

    share_m = mean_rows ||Jt_m||_F / sum_m' mean_rows ||Jt_m'||_F

and per class ``c`` the same with the L2 norm of row ``c`` of ``Jt_m`` (how much
fused class ``c`` moves with modality ``m``).  The clinical share is the share of
``"metadata"`` (:data:`fusionlib.fusion.CLINICAL`).  For ``fixed`` with weights ``w`` this is
exactly ``w_m``
(``Jt_m = w_m P``), for ``convex`` it is the learned ``a``, and a head that
ignores the images reads 1.0.  Jacobians of a linear-softmax head (``trainable``,
``trainable_rf_biased``: ``s = softmax(sum_m p_m K_m + b)``) are exact float64 NumPy,
``J_m = (diag(s) - s s^T) K_m^T``; every other head's come from
``tf.GradientTape.batch_jacobian`` (vectorised), so a few thousand rows take well under a
second.
"""

from __future__ import annotations

import json

import numpy as np

from .. import fusion as _fusion
from .._tf import tf
from ..head.objective import linear_softmax, strip_seeds
from ..models import extract_fusion_head

_P = np.eye(3) - np.ones((3, 3)) / 3.0


def _head_inputs(head, probs) -> tuple[list[str], list[np.ndarray]]:
    if not isinstance(probs, dict):
        raise ValueError(f"probs must be a dict {{modality: (n, 3) array}}, got "
                         f"{type(probs).__name__}")
    modalities = _fusion.model_modalities(head)
    missing = [m for m in modalities if m not in probs]
    extra = sorted(set(probs) - set(modalities))
    if missing or extra:
        raise ValueError(f"probs has modalities {sorted(probs)}; the head expects "
                         f"{modalities} (missing {missing}, unexpected {extra})")
    arrays, n = [], None
    for m in modalities:
        a = np.asarray(probs[m], dtype="float32")
        if a.ndim != 2 or a.shape[1] != 3:
            raise ValueError(f"probs[{m!r}] must have shape (n, 3), got {a.shape}")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise ValueError(f"probs arrays must have the same number of rows; "
                             f"{modalities[0]!r} has {n}, {m!r} has {a.shape[0]}")
        arrays.append(a)
    if n == 0:
        raise ValueError("probs has no rows")
    return modalities, arrays


def modality_jacobians(head, probs: dict) -> dict[str, np.ndarray]:
    """``{modality: (n, 3, 3)}`` Jacobians ``d fused / d p_m`` of ``head`` at the given rows.

    Computed by a TensorFlow function traced once per head architecture in the process and
    fed each head's weights (:func:`_jacobian_function`): a fold explains three heads of
    the same architecture, a run many folds, and an eager ``batch_jacobian`` costs about a
    quarter of a second each time.
    """
    head = extract_fusion_head(head)
    modalities, arrays = _head_inputs(head, probs)
    dense = _fusion.linear_softmax_dense(head)
    if dense is not None:
        return dict(zip(modalities, _linear_softmax_jacobians(dense, arrays)))
    T = tf()
    function = _jacobian_function(head, len(arrays))
    jac = function([v.value for v in head.trainable_variables],
                   [v.value for v in head.non_trainable_variables],
                   [T.constant(a, T.float32) for a in arrays])
    return {m: np.asarray(j, dtype="float64") for m, j in zip(modalities, jac)}


def _linear_softmax_jacobians(dense, arrays: list) -> list[np.ndarray]:
    """``d s / d p_m = (diag(s) - s s^T) K_m^T`` per row, ``s = softmax(concat(p) K + b)``, in
    float64 (``K_m``: the kernel's 3 rows of modality ``m``). Exact, and no TensorFlow function
    to trace: the traced one costs half a second once and ~0.08 s for every new number of rows
    (each fold's), most of what the weight analysis of a ``trainable`` run takes."""
    kernel, bias = (np.asarray(w, dtype="float64") for w in dense.get_weights())
    s = linear_softmax(np.hstack([np.asarray(a, dtype="float64") for a in arrays]), kernel, bias)
    softmax_jac = s[:, :, None] * np.eye(3) - s[:, :, None] * s[:, None, :]   # (n, 3, 3)
    blocks = [kernel[3 * i: 3 * (i + 1)] for i in range(len(arrays))]
    return [softmax_jac @ block.T for block in blocks]


_JACOBIANS: dict = {}
"""Traced Jacobian functions by head architecture (config without seeds, weight shapes)."""


def _jacobian_function(head, n_inputs: int):
    T = tf()
    key = json.dumps({"class": type(head).__name__, "config": strip_seeds(head.get_config()),
                      "trainable": [(v.path, list(v.shape)) for v in head.trainable_variables],
                      "non_trainable": [(v.path, list(v.shape))
                                        for v in head.non_trainable_variables],
                      "inputs": n_inputs}, sort_keys=True, default=str)
    if key not in _JACOBIANS:
        spec = [T.TensorSpec(tuple(v.shape), v.dtype) for v in head.trainable_variables]
        fixed = [T.TensorSpec(tuple(v.shape), v.dtype) for v in head.non_trainable_variables]

        @T.function(autograph=False, input_signature=[spec, fixed,
                                                      [T.TensorSpec([None, 3], T.float32)] * n_inputs])
        def jacobians(trainable, non_trainable, xs):
            with T.GradientTape(persistent=True) as tape:
                for x in xs:
                    tape.watch(x)
                out, _ = head.stateless_call(list(trainable), list(non_trainable), list(xs),
                                             training=False)
            return [tape.batch_jacobian(out, x) for x in xs]

        _JACOBIANS[key] = jacobians
    return _JACOBIANS[key]


def _shares(overall_norm: dict, class_norm: dict, n_rows: int) -> dict:
    """Normalise per-modality magnitudes into shares (the return shape of both share kinds)."""
    modalities = list(overall_norm)
    total = sum(overall_norm.values())
    class_total = sum(class_norm.values())
    per_modality = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for m in modalities:
            overall = overall_norm[m] / total if total > 0 else np.nan
            per_class = np.where(class_total > 0, class_norm[m] / class_total, np.nan)
            per_modality[m] = {"overall": float(overall),
                               "per_class": [float(v) for v in per_class]}
    clinical = per_modality.get(_fusion.CLINICAL)
    return {"overall": clinical["overall"] if clinical else None,
            "per_class": list(clinical["per_class"]) if clinical else None,
            "per_modality": per_modality, "modalities": modalities, "n_rows": int(n_rows)}


def influence_share(head, probs: dict, jacobians: dict | None = None, n_models: int = 1) -> dict:
    """How much of the fused output's variation across the given rows comes from each modality.

    The sensitivity share (:func:`effective_clinical_share`) is a derivative per unit of
    probability; a branch whose probabilities barely vary from case to case moves the
    output little however large its derivative. The influence share weighs the derivative
    by how far each row's branch probabilities are from their mean over the rows:
    ``c_m,i = Jt_m,i (p_m,i - mean_m)`` is the first-order part of the output's deviation
    due to modality ``m`` at row ``i``, and

        influence_m = mean_i ||c_m,i|| / sum_m' mean_i ||c_m',i||

    (per class: ``|c_m,i[c]|``). A branch that is constant over the rows has influence 0;
    ``fixed`` 70/30 reads 0.70 only when both branches vary equally. Same return shape as
    :func:`effective_clinical_share`.

    ``n_models > 1``: the rows are ``n_models`` blocks of the same cases, one per inner model
    of a branch (model-major), whose fused outputs are averaged at test time. The
    contributions are then averaged over the blocks before their norm is taken, so
    disagreement between inner models, which the averaged output never shows, does not count
    as influence.
    """
    jac = jacobians if jacobians is not None else modality_jacobians(head, probs)
    overall_norm, class_norm = {}, {}
    for m, j in jac.items():
        p = np.asarray(probs[m], dtype=float)
        deviation = p - p.mean(axis=0)
        jt = np.einsum("ab,nbc,cd->nad", _P, j, _P)
        c = np.einsum("nab,nb->na", jt, deviation)
        c = c.reshape(n_models, -1, c.shape[1]).mean(axis=0)
        overall_norm[m] = float(np.linalg.norm(c, axis=1).mean())
        class_norm[m] = np.abs(c).mean(axis=0)
    return _shares(overall_norm, class_norm, next(iter(jac.values())).shape[0] // n_models)


def effective_clinical_share(head, probs: dict, jacobians: dict | None = None) -> dict:
    """The effective share of each modality in ``head``'s fused output (module docstring).

    ``head`` is a fusion head (or a multimodal model, whose fusion block is read through
    :func:`fusionlib.models.extract_fusion_head`); ``probs`` maps each of its modalities to
    an (n, 3) probability array.  Returns ``overall`` and ``per_class`` (3 floats) for the
    clinical branch (``"metadata"``) -- None for heads without it -- plus ``per_modality``
    ``{m: {"overall", "per_class"}}``, ``modalities`` and ``n_rows``.  A modality's share
    is NaN where no modality moves the output at all.
    """
    jac = jacobians if jacobians is not None else modality_jacobians(head, probs)
    overall_norm, class_norm = {}, {}
    for m, j in jac.items():
        jt = np.einsum("ab,nbc,cd->nad", _P, j, _P)
        overall_norm[m] = float(np.linalg.norm(jt, axis=(1, 2)).mean())
        class_norm[m] = np.linalg.norm(jt, axis=2).mean(axis=0)  # (3,)
    return _shares(overall_norm, class_norm, next(iter(jac.values())).shape[0])


def raw_fusion_weights(head, fusion_name=None) -> dict:
    """The fusion layer's raw learned weights as plain lists (its ``raw_weights()``);
    ``fusion_name``, when given, must be the variant the model holds."""
    if fusion_name is not None:
        _fusion.get_fusion(fusion_name)  # an unknown name fails with a suggestion
    layer = _fusion.fusion_layer(head)
    if fusion_name is not None and layer.variant != fusion_name:
        raise ValueError(f"model {head.name!r} holds a {layer.variant!r} fusion layer, "
                         f"not {fusion_name!r}")
    return layer.raw_weights()
