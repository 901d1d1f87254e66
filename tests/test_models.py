"""Keras builders: the seed call, branches, argument validation, .keras round trips."""

from __future__ import annotations

import numpy as np
import pytest

from fusionlib import fusion as F
from fusionlib.models import (build_fusion_head, build_image_branch, build_multimodal_model,
                              extract_fusion_head, fusion_parameter_count, load_model)

SHAPES = {"thermal_map": (32, 32, 3)}
EXPECTED_PARAMS_TWO = {"fixed": 0, "trainable": 21, "trainable_rf_biased": 21, "mlp": 163,
                       "convex": 1, "per_class_convex": 3, "gated": 7}


def _probs(n, seed):
    x = np.random.default_rng(seed).random((n, 3)).astype("float32") + 0.05
    return x / x.sum(axis=1, keepdims=True)


def _images(n, seed, shape=(32, 32, 3)):
    return np.random.default_rng(seed).random((n, *shape)).astype("float32")


def _summary(model) -> str:
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)


def test_seed_call():
    model = build_multimodal_model(['metadata', 'thermal_map'],
                                   input_shape_dict={'thermal_map': (32, 32, 3)}, metadata_dim=50)
    assert "trainable_fusion" in _summary(model)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable > 0
    assert fusion_parameter_count(model) == 21
    assert [t.name for t in model.inputs] == ["metadata_input", "thermal_map_input"]
    out = np.asarray(model([_probs(4, 0), _images(4, 1)]))
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_package_level_builder_is_the_same_function():
    import fusionlib

    assert fusionlib.build_multimodal_model is build_multimodal_model


def test_image_branch_names_and_shapes():
    branch = build_image_branch("thermal_map", (32, 32, 3), random_state=1)
    assert branch.inputs[0].name == "thermal_map_input"
    assert branch.output.shape[-1] == 3
    names = [layer.name for layer in branch.layers]
    assert "thermal_map_probs" in names
    assert all(n.startswith("thermal_map_") for n in names)
    assert {"thermal_map_conv1", "thermal_map_conv2", "thermal_map_conv3",
            "thermal_map_flatten", "thermal_map_dropout"} <= set(names)
    again = build_image_branch("thermal_map", (32, 32, 3), random_state=1)
    for a, b in zip(branch.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _images(3, 2)
    np.testing.assert_allclose(np.asarray(branch(x)).sum(axis=1), 1.0, atol=1e-5)


def test_image_branch_backbone_from_keras_applications():
    branch = build_image_branch("depth_rgb", (32, 32, 3), backbone="mobilenet_v2")
    assert branch.get_layer("depth_rgb_mobilenet_v2") is not None
    assert np.asarray(branch(_images(2, 0))).shape == (2, 3)


def test_image_branch_backbone_errors(tmp_path):
    with pytest.raises(ValueError, match=r"never does"):
        build_image_branch("thermal_map", (64, 64, 3), backbone="mobilenet_v2", weights="imagenet")
    with pytest.raises(ValueError, match=r"existing weights file"):
        build_image_branch("thermal_map", (64, 64, 3), backbone="resnet50",
                           weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ValueError, match=r"at least 75x75 pixels, got input shape \(32, 32, 3\)"):
        build_image_branch("thermal_map", (32, 32, 3), backbone="inception_v3")
    with pytest.raises(ValueError, match=r"at least 32x32"):
        build_image_branch("thermal_map", (16, 16, 3), backbone="efficientnet_b0")
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet5'; expected one of small_cnn"):
        build_image_branch("thermal_map", (32, 32, 3), backbone="resnet5")
    with pytest.raises(ValueError, match=r"unknown image modality 'metadata'"):
        build_image_branch("metadata", (32, 32, 3))
    with pytest.raises(ValueError, match=r"\(height, width, channels\)"):
        build_image_branch("thermal_map", (32, 32))
    with pytest.raises(ValueError, match=r"dropout"):
        build_image_branch("thermal_map", (32, 32, 3), dropout=1.5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(modalities=[]), r"modalities is empty"),
    (dict(modalities="metadata"), r"must be a list of modality names"),
    (dict(modalities=["metadata", "thermal"]), r"unknown modality 'thermal'; expected one of metadata, thermal_map"),
    (dict(modalities=["metadata", "thermal_map", "thermal_map"]), r"distinct.*\['thermal_map'\]"),
    (dict(modalities=["thermal_map", "metadata"]), r"'metadata' must come first"),
    (dict(modalities=["metadata", "depth_rgb"]), r"no input shape for image modality \['depth_rgb'\]"),
    (dict(modalities=["metadata", "thermal_map"], input_shape_dict={"thermal_map": (32, 32)}),
     r"input shape for 'thermal_map' must be \(height, width, channels\)"),
    (dict(modalities=["metadata", "thermal_map"], input_shape_dict={**SHAPES, "metadata": (50,)}),
     r"not image modalities: \['metadata'\].*metadata_dim"),
    (dict(modalities=["metadata", "thermal_map"], metadata_dim=0), r"metadata_dim must be a positive int or None, got 0"),
    (dict(modalities=["metadata", "thermal_map"], metadata_dim=2.5), r"metadata_dim must be a positive int"),
    (dict(modalities=["metadata", "thermal_map"], metadata_branch="dense"), r"needs metadata_dim"),
    (dict(modalities=["metadata", "thermal_map"], metadata_branch="gbm"), r"unknown metadata_branch 'gbm'; expected one of rf, dense"),
    (dict(modalities=["metadata", "thermal_map"], fusion="trainible"), r"unknown fusion 'trainible'.*did you mean 'trainable'"),
    (dict(modalities=["metadata", "thermal_map"], random_state=-1), r"random_state"),
    (dict(modalities=["metadata", "thermal_map"], backbone_weights="imagenet", image_backbone="mobilenet_v2"), r"imagenet"),
])
def test_multimodal_argument_validation(kwargs, message):
    kwargs = {"input_shape_dict": SHAPES, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_multimodal_model(**kwargs)


def test_fusion_head_validation():
    with pytest.raises(ValueError, match=r"unknown modality 'rf'"):
        build_fusion_head(["rf", "thermal_map"])
    with pytest.raises(ValueError, match=r"'metadata' must come first"):
        build_fusion_head(["thermal_map", "metadata"])


def test_dense_metadata_branch_and_images_only():
    model = build_multimodal_model(["metadata", "thermal_map"], SHAPES, metadata_dim=50,
                                   metadata_branch="dense", fusion="convex")
    assert model.inputs[0].shape[-1] == 50
    assert model.get_layer("metadata_probs").units == 3
    assert fusion_parameter_count(model) == 1
    x = np.random.default_rng(0).normal(size=(3, 50)).astype("float32")
    assert np.asarray(model([x, _images(3, 1)])).shape == (3, 3)

    shapes = {"thermal_map": (32, 32, 3), "depth_map": (32, 32, 1)}
    images_only = build_multimodal_model(["thermal_map", "depth_map"], shapes, fusion="fixed")
    assert [t.name for t in images_only.inputs] == ["thermal_map_input", "depth_map_input"]
    raw = F.fusion_layer(images_only).raw_weights()
    assert raw["weights"] == pytest.approx([0.5, 0.5]) and raw["modalities"] == ["thermal_map", "depth_map"]
    assert np.asarray(images_only([_images(2, 0), _images(2, 1, (32, 32, 1))])).shape == (2, 3)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS_TWO))
def test_multimodal_model_round_trips_through_keras_file(name, tmp_path):
    from fusionlib._tf import keras

    model = build_multimodal_model(["metadata", "thermal_map"], SHAPES, metadata_dim=50,
                                   fusion=name, random_state=2)
    assert fusion_parameter_count(model) == EXPECTED_PARAMS_TWO[name]
    xs = [_probs(6, 0), _images(6, 1)]
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras().models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(xs)), np.asarray(model(xs)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(load_model(path)(xs)), np.asarray(model(xs)),
                               rtol=1e-5, atol=1e-7)
    assert fusion_parameter_count(loaded) == EXPECTED_PARAMS_TWO[name]


def test_extract_fusion_head_matches_the_models_fusion():
    model = build_multimodal_model(["metadata", "thermal_map"], SHAPES, fusion="mlp")
    head = extract_fusion_head(model)
    assert [t.name for t in head.inputs] == ["p_metadata", "p_thermal_map"]
    assert fusion_parameter_count(head) == 163
    branch = model.get_layer("thermal_map_branch")
    p_rf, imgs = _probs(5, 0), _images(5, 1)
    np.testing.assert_allclose(np.asarray(head([p_rf, np.asarray(branch(imgs))])),
                               np.asarray(model([p_rf, imgs])), rtol=1e-5, atol=1e-7)
    assert extract_fusion_head(head) is head
