"""The image CNN's compiled training loop and case scoring (fusionlib.branches.cnn), and the
image branch reading a cohort's images once for all outer folds."""

import numpy as np
import pytest

from fusionlib.branches import ImageBranch
from fusionlib.branches.cnn import (TRAINER, _Validation, _worker_for, case_probabilities,
                                    predict_images, train_image_classifier)
from fusionlib.branches.image import ImageSettings
from fusionlib.metrics import qwk


@pytest.fixture(scope="module")
def toy_images():
    """60 cases of 1-3 tiny images each; the class shows as the mean brightness (learnable)."""
    rng = np.random.default_rng(0)
    y = rng.choice(3, size=60, p=[0.3, 0.5, 0.2])
    per_case = rng.integers(1, 4, size=60)
    per_case[[5, 17]] = 0                                   # two cases have no image
    image_case = np.repeat(np.arange(60), per_case)
    images = rng.random((len(image_case), 8, 8, 3)).astype(np.float32) * 0.5
    images += (0.25 * y[image_case])[:, None, None, None].astype(np.float32)
    return images, image_case, y


def _train(toy_images, seed=0, epochs=6, patience=2, fit=range(0, 40), val=range(40, 60)):
    images, image_case, y = toy_images
    config = ImageSettings(size=8, epochs=epochs, patience=patience, batch_size=16,
                           learning_rate=1e-2)
    return train_image_classifier(config, "thermal_map", "none", images, image_case, y,
                                  np.array(list(fit)), np.array(list(val)), random_state=seed)


def test_same_seed_gives_identical_probabilities(toy_images):
    images, image_case, y = toy_images
    rows = np.arange(60)
    first, h1 = _train(toy_images, seed=3)
    p1 = case_probabilities(first, images, image_case, rows)
    other, _ = _train(toy_images, seed=4)     # the shared worker trains another model between
    second, h2 = _train(toy_images, seed=3)
    p2 = case_probabilities(second, images, image_case, rows)
    assert h1 == h2
    np.testing.assert_array_equal(p1, p2)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a different seed is a different model, and the first one still scores as it did
    assert not np.array_equal(case_probabilities(other, images, image_case, rows), p1)
    np.testing.assert_array_equal(case_probabilities(first, images, image_case, rows), p1)


def test_history_keys_and_best_weights_restored(toy_images):
    images, image_case, y = toy_images
    model, history = _train(toy_images, seed=1, epochs=8, patience=2)
    assert set(history) == {"val_qwk", "best_epoch", "best_val_qwk", "epochs_run"}
    assert history["epochs_run"] == len(history["val_qwk"]) <= 8
    assert 1 <= history["best_epoch"] <= history["epochs_run"]
    assert history["best_val_qwk"] == max(history["val_qwk"])
    assert history["val_qwk"][history["best_epoch"] - 1] == history["best_val_qwk"]
    if history["epochs_run"] < 8:                              # stopped early: patience ran out
        assert history["epochs_run"] - history["best_epoch"] == 2
    # the returned model is the best epoch's: its validation QWK is the recorded best
    val = np.arange(40, 60)
    proba = case_probabilities(model, images, image_case, val)
    assert qwk(y[val], np.nan_to_num(proba).argmax(axis=1)) == pytest.approx(
        history["best_val_qwk"])
    # and the model learned the brightness cue
    assert history["best_val_qwk"] > 0.5


def test_training_refuses_fit_cases_without_images(toy_images):
    with pytest.raises(ValueError, match="no thermal_map images"):
        _train(toy_images, fit=[5, 17])


def test_case_probabilities_is_the_per_case_mean(toy_images):
    images, image_case, y = toy_images
    model, _ = _train(toy_images, seed=2, epochs=2)
    rows = np.array([17, 3, 5, 0, 59, 22])                     # unsorted, 5 and 17 have none
    got = case_probabilities(model, images, image_case, rows)
    per_image = np.asarray(model(images, training=False), dtype=float)   # plain Keras call
    for i, row in enumerate(rows):
        mine = image_case == row
        if mine.any():
            np.testing.assert_allclose(got[i], per_image[mine].mean(axis=0), rtol=1e-5, atol=1e-6)
        else:
            assert np.isnan(got[i]).all()
    assert np.isnan(case_probabilities(model, images, image_case, [5, 17])).all()
    assert case_probabilities(model, images, image_case, []).shape == (0, 3)
    # repeated rows each get the case's mean
    twice = case_probabilities(model, images, image_case, [3, 3])
    np.testing.assert_array_equal(twice[0], twice[1])


def test_validation_score_is_qwk_then_loss(toy_images):
    images, image_case, y = toy_images
    model, _ = _train(toy_images, seed=2, epochs=2)
    val = np.arange(40, 60)
    validation = _Validation(images, image_case, y, val)
    worker = _worker_for(model)
    worker.load(model)
    score, neg_loss = validation.score(worker)
    proba = case_probabilities(model, images, image_case, val)
    assert score == pytest.approx(qwk(y[val], np.nan_to_num(proba).argmax(axis=1)))
    ok = ~np.isnan(proba).any(axis=1)
    assert -neg_loss == pytest.approx(-np.mean(np.log(proba[ok, y[val][ok]])), rel=1e-5)


def test_trained_model_round_trips_through_a_keras_file(toy_images, tmp_path):
    from fusionlib.models import load_model

    images, image_case, y = toy_images
    model, _ = _train(toy_images, seed=5, epochs=3)
    path = tmp_path / "cnn.keras"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_allclose(predict_images(loaded, images), predict_images(model, images),
                               rtol=1e-6, atol=1e-7)
    # the Normalization statistics travel with it (set from the training images, not 0/1)
    norm = next(layer for layer in loaded.layers if "normalize" in layer.name)
    assert not np.allclose(np.asarray(norm.adapt_mean), 0)
    np.testing.assert_allclose(np.asarray(loaded(images[:5], training=False)),
                               np.asarray(model(images[:5], training=False)), rtol=1e-6)


def test_branch_reads_images_once_for_all_folds(tmp_path, monkeypatch):
    from fusionlib import images as images_module
    from fusionlib.data import load_cohort
    from fusionlib.splits import patient_folds
    from fusionlib.synthetic import generate_cohort

    cohort = load_cohort(generate_cohort(tmp_path / "c", n_patients=24, random_state=1))
    loads = []
    real = images_module.cohort_image_arrays
    monkeypatch.setattr(images_module, "cohort_image_arrays",
                        lambda *a, **k: loads.append(1) or real(*a, **k))
    branch = ImageBranch("thermal_map", ImageSettings(size=8, epochs=2, patience=1,
                                                      batch_size=16), random_state=0)
    assert branch.settings()["trainer"] == TRAINER
    folds = patient_folds(cohort.y, cohort.groups, 3, random_state=0)
    outs = [branch.fit_fold(cohort, f.train, f.test) for f in folds]
    assert len(loads) == 1
    assert all(len(o.models) == 2 and o.test_proba_models.shape[0] == 2 for o in outs)
    assert len(branch.history) == 2 and all(h["epochs_run"] >= 1 for h in branch.history)
    # another cohort object is read anew
    branch.fit_fold(cohort.subset(np.arange(cohort.n_cases)), folds[0].train, folds[0].test)
    assert len(loads) == 2


def test_stage2_clones_keep_the_trained_normalization(toy_images):
    """The end-to-end model's CNN copies standardise with the trained statistics (a clone's
    Normalization layer used 0/1 after set_weights until finalize_state)."""
    from fusionlib.models import build_fusion_head
    from fusionlib.stage2 import build_end_to_end

    images, _, _ = toy_images
    model, _ = _train(toy_images, seed=2, epochs=2)
    head = build_fusion_head(["metadata", "thermal_map"], fusion="fixed")
    end_to_end, _ = build_end_to_end(head, [model], images.shape[1:], "thermal_map")
    clone = end_to_end.get_layer("thermal_map_cnn0")
    np.testing.assert_allclose(np.asarray(clone(images[:7], training=False)),
                               np.asarray(model(images[:7], training=False)), rtol=1e-5, atol=1e-6)
