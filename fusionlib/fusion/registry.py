"""The fusion-variant registry: names -> where each variant's Keras layer lives, its options
(defaults and checks) and its view.  Keras-free: the layer module is imported on first use.

Adding a variant is one file (a :class:`fusionlib.fusion.base.FusionLayer` subclass) and
one :class:`FusionSpec` line in :data:`FUSIONS` below (or :func:`register` at run time).
:data:`FUSIONS` is a :class:`fusionlib.registry.Registry`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..registry import Registry
from . import options as opt
from . import views


@dataclass(frozen=True)
class FusionSpec:
    """One fusion variant.

    ``layer`` is ``"module:Class"``; a module starting with ``.`` is relative to this package.
    ``options`` maps each accepted option to ``(default, check)``; a check
    ``(value, modalities, fusion, option)`` returns the value the layer is built with.
    ``view`` turns the layer's raw weights into the :class:`~.views.Heatmap` figures show.
    """

    name: str
    layer: str
    summary: str
    options: Mapping[str, tuple[object, Callable]] = field(default_factory=dict)
    view: Callable = views.mix_view
    min_modalities: int = 2

    @property
    def defaults(self) -> dict:
        return {k: default for k, (default, _) in self.options.items()}

    def check(self, modalities, options: Mapping | None = None) -> tuple[list[str], dict]:
        """Validate ``modalities`` and ``options`` without Keras; returns them resolved."""
        modalities = opt.check_modalities(modalities, self.name, self.min_modalities)
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for fusion {self.name!r}; expected "
                             f"some of {sorted(self.options)}")
        resolved = {}
        for key, (default, check) in self.options.items():
            resolved[key] = check(options.get(key, default), modalities, self.name, key)
        return modalities, resolved

    def layer_class(self):
        """The variant's Keras layer class (imports its module, and so Keras)."""
        module, _, cls = self.layer.partition(":")
        return getattr(importlib.import_module(module, package=__package__), cls)

    def build(self, modalities, **options):
        """A new layer of this variant: a list of ``(n, 3)`` probability tensors, one per
        modality in ``modalities`` order, to fused ``(n, 3)`` probabilities."""
        modalities, resolved = self.check(modalities, options)
        return self.layer_class()(modalities=modalities, **resolved)

    def heatmap(self, raw, names: Mapping | None = None) -> views.Heatmap:
        """The matrix figures show for raw weights of this variant (no Keras needed);
        ``names`` (``{modality: row label}``, e.g. the clinical model's ``{"metadata": "RF"}``)
        reach the view as ``raw["names"]`` (:mod:`.views`)."""
        return self.view({**raw, "names": dict(names)} if names else raw)


_SEED = (0, opt.seed)
_WEIGHTS = (None, opt.weights)
_START = (None, opt.start_weights)

FUSIONS: Registry[FusionSpec] = Registry("fusion", (
    FusionSpec("fixed", ".fixed:FixedFusion", "w p_clinical + (1 - w) p_img, w = 0.70",
               {"weights": _WEIGHTS, "random_state": _SEED}, views.mix_view, min_modalities=1),
    FusionSpec("trainable", ".trainable:TrainableFusion", "softmax(Dense(3)(concat(p_m)))",
               {"random_state": _SEED},
               views.kernel_view("matrix", views.output_columns, blocks=True)),
    FusionSpec("trainable_rf_biased", ".trainable:TrainableRFBiasedFusion",
               "as trainable, started at an effective 70/30 mix",
               {"weights": _START, "temperature": (5.0, opt.positive), "random_state": _SEED},
               views.kernel_view("matrix", views.output_columns, blocks=True)),
    FusionSpec("mlp", ".mlp:MLPFusion", "Dense(3, softmax)(Dense(16, relu)(concat(p_m)))",
               {"hidden_units": (16, opt.positive_int), "random_state": _SEED},
               views.kernel_view("hidden_kernel", views.hidden_columns)),
    FusionSpec("convex", ".convex:ConvexFusion", "a p_clinical + (1 - a) p_img, a learned",
               {"weights": _START, "random_state": _SEED}, views.mix_view),
    FusionSpec("per_class_convex", ".convex:PerClassConvexFusion",
               "per class a_c p_clinical,c + (1 - a_c) p_img,c, renormalised",
               {"weights": _START, "random_state": _SEED}, views.mix_view),
    FusionSpec("gated", ".gated:GatedFusion", "a(x) p_clinical + (1 - a(x)) p_img, a(x) learned",
               {"weights": _START, "random_state": _SEED},
               views.kernel_view("kernel", views.gate_columns)),
))
"""Fusion variants by name."""


def register(spec: FusionSpec, *, replace: bool = False) -> FusionSpec:
    """Add a variant at run time (``replace``: one of the same name): what a new line in
    :data:`FUSIONS` does."""
    return FUSIONS.register(spec, replace=replace)


def get_fusion(name) -> FusionSpec:
    """The fusion variant called ``name``; ValueError (with a suggestion) when unknown."""
    return FUSIONS[name]


def register_layers() -> dict:
    """Import every variant's layer (registering it with ``keras.saving``) and return the
    classes by name, with the objects they declare (``FusionLayer.custom_objects``), for
    ``custom_objects`` of ``keras.models.load_model``."""
    classes = [spec.layer_class() for spec in FUSIONS.values()]
    extra = [obj for cls in classes for obj in cls.custom_objects]
    return {cls.__name__: cls for cls in (*classes, *extra)}


# ---------------------------------------------------------------------------------- models
# These read built Keras models but never import Keras themselves (a model exists only if
# Keras is already loaded), so they live here, beside the names they report.

def model_modalities(model) -> list[str]:
    """Modality order of a fusion head (inputs ``p_{m}``) or multimodal model (``{m}_input``)."""
    names = []
    for t in model.inputs:
        name = t.name.split(":")[0]
        if name.startswith("p_"):
            name = name[2:]
        elif name.endswith("_input"):
            name = name[: -len("_input")]
        names.append(name)
    return names


def iter_layers(model):
    """All layers of ``model``, descending into nested models (not into a fusion layer)."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers") and not is_fusion_layer(layer):
            yield from iter_layers(layer)


def find_layer(model, name: str):
    """The (possibly nested) layer called ``name``, or None."""
    for layer in iter_layers(model):
        if layer.name == name:
            return layer
    return None


def is_fusion_layer(layer) -> bool:
    return callable(getattr(layer, "raw_weights", None)) and \
        isinstance(getattr(layer, "variant", None), str)


def fusion_layer(model):
    """The fusion layer of ``model`` (a head, a multimodal model, or a model nesting a head)."""
    found = [layer for layer in iter_layers(model) if is_fusion_layer(layer)]
    if not found:
        raise ValueError(f"model {model.name!r} contains no fusion layer; expected a layer of "
                         f"one of the variants {', '.join(FUSIONS)}")
    return found[0]


def linear_softmax_dense(model):
    """The Dense layer of ``model``'s fusion when the model computes exactly ``softmax(concat(p_m)
    K + b)`` with that Dense's kernel and bias as its only trainable weights
    (:meth:`FusionLayer.linear_softmax`), else None. Such a head has exact float64 NumPy forms
    of its training objective (:mod:`fusionlib.head.objective`) and of its Jacobians
    (:func:`fusionlib.explain.modality_jacobians`)."""
    try:
        dense = fusion_layer(model).linear_softmax()
    except (ValueError, AttributeError):
        return None
    if dense is None or [id(v) for v in model.trainable_weights] != [id(dense.kernel),
                                                                      id(dense.bias)]:
        return None
    return dense


def detect_fusion(model) -> str:
    """Name of the fusion variant inside ``model``."""
    return fusion_layer(model).variant
