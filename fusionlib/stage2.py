"""Stage 2 (optional): fine-tune the inner CNNs and the fusion head end to end.

Kept only if the inner-validation QWK improves (docs/protocol.md). TensorFlow is
imported only when Stage 2 runs, so :class:`Stage2Settings` validates without it.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ._tf import keras, set_seed
from .fusion.options import CLINICAL
from .metrics import qwk
from .settings import Settings


class Stage2Settings(Settings):
    """Section ``stage2``: end-to-end fine-tuning of CNNs and head after Stage 1."""

    enabled: bool = Field(False, description=(
        "fine-tune CNNs and head together, kept only if validation QWK improves (docs/protocol.md); "
        "needs the metadata branch and exactly one image modality (validation refuses others)"))
    epochs: int = Field(10, ge=1, description="fine-tuning epochs")
    learning_rate: float = Field(1e-4, gt=0, description="fine-tuning learning rate (Adam)")


def refresh_normalization(model) -> None:
    """Make every Normalization layer inside ``model`` use its (just set) mean and variance.

    ``set_weights`` writes the statistics into the layer's variables, but the layer keeps
    standardising with the values it derived when it was built (0 and 1 for a clone) until
    ``finalize_state`` recomputes them.
    """
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras().layers.Normalization):
            layer.finalize_state()
        elif getattr(layer, "layers", None):
            refresh_normalization(layer)


def build_end_to_end(head, cnn_models, image_shape, image_modality: str):
    """Functional model: (clinical probabilities, image) -> each inner CNN -> the fusion head ->
    mean.

    The inner CNNs are cloned with their weights, so fine-tuning never changes
    the cached Stage-1 models.
    """
    k = keras()
    p_meta = k.Input(shape=(3,), name="metadata_input")
    image = k.Input(shape=tuple(image_shape), name=f"{image_modality}_input")
    clones = []
    for i, model in enumerate(cnn_models):
        clone = k.models.clone_model(model)
        clone.set_weights(model.get_weights())
        refresh_normalization(clone)
        clone.name = f"{image_modality}_cnn{i}"
        clones.append(clone(image))
    head_copy = k.models.clone_model(head)
    head_copy.set_weights(head.get_weights())
    # Each CNN's probabilities go through the (shared) head, then the fused outputs are
    # averaged: the same rule as Stage 1's test-time fusion (experiment.fuse_per_model).
    fused = [head_copy([p_meta, p]) for p in clones]
    fused = fused[0] if len(fused) == 1 else k.layers.Average(name="fused_ensemble")(fused)
    return k.Model([p_meta, image], fused, name="end_to_end"), head_copy


def fine_tune_end_to_end(head, cnn_models, images, image_case, meta_proba: dict, y, fit_rows, val_rows,
                         image_modality: str, epochs: int = 10, learning_rate: float = 1e-4,
                         batch_size: int = 32, random_state: int = 0):
    """Stage 2: fine-tune CNNs and fusion head together at a low learning rate.

    ``meta_proba`` maps a case position to its (out-of-fold) clinical probabilities.
    Every image of a fit case is one training row. Returns the end-to-end model,
    its fused head, and case-level validation QWK per epoch (epoch 0 = Stage 1),
    so the caller keeps Stage 2 only if validation QWK improves.
    """
    set_seed(random_state)
    y = np.asarray(y, dtype=int)
    model, fused_head = build_end_to_end(head, cnn_models, images.shape[1:], image_modality)

    def rows_of(cases):
        keep = np.isin(image_case, [c for c in cases if c in meta_proba])
        idx = np.flatnonzero(keep)
        return idx, np.stack([meta_proba[c] for c in image_case[idx]]).astype("float32")

    fit_idx, fit_meta = rows_of(fit_rows)
    val_idx, val_meta = rows_of(val_rows)

    def val_qwk():
        if not len(val_idx):
            return 0.0
        proba = np.asarray(model([val_meta, images[val_idx]], training=False))
        cases = image_case[val_idx]
        order = np.unique(cases)
        mean = np.stack([proba[cases == c].mean(axis=0) for c in order])
        return qwk(y[order], mean.argmax(axis=1))

    model.compile(optimizer=keras().optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")
    scores, best, best_weights = [val_qwk()], 0, model.get_weights()
    for epoch in range(1, epochs + 1):
        model.fit([fit_meta, images[fit_idx]], y[image_case[fit_idx]], epochs=1, batch_size=batch_size,
                  shuffle=True, verbose=0)
        scores.append(val_qwk())
        if scores[-1] > scores[best]:
            best, best_weights = epoch, model.get_weights()
    model.set_weights(best_weights)
    refresh_normalization(model)
    return model, fused_head, {"val_qwk": scores, "best_epoch": best}


def run_stage2(cohort, params, fold, head, outputs: dict, fit_rows, val_rows, test_rows,
               stage1_proba, log) -> dict:
    """Optional Stage 2: end-to-end fine-tuning, kept only if inner-validation QWK improves.

    Needs the metadata branch and exactly one image modality. The comparison is
    between the end-to-end model before (epoch 0) and after fine-tuning, on the
    inner-validation patients; note that the inner CNNs saw some of those
    patients while cross-fitting, so both numbers are optimistic alike.
    """
    from .images import cohort_image_arrays

    images_only = [m for m in params.data.modalities if m != CLINICAL]
    models = outputs[images_only[0]].models if len(images_only) == 1 else []
    if CLINICAL not in params.data.modalities or len(images_only) != 1 or not models:
        log("Stage 2 skipped: it needs the metadata branch, one image modality and its CNNs")
        return {"kept": False, "scores": {"stage2_val_qwk": None, "stage2_kept": False}}
    modality = images_only[0]
    images, image_case = cohort_image_arrays(cohort, modality, size=params.image.size,
                                             margin=params.image.crop_margin)
    clinical = outputs[CLINICAL]
    meta = {int(r): p for r, p in zip(clinical.train_index, clinical.train_proba)}
    meta.update({int(r): p for r, p in zip(clinical.test_index, clinical.test_proba)})
    cnns = [m.get() if hasattr(m, "get") else m for m in models]
    model, tuned_head, history = fine_tune_end_to_end(
        head, cnns, images, image_case, meta, cohort.y, fit_rows, val_rows, modality,
        epochs=params.stage2.epochs, learning_rate=params.stage2.learning_rate,
        random_state=params.protocol.seed + fold.index)
    before, after = history["val_qwk"][0], max(history["val_qwk"])
    kept = history["best_epoch"] > 0
    log(f"Stage 2 validation QWK {before:.3f} -> {after:.3f} ({'kept' if kept else 'discarded'})")
    scores = {"stage2_val_qwk_before": before, "stage2_val_qwk": after, "stage2_kept": kept}
    if not kept:
        return {"kept": False, "scores": scores}
    proba = stage1_proba.copy()
    has_image = np.isin(test_rows, image_case)
    rows = test_rows[has_image]
    idx = np.flatnonzero(np.isin(image_case, rows))
    fused = np.asarray(model([np.stack([meta[int(c)] for c in image_case[idx]]).astype("float32"),
                              images[idx]], training=False))
    for j, row in zip(np.flatnonzero(has_image), rows):
        proba[j] = fused[image_case[idx] == row].mean(axis=0)
    return {"kept": True, "scores": scores, "head": tuned_head, "proba": proba, "history": history}
