"""Branch probabilities on disk, keyed by data, fold and branch settings.

Experiments that differ only in the fusion head read the same entries, so the branches
are trained once per (data fingerprint, data percentage, fold, seed, branch settings).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import zipfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from .._io import atomic_open, file_lock, jsonable, note
from .base import BranchOutput

logger = logging.getLogger("fusionlib")


class BranchCache:
    """Branch probabilities on disk, one ``.npz`` per key, written atomically.

    ``directory=None`` disables caching. Hits and misses are counted so a
    benchmark can show what was reused.
    """

    def __init__(self, directory: str | Path | None):
        self.directory = None if directory is None else Path(directory)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(**parts) -> str:
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def get_or_compute(self, key: str, compute) -> BranchOutput:
        # One process computes an entry; a concurrent one (a second `fusionlib run` on the same
        # cache) waits for it and then reads it instead of training the same branch again.
        with nullcontext() if self.directory is None else file_lock(self.directory / f".{key}.lock"):
            return self._get_or_compute(key, compute)

    def _get_or_compute(self, key: str, compute) -> BranchOutput:
        path = None if self.directory is None else self.directory / f"{key}.npz"
        if path is not None and path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    out = BranchOutput(data["train_index"], data["test_index"],
                                       data["train_proba"], data["test_proba"],
                                       json.loads(str(data["info"])),
                                       test_proba_models=(data["test_proba_models"]
                                                          if "test_proba_models" in data else None))
                out.models = self._load_models(key, int(out.info.get("n_models", 0)))
                self.hits += 1
                return out
            except _CACHE_READ_ERRORS as err:  # unreadable entry (or one of its models): recompute
                logger.warning("branch cache entry %s is unreadable (%s: %s); recomputing it",
                               path, type(err).__name__, " ".join(str(err).split())[:120])
                note(f"branch cache entry {path} was unreadable ({type(err).__name__}); recomputed")
                path.unlink(missing_ok=True)
                for stale in self.directory.glob(f"{key}_model*.keras"):
                    stale.unlink(missing_ok=True)
        self.misses += 1
        out = compute()
        if path is not None:
            # An image-only experiment saves models before any .npz creates the folder.
            self.directory.mkdir(parents=True, exist_ok=True)
            # Models first, the .npz last: an entry counts only once everything is on disk.
            for k, model in enumerate(out.models):
                final = self.directory / f"{key}_model{k}.keras"
                staged = self.directory / f".{key}_model{k}.tmp.keras"
                model.save(staged)
                os.replace(staged, final)
            out.info["n_models"] = len(out.models)
            with atomic_open(path, "wb") as handle:
                np.savez(handle, info=np.array(json.dumps(jsonable(out.info))), **out.to_arrays())
        return out

    def _load_models(self, key: str, n_models: int) -> list:
        """The inner CNNs saved with an entry, loaded only when Stage 2 asks for them.

        Each file is checked now (a readable zip holding a Keras config), so a missing,
        truncated or empty ``.keras`` file makes the whole entry be recomputed.
        """
        models = []
        for k in range(n_models):
            model_path = self.directory / f"{key}_model{k}.keras"
            with zipfile.ZipFile(model_path) as archive:
                if "config.json" not in archive.namelist():
                    raise KeyError(f"{model_path.name} holds no config.json")
                bad = archive.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"{model_path.name}: bad CRC in {bad}")
            models.append(_LazyModel(model_path))
        return models


_CACHE_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile,
                      pickle.UnpicklingError)
"""Everything reading a damaged cache entry can raise (JSON errors are ValueErrors)."""


class _LazyModel:
    """A cached ``.keras`` file that is loaded on first use (most runs never need it)."""

    def __init__(self, path: Path):
        self.path = path
        self._model = None

    def get(self):
        if self._model is None:
            from ..models import load_model

            self._model = load_model(self.path)
        return self._model
