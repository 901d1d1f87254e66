"""Training one image CNN (the image branch's inner model) and scoring cases with it.

Early stopping watches case-level QWK on the inner-validation patients and restores the
best weights; a case's probability is the mean over its images.
"""

from __future__ import annotations

import numpy as np

from .._tf import keras, set_seed
from ..metrics import qwk


def case_probabilities(model, images, image_case, rows, batch_size: int = 64) -> np.ndarray:
    """Mean image probability per case for the cases at ``rows``; NaN where a case has no image."""
    rows = np.asarray(rows)
    out = np.full((len(rows), 3), np.nan)
    selected = np.isin(image_case, rows)
    if not selected.any():
        return out
    # Direct calls, not model.predict: predict's per-call set-up dominates on small arrays.
    chosen = images[selected]
    proba = np.concatenate([np.asarray(model(chosen[i:i + 256], training=False), dtype=float)
                            for i in range(0, len(chosen), 256)])
    cases = image_case[selected]
    where = {row: i for i, row in enumerate(rows)}
    sums = np.zeros((len(rows), 3))
    counts = np.zeros(len(rows))
    for case, p in zip(cases, proba):
        sums[where[case]] += p
        counts[where[case]] += 1
    has = counts > 0
    out[has] = sums[has] / counts[has, None]
    return out


class _CaseQWKStopping:
    """Early stopping on inner-validation QWK at case level, restoring the best weights."""

    def __init__(self, images, image_case, y, val_rows, patience, batch_size):
        self.score = lambda model: (qwk(y[val_rows], np.nan_to_num(case_probabilities(
            model, images, image_case, val_rows, batch_size)).argmax(axis=1)),
            -_case_loss(model, images, image_case, y, val_rows, batch_size))
        self.patience = patience

    def callback(self):
        outer = self

        class Callback(keras().callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.best, self.best_epoch, self.weights, self.scores = None, -1, None, []

            def on_epoch_end(self, epoch, logs=None):
                score = outer.score(self.model)  # (QWK, -loss): loss breaks QWK ties
                self.scores.append(score[0])
                if self.best is None or score > self.best:
                    self.best, self.best_epoch, self.weights = score, epoch, self.model.get_weights()
                elif epoch - self.best_epoch >= outer.patience:
                    self.model.stop_training = True

            def on_train_end(self, logs=None):
                if self.weights is not None:
                    self.model.set_weights(self.weights)

        return Callback()


def _case_loss(model, images, image_case, y, rows, batch_size):
    proba = case_probabilities(model, images, image_case, rows, batch_size)
    ok = ~np.isnan(proba).any(axis=1)
    if not ok.any():
        return 0.0
    picked = np.clip(proba[ok, y[rows][ok]], 1e-7, 1)
    return float(-np.mean(np.log(picked)))


def train_image_classifier(config, modality: str, sampling: str, images, image_case, y, fit_rows,
                           val_rows, random_state=0):
    """Train one CNN on the images of ``fit_rows`` cases; early stopping on ``val_rows`` cases.

    ``config`` is the :class:`fusionlib.branches.image.ImageSettings` (backbone, epochs, ...);
    ``sampling`` the class resampling of the fit cases. Returns ``(model, history)``;
    ``history['val_qwk']`` holds the validation QWK per epoch and ``history['best_epoch']``
    the restored one.
    """
    from ..models import build_image_branch
    from ..splits import resample_training_rows

    set_seed(random_state)
    y = np.asarray(y, dtype=int)
    fit_rows = np.asarray(fit_rows)
    # Resample at case level, then take every image of each drawn case.
    drawn = fit_rows[resample_training_rows(y[fit_rows], sampling, random_state)]
    image_rows = [np.flatnonzero(image_case == case) for case in drawn]
    idx = np.concatenate(image_rows) if image_rows else np.array([], dtype=int)
    if len(idx) == 0:
        raise ValueError(f"no {modality} images among the training cases")
    x, t = images[idx], y[image_case[idx]]
    if config.augment:  # mirrored copies: deterministic augmentation, no extra randomness
        x, t = np.concatenate([x, x[:, :, ::-1, :]]), np.concatenate([t, t])
    model = build_image_branch(modality, images.shape[1:], backbone=config.backbone,
                               weights=config.backbone_weights, random_state=random_state)
    for layer in model.layers:  # standardise with training-image statistics only
        if isinstance(layer, keras().layers.Normalization):
            layer.adapt(x)
    model.compile(optimizer=keras().optimizers.Adam(config.learning_rate),
                  loss="sparse_categorical_crossentropy")
    stopper = _CaseQWKStopping(images, image_case, y, np.asarray(val_rows), config.patience,
                               config.batch_size).callback()
    model.fit(x, t, epochs=config.epochs, batch_size=config.batch_size, shuffle=True,
              verbose=0, callbacks=[stopper])
    history = {"val_qwk": [float(s) for s in stopper.scores], "best_epoch": stopper.best_epoch + 1,
               "best_val_qwk": float(stopper.best[0]) if stopper.best else 0.0,
               "epochs_run": len(stopper.scores)}
    return model, history
