"""Quiet, lazy access to TensorFlow/Keras.

TensorFlow prints start-up noise (oneDNN notices, CUDA probing) unless these
variables are set *before* its first import, so every fusionlib module gets
Keras through :func:`keras` instead of importing it at module level.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def keras():
    """Return the ``keras`` module (Keras 3 on the TensorFlow backend), imported quietly."""
    import logging

    import keras as _keras

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return _keras


def tf():
    """Return the ``tensorflow`` module, imported quietly."""
    import tensorflow as _tf

    return _tf


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and ask TF for deterministic kernels."""
    k = keras()
    k.utils.set_random_seed(int(seed))
    try:
        tf().config.experimental.enable_op_determinism()
    except Exception:  # noqa: BLE001 - older TF builds lack it; CPU runs are deterministic anyway
        pass
