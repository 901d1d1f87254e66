"""The generator's knobs, their defaults and the named presets with their measured ground truth.

Presets (:data:`PRESETS`) and their ground truth
------------------------------------------------

Measured by ``python bench/bench_presets.py --seeds 0 1 2 --n-patients 120`` (generator
version 2; the default 120 patients, about 410 cases). "Bayes" is the one-vs-rest AUC per
class of the case-level latent under the generator's own class-conditional distributions
(Monte Carlo, 400 000 draws; the image figure ignores per-image jitter and rendering, so it is
a ceiling); "fused" is the Bayes AUC of both latents together. "Achieved" is min-max over
cohort seeds 0-2 of a Random Forest on the table and a logistic regression on wound-box colour
means of the thermal maps (both 5-fold, grouped by patient; image probabilities averaged per
case, cases without an image left out):

============================ ================== ================== ==================================
preset                       clinical_signal    image_signal       ground truth (measured)
                             (I, P, R)          (I, P, R)
============================ ================== ================== ==================================
``dfu_like`` (default)       (1.4, 1.4, 0.3)    (0.7, 0.7, 1.2)    table modest, weak for R (QWK
                                                                   0.39-0.45, R AUC 0.55-0.64 where
                                                                   Bayes allows 0.88); images
                                                                   informative but imperfect,
                                                                   clearly better for R (QWK
                                                                   0.56-0.67, R AUC 0.95-0.99)
``images_uninformative``     (1.4, 1.4, 0.3)    (0, 0, 0)          table as dfu_like; images carry
                                                                   no class signal (Bayes 0.5;
                                                                   QWK -0.04-0.04)
``clinical_uninformative``   (0, 0, 0)          (0.7, 0.7, 1.2)    table carries no class signal
                                                                   (Bayes 0.5; QWK -0.07-0.01);
                                                                   images as dfu_like
``clinical_weak_for_R``      (2, 2, 0)          (0.7, 0.7, 2)      table strong for I/P, blind to R
                                                                   (Bayes R AUC 0.50, achieved
                                                                   0.43-0.49; QWK 0.42-0.44);
                                                                   images strong for R (R AUC
                                                                   0.99-1.00), moderate for I/P
``fixed_mix_wrong``          (0.8, 0.8, 0.8)    (1.8, 1.8, 1.8)    images far stronger than the
                                                                   table (QWK 0.90-0.94 vs
                                                                   0.22-0.29): a fixed 70/30 mix
                                                                   favouring the RF is the wrong mix
``shared_camera``            (1.4, 1.4, 0.3)    (0.7, 0.7, 1.2)    dfu_like with shared_effect 0.5:
                             shared_effect 0.5                     each modality as in dfu_like
                                                                   (same Bayes AUCs), the two
                                                                   latents' noises correlate by 0.5,
                                                                   so fusion gains less (fused Bayes
                                                                   0.997/0.993/0.994 against
                                                                   0.999/0.995/0.995 in dfu_like)
``complementary``            (2, 1, 0)          (0, 1, 2)          table strong for I, blind to R
                                                                   (Bayes 0.97/0.91/0.50, achieved
                                                                   I 0.83-0.89, R 0.40-0.52);
                                                                   images blind to I, strong for R
                                                                   (Bayes 0.50/0.71/0.97, achieved
                                                                   I 0.43-0.54, R 0.94-0.96): a
                                                                   learned head's RF share should be
                                                                   high for I, low for R
============================ ================== ================== ==================================

The figures as printed (its first, comment line left out; AUC I / P / R, "ach.": achieved,
min-max over seeds 0-2)::

    preset                 modality Bayes AUC I / P / R  ach. AUC I P          R          QWK
    dfu_like               clinical 0.99 / 0.95 / 0.88   0.80-0.86  0.69-0.73  0.55-0.64  0.39-0.45
    dfu_like               image    0.93 / 0.92 / 0.99   0.78-0.85  0.75-0.79  0.95-0.99  0.56-0.67
    dfu_like               fused    0.999 / 0.995 / 0.995
                           (410, 405, 407 cases)
    images_uninformative   clinical 0.99 / 0.95 / 0.88   0.80-0.86  0.69-0.73  0.55-0.64  0.39-0.45
    images_uninformative   image    0.50 / 0.50 / 0.50   0.45-0.53  0.42-0.57  0.47-0.56  -0.04-0.04
    images_uninformative   fused    0.995 / 0.951 / 0.881
                           (410, 405, 407 cases)
    clinical_uninformative clinical 0.50 / 0.50 / 0.50   0.46-0.52  0.47-0.57  0.41-0.54  -0.07-0.01
    clinical_uninformative image    0.93 / 0.92 / 0.99   0.78-0.85  0.75-0.79  0.95-0.99  0.56-0.67
    clinical_uninformative fused    0.927 / 0.916 / 0.991
                           (410, 405, 407 cases)
    clinical_weak_for_R    clinical 0.97 / 0.91 / 0.50   0.87-0.92  0.80-0.84  0.43-0.49  0.42-0.44
    clinical_weak_for_R    image    0.93 / 0.94 / 1.00   0.78-0.85  0.79-0.85  0.99-1.00  0.64-0.73
    clinical_weak_for_R    fused    1.000 / 1.000 / 1.000
                           (410, 405, 407 cases)
    fixed_mix_wrong        clinical 0.95 / 0.91 / 0.95   0.65-0.73  0.53-0.65  0.76-0.80  0.22-0.29
    fixed_mix_wrong        image    1.00 / 1.00 / 1.00   0.98-1.00  0.98       0.98-1.00  0.90-0.94
    fixed_mix_wrong        fused    1.000 / 1.000 / 1.000
                           (410, 405, 407 cases)
    shared_camera          clinical 0.99 / 0.95 / 0.88   0.81-0.88  0.68-0.75  0.60-0.63  0.36-0.44
    shared_camera          image    0.93 / 0.92 / 0.99   0.78-0.88  0.74-0.82  0.94-0.99  0.58-0.67
    shared_camera          fused    0.997 / 0.993 / 0.994
                           (410, 405, 407 cases)
    complementary          clinical 0.97 / 0.91 / 0.50   0.83-0.89  0.77-0.83  0.40-0.52  0.38-0.42
    complementary          image    0.50 / 0.71 / 0.97   0.43-0.54  0.67-0.73  0.94-0.96  0.15-0.22
    complementary          fused    0.992 / 1.000 / 0.987
                           (410, 405, 407 cases)

"""

from __future__ import annotations

import math

import numpy as np

GENERATOR_VERSION = 2
"""Bumped whenever the generator's output changes; a stale default cohort is regenerated."""

DEFAULT_PRESET = "dfu_like"
DEFAULT_SEED = 0

DEFAULT_KNOBS = {
    "n_patients": 120,
    "clinical_signal": (1.4, 1.4, 0.3),
    "image_signal": (0.7, 0.7, 1.2),
    "class_mix": (0.31, 0.56, 0.13),
    "no_image_fraction": 0.15,
    "max_images_per_case": 3,
    "max_appointments": 6,
    "second_ulcer_fraction": 0.2,
    "missing_scale": 1.0,
    "image_noise": 0.25,
    "image_width": 64,
    "image_height": 80,
    "shared_effect": 0.0,
    "shared_patient_share": 0.0,
}
"""Every knob :func:`generate_cohort` accepts, with its default value."""

PRESETS = {
    "dfu_like": {
        "clinical_signal": (1.4, 1.4, 0.3), "image_signal": (0.7, 0.7, 1.2),
        "ground_truth": "clinical modest for I/P, weak for R (s=1.4,1.4,0.3); thermal images "
                        "informative but imperfect, strongest for R (s=0.7,0.7,1.2)",
    },
    "images_uninformative": {
        "clinical_signal": (1.4, 1.4, 0.3), "image_signal": (0.0, 0.0, 0.0),
        "ground_truth": "clinical as dfu_like (s=1.4,1.4,0.3); thermal images carry no class "
                        "signal (s=0,0,0)",
    },
    "clinical_uninformative": {
        "clinical_signal": (0.0, 0.0, 0.0), "image_signal": (0.7, 0.7, 1.2),
        "ground_truth": "clinical table carries no class signal (s=0,0,0); thermal images as "
                        "dfu_like (s=0.7,0.7,1.2)",
    },
    "clinical_weak_for_R": {
        "clinical_signal": (2.0, 2.0, 0.0), "image_signal": (0.7, 0.7, 2.0),
        "ground_truth": "clinical strong for I/P, blind to R (s=2,2,0); thermal images strong "
                        "for R, moderate for I/P (s=0.7,0.7,2)",
    },
    "fixed_mix_wrong": {
        "clinical_signal": (0.8, 0.8, 0.8), "image_signal": (1.8, 1.8, 1.8),
        "ground_truth": "thermal images far stronger than clinical (s=1.8 vs 0.8 for every "
                        "class): a fixed 70/30 mix favouring the RF is the wrong mix",
    },
    "shared_camera": {
        "clinical_signal": (1.4, 1.4, 0.3), "image_signal": (0.7, 0.7, 1.2), "shared_effect": 0.5,
        "ground_truth": "signals as dfu_like; half the case-level latent noise variance is shared "
                        "by the table and the thermal maps of a visit (shared_effect=0.5): each "
                        "modality alone is as informative as in dfu_like, their fusion gains less",
    },
    "complementary": {
        "clinical_signal": (2.0, 1.0, 0.0), "image_signal": (0.0, 1.0, 2.0),
        "ground_truth": "clinical strong for I, none for R (s=2,1,0); thermal images none for I, "
                        "strong for R (s=0,1,2): a learned head should lean on the RF for I and on "
                        "the images for R",
    },
}
"""Named knob settings; each entry's ``ground_truth`` is written to ``cohort.json``."""


# --------------------------------------------------------------------------- knobs


def check_signal(name: str, value) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be three non-negative numbers (I, P, R), got {value!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"{name} must be three non-negative numbers (I, P, R), got {value!r}")
    return values


def resolve_knobs(preset: str = DEFAULT_PRESET, n_patients: int | None = None, **overrides) -> dict:
    """The full, validated knob dict for a preset with overrides applied.

    Raises ValueError naming an unknown preset or knob (and what is expected) or a
    knob value out of range.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    unknown = [k for k in overrides if k not in DEFAULT_KNOBS]
    if unknown:
        raise ValueError(f"unknown knob {unknown[0]!r}; expected any of {', '.join(DEFAULT_KNOBS)}")
    knobs = dict(DEFAULT_KNOBS)
    knobs.update({k: v for k, v in PRESETS[preset].items() if k in DEFAULT_KNOBS})
    knobs.update(overrides)
    if n_patients is not None:
        knobs["n_patients"] = n_patients

    knobs["clinical_signal"] = check_signal("clinical_signal", knobs["clinical_signal"])
    knobs["image_signal"] = check_signal("image_signal", knobs["image_signal"])
    mix = check_signal("class_mix", knobs["class_mix"])
    if min(mix) <= 0:
        raise ValueError(f"class_mix must be three positive shares (I, P, R), got {knobs['class_mix']!r}")
    knobs["class_mix"] = tuple(round(m / sum(mix), 6) for m in mix)

    def integer(name, low, high=None):
        value = knobs[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
                or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in {low}..{high}"
            raise ValueError(f"knob {name!r} must be an integer {bound}, got {value!r}")
        knobs[name] = int(value)

    def fraction(name, low, high, high_open=False):
        value = knobs[name]
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = float("nan")
        if not (low <= value <= high) or (high_open and value == high):
            raise ValueError(f"knob {name!r} must be a number in [{low}, {high}"
                             f"{')' if high_open else ']'}, got {knobs[name]!r}")
        knobs[name] = value

    integer("n_patients", 1)
    integer("max_images_per_case", 1, 3)
    integer("max_appointments", 1, 14)
    integer("image_width", 24, 1024)
    integer("image_height", 24, 1024)
    fraction("no_image_fraction", 0.0, 1.0)
    fraction("second_ulcer_fraction", 0.0, 1.0)
    fraction("missing_scale", 0.0, 4.0)
    fraction("image_noise", 0.0, 5.0)
    fraction("shared_effect", 0.0, 1.0, high_open=True)  # 1 would make the modalities one latent
    fraction("shared_patient_share", 0.0, 1.0)
    return knobs
