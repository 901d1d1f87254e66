"""Training one image CNN (the image branch's inner model) and scoring cases with it.

Early stopping watches case-level QWK on the inner-validation patients (validation loss
breaks ties) and restores the best weights; a case's probability is the mean over its
images.

Speed: training is a custom loop, not ``model.fit``. Each process keeps one *worker* per
architecture (the model's config without its seeds): a copy of the network whose epoch
(shuffled mini-batches, Adam, sparse categorical cross-entropy) and forward pass are
``tf.function``\\ s traced once and reused by every inner model and fold. A training run
copies its freshly built, seeded model's variables (random-seed state included) into the
worker, trains there, validates each epoch with one compiled forward pass over the
validation images (case means, QWK and loss in NumPy), and copies the best epoch's weights
back into the fresh model it returns. :func:`case_probabilities` scores any model through
its architecture's worker the same way.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

import numpy as np

from .._tf import keras, set_seed, tf
from ..metrics import qwk

TRAINER = "compiled_loop_v1"
"""Names the training implementation in the image branch's cache key (settings())."""

_PREDICT_CHUNK = 256   # images per compiled forward call (bounds memory for large inputs)
_MAX_WORKERS = 8


# --------------------------------------------------------------------------- workers


class _Worker:
    """One network per architecture per process, with its compiled epoch and forward pass."""

    def __init__(self, model):
        k = keras()
        self.model = k.models.clone_model(model)
        # An adapted Normalization layer keeps its mean/variance as constant tensors (set by
        # finalize_state), which a traced function would freeze; read the variables instead,
        # so loading another model's statistics reaches the compiled functions.
        for layer in self.model._flatten_layers(include_self=False):
            if isinstance(layer, k.layers.Normalization) and layer.input_mean is None:
                object.__setattr__(layer, "mean", layer.adapt_mean)
                object.__setattr__(layer, "variance", layer.adapt_variance)
        self.variables = list(self.model.variables)
        shapes = [tuple(v.shape) for v in model.variables]
        if shapes != [tuple(v.shape) for v in self.variables]:  # pragma: no cover - defensive
            raise RuntimeError("the worker's variables do not match the model's")
        t = tf()
        self.spec = t.TensorSpec((None, *model.input_shape[1:]), t.float32)
        net = self.model
        self.forward = t.function(lambda x: net(x, training=False), input_signature=[self.spec])
        self._trainers = {}
        # The worker holds one model's weights at a time: a thread training or scoring with
        # it holds the lock (a process running experiments in threads stays correct).
        self.lock = threading.RLock()

    def load(self, model) -> None:
        """Copy every variable of ``model`` (same architecture) into the worker."""
        for target, source in zip(self.variables, model.variables):
            target.assign(source.value)

    def predict(self, x) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, self.model.output_shape[-1]))
        return np.concatenate([self.forward(x[i:i + _PREDICT_CHUNK]).numpy()
                               for i in range(0, len(x), _PREDICT_CHUNK)]).astype(float)

    def trainer(self, learning_rate: float, batch_size: int):
        """``(reset, epoch)``: reset Adam to its start; run one epoch in a given order."""
        key = (float(learning_rate), int(batch_size))
        if key not in self._trainers:
            self._trainers[key] = self._make_trainer(*key)
        return self._trainers[key]

    def _make_trainer(self, learning_rate, batch_size):
        k, t = keras(), tf()
        net = self.model
        optimizer = k.optimizers.Adam(learning_rate)
        optimizer.build(net.trainable_variables)
        start = [v.numpy() for v in optimizer.variables]
        weights = net.trainable_variables
        loss_fn = k.losses.sparse_categorical_crossentropy

        def reset():
            for v, value in zip(optimizer.variables, start):
                v.assign(value)

        @t.function(input_signature=[self.spec, t.TensorSpec((None,), t.int32),
                                     t.TensorSpec((None,), t.int32)])
        def epoch(x, y, order):
            # model.fit's epoch: mini-batches of `batch_size` in `order` (the last one
            # partial), each one Adam step on the mean cross-entropy of the batch.
            n = t.shape(order)[0]
            for begin in t.range(0, n, batch_size):
                idx = order[begin:begin + batch_size]
                with t.GradientTape() as tape:
                    proba = net(t.gather(x, idx), training=True)
                    loss = t.reduce_mean(loss_fn(t.gather(y, idx), proba))
                optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
            return n

        return reset, epoch


_WORKERS: "OrderedDict[str, _Worker]" = OrderedDict()


def _architecture_key(model) -> str:
    """The model's config without initializer/dropout seeds: same key, same network."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "seed"}
        if isinstance(value, (list, tuple)):
            return [strip(v) for v in value]
        return value

    return json.dumps([strip(model.get_config()), str(model.input_shape)], sort_keys=True,
                      default=str)


def _worker_for(model) -> _Worker:
    key = _architecture_key(model)
    worker = _WORKERS.get(key)
    if worker is None:
        worker = _WORKERS[key] = _Worker(model)
        while len(_WORKERS) > _MAX_WORKERS:
            _WORKERS.popitem(last=False)
    else:
        _WORKERS.move_to_end(key)
    return worker


def predict_images(model, images) -> np.ndarray:
    """Class probabilities of ``images`` (float64), one compiled forward pass per chunk."""
    images = np.asarray(images, dtype=np.float32)
    try:
        worker = _worker_for(model)
    except Exception:  # noqa: BLE001 - a model that cannot be cloned: plain eager calls
        return np.concatenate([np.asarray(model(images[i:i + _PREDICT_CHUNK], training=False),
                                          dtype=float)
                               for i in range(0, max(len(images), 1), _PREDICT_CHUNK)])
    with worker.lock:
        worker.load(model)
        return worker.predict(images)


# --------------------------------------------------------------------------- case means


def _case_means(proba, cases, rows) -> np.ndarray:
    """Mean of ``proba`` rows per case of ``rows`` (``cases[i]`` is row i's case); NaN if none."""
    rows = np.asarray(rows)
    out = np.full((len(rows), proba.shape[1] if proba.ndim == 2 else 3), np.nan)
    if len(rows) == 0 or len(cases) == 0:
        return out
    unique, inverse = np.unique(rows, return_inverse=True)
    where = np.searchsorted(unique, cases)
    counts = np.bincount(where, minlength=len(unique)).astype(float)
    sums = np.zeros((len(unique), proba.shape[1]))
    np.add.at(sums, where, proba)
    has = counts > 0
    means = np.full_like(sums, np.nan)
    means[has] = sums[has] / counts[has, None]
    return means[inverse]


def case_probabilities(model, images, image_case, rows, batch_size: int = 64) -> np.ndarray:
    """Mean image probability per case for the cases at ``rows``; NaN where a case has no image.

    One compiled forward pass over the selected images (``batch_size`` is kept for callers;
    the pass goes in chunks of 256 images).
    """
    rows = np.asarray(rows)
    selected = np.isin(image_case, rows)
    if not selected.any():
        return np.full((len(rows), 3), np.nan)
    proba = predict_images(model, images[selected])
    return _case_means(proba, np.asarray(image_case)[selected], rows)


# --------------------------------------------------------------------------- training


class _Validation:
    """Case-level validation: QWK of the case means and their loss, from one forward pass."""

    def __init__(self, images, image_case, y, val_rows):
        self.rows = np.asarray(val_rows)
        selected = np.isin(image_case, self.rows)
        self.x = np.ascontiguousarray(images[selected], dtype=np.float32)
        self.cases = np.asarray(image_case)[selected]
        self.y = y[self.rows]

    def score(self, worker) -> tuple[float, float]:
        """(QWK, -loss): the loss breaks QWK ties (the same rule as before the compiled loop)."""
        proba = _case_means(worker.predict(self.x), self.cases, self.rows)
        score = qwk(self.y, np.nan_to_num(proba).argmax(axis=1))
        ok = ~np.isnan(proba).any(axis=1)
        loss = 0.0
        if ok.any():
            loss = float(-np.mean(np.log(np.clip(proba[ok, self.y[ok]], 1e-7, 1))))
        return score, -loss


def _adapt_normalization(model, x) -> None:
    """Standardise with training-image statistics only (what ``Normalization.adapt`` sets)."""
    for layer in model.layers:
        if isinstance(layer, keras().layers.Normalization) and layer.input_mean is None:
            axes = tuple(i for i in range(x.ndim) if i not in
                         [a % x.ndim for a in (layer.axis if isinstance(layer.axis, (list, tuple))
                                               else (layer.axis,))])
            layer.adapt_mean.assign(x.mean(axis=axes, dtype=np.float64).astype(np.float32))
            layer.adapt_variance.assign(x.var(axis=axes, dtype=np.float64).astype(np.float32))
            layer.finalize_state()


def train_image_classifier(config, modality: str, sampling: str, images, image_case, y, fit_rows,
                           val_rows, random_state=0):
    """Train one CNN on the images of ``fit_rows`` cases; early stopping on ``val_rows`` cases.

    ``config`` is the :class:`fusionlib.branches.image.ImageSettings` (backbone, epochs, ...);
    ``sampling`` the class resampling of the fit cases. Returns ``(model, history)``;
    ``history['val_qwk']`` holds the validation QWK per epoch and ``history['best_epoch']``
    the restored one (1-based), ``best_val_qwk`` its QWK and ``epochs_run`` the epochs trained.
    """
    from ..models import build_image_branch
    from ..splits import resample_training_rows

    set_seed(random_state)
    y = np.asarray(y, dtype=int)
    fit_rows = np.asarray(fit_rows)
    image_case = np.asarray(image_case)
    # Resample at case level, then take every image of each drawn case.
    drawn = fit_rows[resample_training_rows(y[fit_rows], sampling, random_state)]
    image_rows = [np.flatnonzero(image_case == case) for case in drawn]
    idx = np.concatenate(image_rows) if image_rows else np.array([], dtype=int)
    if len(idx) == 0:
        raise ValueError(f"no {modality} images among the training cases")
    x, t = images[idx], y[image_case[idx]]
    if config.augment:  # mirrored copies: deterministic augmentation, no extra randomness
        x, t = np.concatenate([x, x[:, :, ::-1, :]]), np.concatenate([t, t])
    x = np.ascontiguousarray(x, dtype=np.float32)
    model = build_image_branch(modality, images.shape[1:], backbone=config.backbone,
                               weights=config.backbone_weights, random_state=random_state)
    _adapt_normalization(model, x)

    validation = _Validation(images, image_case, y, val_rows)
    order_rng = np.random.default_rng(random_state)   # the shuffle of every epoch
    x_t, t_t = tf().constant(x), tf().constant(t.astype(np.int32))
    worker = _worker_for(model)
    best, best_epoch, best_weights, scores = None, -1, None, []
    with worker.lock:
        worker.load(model)              # the seeded start (weights, statistics, dropout seed)
        reset, run_epoch = worker.trainer(config.learning_rate, config.batch_size)
        reset()
        for epoch in range(config.epochs):
            run_epoch(x_t, t_t, order_rng.permutation(len(x)).astype(np.int32))
            score = validation.score(worker)   # (QWK, -loss): the loss breaks QWK ties
            scores.append(score[0])
            if best is None or score > best:
                best, best_epoch = score, epoch
                best_weights = [v.numpy() for v in worker.model.weights]
            elif epoch - best_epoch >= config.patience:
                break
    model.set_weights(best_weights)      # the best epoch's weights in the fresh model
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras().layers.Normalization):
            layer.finalize_state()
    history = {"val_qwk": [float(s) for s in scores], "best_epoch": best_epoch + 1,
               "best_val_qwk": float(best[0]) if best else 0.0, "epochs_run": len(scores)}
    return model, history
