"""Keras model builders: the image branch, the fusion head and the full multimodal model.

* :func:`build_image_branch` -- one image modality to 3 class probabilities: a small
  CNN sized for 32x32 crops, or a ``keras.applications`` backbone (random or
  locally stored weights only; nothing is ever downloaded).
* :func:`build_fusion_head` -- the Stage 1 model: inputs ``p_{modality}`` (each the
  (3,) class probabilities of one branch, cached), output the fused probabilities.
* :func:`build_multimodal_model` -- branches and fusion in one model (Stage 2 /
  end-to-end): inputs ``metadata_input`` and ``{modality}_input``.

All layers are named and serialisable, so every model round-trips through a
``.keras`` file (``keras.models.load_model`` works once the fusion layers are imported:
:func:`fusionlib.fusion.register_layers`; :func:`load_model` does that for you).
"""

from __future__ import annotations

import os
from numbers import Integral

from . import fusion as _fusion
from .data import MODALITIES
from .settings import check_seed

KNOWN_MODALITIES = (_fusion.CLINICAL, *MODALITIES)
"""Modalities the builders accept: the clinical branch and the image modalities."""

# keras.applications backbones: name -> (constructor in keras.applications, minimum side).
BACKBONES = {
    "mobilenet_v2": ("MobileNetV2", 32),
    "resnet50": ("ResNet50", 32),
    "efficientnet_b0": ("EfficientNetB0", 32),
    "densenet121": ("DenseNet121", 32),
    "vgg16": ("VGG16", 32),
    "convnext_tiny": ("ConvNeXtTiny", 32),
    "xception": ("Xception", 71),
    "inception_v3": ("InceptionV3", 75),
}
SMALL_CNN = "small_cnn"
METADATA_BRANCHES = ("rf", "dense")


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------

def _check_modalities(modalities) -> list[str]:
    if isinstance(modalities, str) or not isinstance(modalities, (list, tuple)):
        raise ValueError(f"modalities must be a list of modality names such as "
                         f"[{_fusion.CLINICAL!r}, 'thermal_map'], got {modalities!r}")
    modalities = list(modalities)
    if not modalities:
        raise ValueError("modalities is empty; expected at least one of "
                         f"{', '.join(KNOWN_MODALITIES)}")
    for m in modalities:
        if m not in KNOWN_MODALITIES:
            raise ValueError(f"unknown modality {m!r}; expected one of "
                             f"{', '.join(KNOWN_MODALITIES)}")
    dups = sorted({m for m in modalities if modalities.count(m) > 1})
    if dups:
        raise ValueError(f"modalities must be distinct, got {modalities} (repeated: {dups})")
    if _fusion.CLINICAL in modalities and modalities[0] != _fusion.CLINICAL:
        fixed = [_fusion.CLINICAL, *[m for m in modalities if m != _fusion.CLINICAL]]
        raise ValueError(f"{_fusion.CLINICAL!r} must come first when present, got {modalities}; "
                         f"pass {fixed}")
    return modalities


def _check_image_modality(modality) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"unknown image modality {modality!r}; expected one of "
                         f"{', '.join(MODALITIES)}")
    return modality


def _check_input_shape(shape, modality) -> tuple[int, int, int]:
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or len(dims) != 3 or not all(
            isinstance(d, Integral) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"input shape for {modality!r} must be (height, width, channels) of "
                         f"positive ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def _check_weights_path(weights):
    if weights is None:
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        raise ValueError("backbone weights='imagenet' would download from the internet, which "
                         "fusionlib never does; pass None (random init) or the path of a local "
                         "weights file")
    if not isinstance(weights, (str, os.PathLike)) or not os.path.isfile(weights):
        raise ValueError(f"backbone weights must be None or the path of an existing weights "
                         f"file, got {weights!r}")
    return os.fspath(weights)


def _check_fusion_options(fusion_options) -> dict:
    if fusion_options is None:
        return {}
    if not isinstance(fusion_options, dict):
        raise ValueError(f"fusion_options must be a dict or None, got {fusion_options!r}")
    return dict(fusion_options)


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------

SMALL_CNN_FILTERS = (8, 16, 32)
"""Filters per conv block of the default CNN: thermal-map phase cues are coarse (wound-vs-skin
contrast, wound size), and a narrow net trains in seconds per fold on two CPU cores."""


def build_image_branch(modality, input_shape, backbone=SMALL_CNN, weights=None, dropout=0.3,
                       random_state=0, name=None):
    """One image modality to 3 class probabilities.

    ``backbone="small_cnn"`` (default): a per-channel Normalization layer, three blocks Conv(8|16|32, 3x3, relu) -> MaxPool(2),
    then Flatten -> Dropout -> Dense(3, softmax); sized for 32x32 crops (4x4x32 features).
    Otherwise a ``keras.applications`` name from :data:`BACKBONES` (e.g. ``"mobilenet_v2"``)
    without its top, built with random weights (``weights=None``) or loaded from the local
    file ``weights``; ``"imagenet"`` is refused (no downloads).  The input is named
    ``{modality}_input``, the output layer ``{modality}_probs``, and every layer name is
    prefixed with the modality.  Pixel scaling is the caller's business (the small CNN
    expects values in [0, 1]).
    """
    from ._tf import keras

    keras = keras()
    modality = _check_image_modality(modality)
    shape = _check_input_shape(input_shape, modality)
    seed = check_seed(random_state)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    if backbone != SMALL_CNN and backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of "
                         f"{', '.join([SMALL_CNN, *BACKBONES])}")
    weights = _check_weights_path(weights)
    if backbone == SMALL_CNN and weights is not None:
        raise ValueError(f"weights={weights!r} only applies to keras.applications backbones, "
                         f"not {SMALL_CNN!r}")
    p = modality
    inp = keras.Input(shape=shape, name=f"{p}_input")
    glorot = keras.initializers.GlorotUniform
    if backbone == SMALL_CNN:
        # Per-channel standardisation; mean/variance start at 0/1 and are set from the
        # training images by fusionlib.branches.cnn (adapt), which makes the first epochs learn.
        x = keras.layers.Normalization(axis=-1, name=f"{p}_normalize")(inp)
        for i, filters in enumerate(SMALL_CNN_FILTERS, start=1):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                    kernel_initializer=glorot(seed=seed + i),
                                    name=f"{p}_conv{i}")(x)
            x = keras.layers.MaxPooling2D(2, name=f"{p}_pool{i}")(x)
        # Flatten, not global pooling: the phase cue is where heat sits (wound vs. rim).
        x = keras.layers.Flatten(name=f"{p}_flatten")(x)
    else:
        ctor, min_side = BACKBONES[backbone]
        if min(shape[0], shape[1]) < min_side:
            raise ValueError(f"backbone {backbone!r} needs images of at least {min_side}x"
                             f"{min_side} pixels, got input shape {shape} for {modality!r}; "
                             f"use a larger image size or backbone={SMALL_CNN!r}")
        keras.utils.set_random_seed(seed)  # applications take no seed argument
        base = getattr(keras.applications, ctor)(include_top=False, weights=weights,
                                                 input_shape=shape, pooling="avg",
                                                 name=f"{p}_{backbone}")
        x = base(inp)
    x = keras.layers.Dropout(float(dropout), seed=seed, name=f"{p}_dropout")(x)
    out = keras.layers.Dense(3, activation="softmax", kernel_initializer=glorot(seed=seed),
                             name=f"{p}_probs")(x)
    return keras.Model(inp, out, name=name or f"{p}_branch")


def build_fusion_head(modalities, fusion="trainable", fusion_options=None, random_state=0):
    """The Stage 1 fusion head: inputs ``p_{modality}`` of shape (3,) (cached branch
    probabilities, ``"metadata"`` first when present), output the fused (n, 3)
    probabilities.  ``fusion`` names a variant of :data:`fusionlib.fusion.FUSIONS`;
    ``fusion_options`` are checked by its registry entry and passed to its layer
    (``random_state`` is the default seed).
    """
    from ._tf import keras

    keras = keras()
    modalities = _check_modalities(modalities)
    variant = _fusion.get_fusion(fusion)
    options = {"random_state": check_seed(random_state), **_check_fusion_options(fusion_options)}
    layer = variant.build(modalities, **options)
    inputs = [keras.Input(shape=(3,), name=f"p_{m}") for m in modalities]
    return keras.Model(inputs, layer(inputs), name=f"fusion_head_{variant.name}")


def build_multimodal_model(modalities, input_shape_dict=None, metadata_dim=None,
                           fusion="trainable", fusion_options=None, metadata_branch="rf",
                           image_backbone=SMALL_CNN, backbone_weights=None, random_state=0):
    """Branches and fusion in one Keras model.

    * ``"metadata"`` with ``metadata_branch="rf"`` (default): input ``metadata_input`` of
      shape (3,) takes the clinical model's class probabilities; ``metadata_dim`` (the number
      of clinical features the clinical model was trained on) is then only validated.  With
      ``metadata_branch="dense"``: input ``metadata_input`` of shape (metadata_dim,) ->
      Dense(32, relu) -> Dense(3, softmax) named ``metadata_probs``; ``metadata_dim`` required.
    * each image modality: input ``{modality}_input`` of shape ``input_shape_dict[modality]``
      through :func:`build_image_branch` (nested model ``{modality}_branch``).
    * the branch probabilities go through the ``fusion`` block (see
      :func:`build_fusion_head`).

    Images-only lists work.  Inputs are in ``modalities`` order.
    """
    from ._tf import keras

    keras = keras()
    modalities = _check_modalities(modalities)
    seed = check_seed(random_state)
    variant = _fusion.get_fusion(fusion)
    options = {"random_state": seed, **_check_fusion_options(fusion_options)}
    if metadata_branch not in METADATA_BRANCHES:
        raise ValueError(f"unknown metadata_branch {metadata_branch!r}; expected one of "
                         f"{', '.join(METADATA_BRANCHES)}")
    if metadata_dim is not None and (isinstance(metadata_dim, bool) or
                                     not isinstance(metadata_dim, Integral) or metadata_dim < 1):
        raise ValueError(f"metadata_dim must be a positive int or None, got {metadata_dim!r}")
    if _fusion.CLINICAL in modalities and metadata_branch == "dense" and metadata_dim is None:
        raise ValueError("metadata_branch='dense' needs metadata_dim (the number of clinical "
                         "features), got None")
    if input_shape_dict is None:
        input_shape_dict = {}
    if not isinstance(input_shape_dict, dict):
        raise ValueError(f"input_shape_dict must be a dict {{modality: (height, width, "
                         f"channels)}} or None, got {input_shape_dict!r}")
    stray = sorted(k for k in input_shape_dict if k not in MODALITIES)
    if stray:
        hint = " (the metadata input size is metadata_dim)" if _fusion.CLINICAL in stray else ""
        raise ValueError(f"input_shape_dict has keys that are not image modalities: {stray}; "
                         f"expected some of {', '.join(MODALITIES)}{hint}")
    images = [m for m in modalities if m != _fusion.CLINICAL]
    missing = [m for m in images if m not in input_shape_dict]
    if missing:
        raise ValueError(f"no input shape for image modalit{'y' if len(missing) == 1 else 'ies'} "
                         f"{missing}; pass input_shape_dict={{{missing[0]!r}: (32, 32, 3), ...}}")
    shapes = {m: _check_input_shape(input_shape_dict[m], m) for m in images}
    fusion_layer = variant.build(modalities, **options)  # checks the options before the branches

    inputs, probs = [], []
    for i, m in enumerate(modalities):
        if m == _fusion.CLINICAL:
            if metadata_branch == "rf":
                inp = keras.Input(shape=(3,), name="metadata_input")
                p = inp
            else:
                inp = keras.Input(shape=(int(metadata_dim),), name="metadata_input")
                glorot = keras.initializers.GlorotUniform
                h = keras.layers.Dense(32, activation="relu", name="metadata_hidden",
                                       kernel_initializer=glorot(seed=seed + 7))(inp)
                p = keras.layers.Dense(3, activation="softmax", name="metadata_probs",
                                       kernel_initializer=glorot(seed=seed + 8))(h)
        else:
            inp = keras.Input(shape=shapes[m], name=f"{m}_input")
            branch = build_image_branch(m, shapes[m], backbone=image_backbone,
                                        weights=backbone_weights,
                                        random_state=seed + 100 * (i + 1))
            p = branch(inp)
        inputs.append(inp)
        probs.append(p)
    return keras.Model(inputs, fusion_layer(probs), name=f"multimodal_{variant.name}")


# ---------------------------------------------------------------------------
# Inspection and I/O
# ---------------------------------------------------------------------------

def fusion_parameter_count(model) -> int:
    """Number of trainable parameters in the fusion layer of ``model`` (head or full model)."""
    return int(sum(int(_prod(w.shape)) for w in _fusion.fusion_layer(model).trainable_weights))


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def extract_fusion_head(model):
    """A fusion head (inputs ``p_{modality}``) holding copies of ``model``'s fusion layers.

    For a model that already is a head, the head is returned as is.  Use it to analyse the
    fusion of an end-to-end model with :mod:`fusionlib.explain.weights`.
    """
    from ._tf import keras

    keras = keras()
    if all(t.name.split(":")[0].startswith("p_") for t in model.inputs):
        return model
    layer = _fusion.fusion_layer(model)
    clone = layer.__class__.from_config(layer.get_config())
    inputs = [keras.Input(shape=(3,), name=f"p_{m}") for m in layer.modalities]
    out = clone(inputs)
    clone.set_weights(layer.get_weights())
    return keras.Model(inputs, out, name=f"fusion_head_{layer.variant}")


def load_model(path):
    """``keras.models.load_model`` with fusionlib's fusion layers registered (imported)."""
    from ._tf import keras

    return keras().models.load_model(path, custom_objects=_fusion.register_layers())
