"""Caches survive damage: a truncated or empty branch .npz, .keras model or crop .npy is
recomputed with one log line; an image-only experiment runs on a fresh cache folder."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from fusionlib.branches import BranchOutput
from fusionlib.experiment import BranchCache
from fusionlib.images import load_images


def _damage(path, how):
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: len(data) // 2])


def _warnings(caplog, word):
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and word in r.getMessage()]


def _tiny_model():
    from fusionlib._tf import keras

    k = keras()
    inputs = k.Input((3,))
    return k.Model(inputs, k.layers.Dense(3)(inputs))


@pytest.mark.parametrize("how", ["truncated", "empty"])
@pytest.mark.parametrize("kind", ["npz", "keras"])
def test_damaged_branch_entry_is_recomputed_with_one_line(tmp_path, caplog, kind, how):
    calls = []

    def compute():
        calls.append(1)
        out = BranchOutput(np.arange(4), np.arange(4, 6), np.full((4, 3), 1 / 3), np.full((2, 3), 0.5))
        out.models = [_tiny_model()]
        return out

    (tmp_path / "branches").mkdir()
    cache = BranchCache(tmp_path / "branches")
    first = cache.get_or_compute("k1", compute)
    entry = tmp_path / "branches" / ("k1.npz" if kind == "npz" else "k1_model0.keras")
    assert entry.is_file()
    _damage(entry, how)
    with caplog.at_level(logging.WARNING, logger="fusionlib"):
        again = cache.get_or_compute("k1", compute)
    assert len(calls) == 2 and cache.misses == 2
    np.testing.assert_array_equal(again.test_proba, first.test_proba)
    lines = _warnings(caplog, "unreadable")
    assert len(lines) == 1 and "k1.npz" in lines[0] and "recomputing" in lines[0]
    third = cache.get_or_compute("k1", compute)  # the rewritten entry is a hit again
    assert len(calls) == 2 and cache.hits == 1 and len(third.models) == 1
    assert third.models[0].get().count_params() == 12


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_damaged_crop_cache_file_is_recomputed_with_one_line(tmp_path, caplog, how):
    array = (np.arange(30 * 40 * 3).reshape(30, 40, 3) % 251).astype(np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(array).save(path)
    cache = tmp_path / "crops"
    first = load_images([path], None, size=8, margin=0.0, cache_dir=cache)
    (entry,) = cache.glob("*.npy")
    _damage(entry, how)
    with caplog.at_level(logging.WARNING, logger="fusionlib"):
        again = load_images([path], None, size=8, margin=0.0, cache_dir=cache)
    np.testing.assert_array_equal(first, again)
    lines = _warnings(caplog, "unreadable")
    assert len(lines) == 1 and entry.name in lines[0] and "recomputing" in lines[0]
    np.testing.assert_array_equal(np.load(entry), first[0])


@pytest.mark.slow
def test_image_only_experiment_runs_on_a_fresh_cache_folder(tmp_path):
    from fusionlib.synthetic import generate_cohort
    from fusionlib.data import load_cohort
    from fusionlib.experiment import run_experiment
    from fusionlib.params import validate

    cohort = load_cohort(generate_cohort(tmp_path / "c", preset="dfu_like", random_state=0,
                                         n_patients=30))
    params = validate({"name": "img_only", "data": {"modalities": ["thermal_map"]},
                       "fusion": {"variant": "fixed"}, "protocol": {"folds": 2},
                       "image": {"epochs": 2, "inner_folds": 2, "size": 16}})
    cache = tmp_path / "fresh-cache"
    result = run_experiment(params, cohort=cohort, cache_dir=cache, progress=False)
    assert len(list((cache / "branches").glob("*.keras"))) == 4  # 2 folds x 2 inner CNNs
    summary = result.summary()
    assert summary["n_folds"] == 2 and summary["head_never_trained_folds"] == 0
    assert summary["dropped_images"] == {"count": 0, "by_reason": {}}
    # Cases without an image cannot be scored by an image-only run: left out and counted.
    pred = result.predictions()
    no_image = ~cohort.has_modality("thermal_map")
    assert no_image.any()
    assert result.fold_table()["n_test_unscored"].sum() == no_image.sum()
    assert np.isfinite(pred[["p_I", "p_P", "p_R"]].to_numpy()).all()
    assert pred["pred"].between(0, 2).all()
    again = run_experiment(params, cohort=cohort, cache_dir=cache, progress=False)
    assert again.provenance["branch_cache"] == {"hits": 2, "misses": 0}
    np.testing.assert_array_equal(again.predictions()[["p_I", "p_P", "p_R"]].to_numpy(),
                                  result.predictions()[["p_I", "p_P", "p_R"]].to_numpy())
