"""Section ``fusion`` of an experiment's parameters, declared by the fusion package.

Keras-free like the registry it checks against, so validating a params file imports no
TensorFlow. The variant's options are checked against the experiment's modalities in
:func:`FusionSettings.check_options`, which the params schema calls once both are known.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..settings import Settings, choice
from .registry import FUSIONS, get_fusion


class FusionSettings(Settings):
    """Section ``fusion``: the fusion variant and its options."""

    variant: Annotated[str, choice(FUSIONS)] = Field("trainable", description=FUSIONS.describe(
        "{choices} (`fusionlib.fusion.FUSIONS`)"))
    options: dict = Field({}, description=(
        "the variant's options (e.g. `weights: [0.7, 0.3]` for `fixed`, `temperature` for "
        "`trainable_rf_biased`)"))

    def check_options(self, modalities) -> None:
        """ValueError naming the problem when the options do not fit the variant or modalities."""
        get_fusion(self.variant).check(modalities, self.options)
