"""The synthetic cohort generator: the embedded default dataset, with known ground truth.

:func:`generate_cohort` writes a folder in the study's own formats (the clinical
table, ``bounding_box_thermal.csv`` and a ``Thermal_Map_IMG/`` folder of PNGs) plus
a ``cohort.json`` describing how it was made, so the default run goes through
:func:`fusionlib.data.load_cohort` exactly like real data.

How a cohort is drawn
---------------------
* **Structure.** Each patient has 1..``max_appointments`` visits (``Appt#`` 0, 1, ...)
  and 1 ulcer, or 2 with probability ``second_ulcer_fraction`` (the second ulcer
  appears at a random visit). A case is one (patient, appointment, ulcer).
* **Labels.** Every ulcer has a latent healing progress that grows with each
  visit (random start, random positive rate). Cases are ranked by progress and
  the lowest ``class_mix[0]`` share is I, the next ``class_mix[1]`` is P, the rest
  R: the marginal mix is hit exactly and phases never go backwards within an
  ulcer (I -> P -> R).
* **Class signal.** Both modalities share fixed class directions in a 2-d latent
  space, ``d_I = (-1, -0.35)``, ``d_P = (0, 0.6)``, ``d_R = (1, -0.35)`` (axis 0:
  healing progress; axis 1: what sets P apart), centred on their ``class_mix``-
  weighted mean, so I and R lie further apart than I and P (ordinal structure).
  A case of class ``c`` gets the modality latent ``s[c] * d_c + N(0, 0.5^2)`` per
  axis, with ``s = clinical_signal`` or ``image_signal``.
* **Signal 0 means no signal for that class.** A case of a class with ``s[c] = 0``
  draws its latent as if it belonged to one of the classes with non-zero signal,
  picked at random in proportion to ``class_mix`` (a separate random stream), so in
  that modality the class is distributed exactly like the other classes taken
  together: its Bayes one-vs-rest AUC is 0.5. (Before generator version 2 it sat
  at the origin of the centred directions, which is not the average of the others:
  ``clinical_weak_for_R`` was not blind to R, Bayes R AUC ~0.92.) With fewer than two
  non-zero classes no class can differ from the rest, so every case sits at the
  origin (``(2, 0, 0)`` carries no signal, like ``(0, 0, 0)``).
* **Shared visit effect.** ``shared_effect`` (in [0, 1), default 0) is the share of
  the case-level noise variance common to the clinical and the image latent of the
  same case (same visit, same camera and thermometer): their noises correlate by
  ``shared_effect`` per axis, each modality's own spread is unchanged, so
  single-modality accuracy does not move but fusion gains less than under
  independence. ``shared_patient_share`` (in [0, 1], default 0) of the common part
  is fixed per patient instead of per visit. At 0 (default) the two latents are
  drawn independently: the modalities are conditionally independent given the
  label.
* **Clinical table.** The informative columns are the clinical latent (linear
  loadings) plus per-column noise, put on the column's real scale (wound and
  peri-ulcer temperatures -- I warm, R cool --, exudate amount and appearance,
  wound score, erythema, edema, maceration, pain). The other columns (age,
  weight, sex, side, foot aspect, location, diabetes type, heart conditions,
  onset, appointment days, intact skin temperature, offloading) are drawn
  independently of the label, including the time columns: ``Appt Days`` is the
  gap since the previous visit and ``Onset (Days)`` is fixed per ulcer, so no
  column leaks the visit order. Values are missing completely at random
  (2-20 % depending on the column). ``Healing Phase`` and ``Phase Confidence
  (%)`` are written as in the study (they leak the label; the loader drops them).
* **Thermal maps.** Per image (1-3 angles per case, ``no_image_fraction`` of cases
  have none) a foot-shaped skin temperature field (patient-level skin
  temperature, cooler toes, smooth random blobs, ambient background) gets an
  elliptical wound whose wound-vs-skin contrast is ``-1.5 * v0`` degC (I hot, R
  cool), whose size grows as ``exp(-0.15 * v0)`` and whose peri-wound rim is
  ``0.9 * v1`` degC warmer, ``v`` being the image latent plus a per-image
  jitter; then sensor noise, and viridis over 18..36 degC. Boxes are the
  wound ellipse's bounding box (``Xmax``/``Ymax`` exclusive) with +/-1 px
  annotation jitter.

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

Every generated file is a deterministic function of ``(preset, knobs,
random_state)``: the same seed gives byte-identical CSVs and PNGs. The labels,
the clinical noise, the image noise, the decoy classes of zero signals and the
shared visit effect come from separate random streams, so presets that differ only
in their signals share labels and structure for one seed (paired comparisons), and
a cohort without zero signals or shared effect is byte-identical to what generator
version 1 wrote (only ``clinical_weak_for_R``'s table changed in version 2).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .data import (BBOX_COLUMNS, BBOX_FILENAMES, CLINICAL_FILENAME, DEFAULT_IMAGE_DIRS, LABELS,
                   image_filename)
from ._io import atomic_write_bytes
from .errors import DataError

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

# Class directions in the shared 2-d latent space (axis 0: progress, axis 1: P-specific).
_DIRECTIONS = np.array([[-1.0, -0.35], [0.0, 0.6], [1.0, -0.35]])
_CASE_SD = 0.5          # case-level latent spread around the class mean
_IMAGE_JITTER_SD = 0.2  # extra latent spread per image of the same case
_TEMP_SPAN = (18.0, 36.0)  # degC mapped onto the colour map's ends

# The study's column order (the generator writes the subset it uses, in this order).
_REAL_COLUMN_ORDER = (
    "ID", "Patient#", "Age", "Sex (F:0, M:1)", "Weight (Kg)", "Height (cm)", "Smoking",
    "Alcohol Consumption", "Habits Score", "Type of Diabetes", "Heart Conditions",
    "Cancer History", "Sensory Peripheral", "Clinical Score", "Number of DFUs", "DFU#",
    "Side (Left:0, Right:1)", "Foot Aspect", "Location",
    "Location Grouped (Hallux:1,Toes,Middle,Heel,Ankle:5)", "Onset (Days)",
    "No Toes Deformities", "Bunion", "Claw", "Hammer", "Charcot Arthropathy",
    "Flat (Pes Planus) Arch", "Abnormally High Arch", "No Arch Deformities", "Foot Score",
    "Appt#", "Appt Days", "Wound Centre Temperature (°C)", "Peri-Ulcer Temperature (°C)",
    "Intact Skin Temperature (°C)", "Wound Centre Temperature Normalized (°C)",
    "Peri-Ulcer Temperature Normalized (°C)", "Pain Level", "Type of Pain",
    "Type of Pain Grouped", "Type of Pain2", "Type of Pain_Grouped2", "Wound Tunneling",
    "Exudate Amount (None:0,Minor,Medium,Severe:3)",
    "Exudate Appearance (Serous:1,Haemoserous,Bloody,Thick:4)", "Odor",
    "No Peri-ulcer Conditions (False:0, True:1)", "Erythema at Peri-ulcer",
    "Edema at Peri-ulcer", "Pale Colour at Peri-ulcer", "Maceration at Peri-ulcer",
    "Wound Score", "Dressing", "Dressing Grouped", "No Foot Abnormalities", "Foot Hair Loss",
    "Foot Dry Skin", "Foot Fissure Cracks", "Foot Callus", "Thickened Toenail",
    "Foot Fungal Nails", "Leg Score", "No Offloading", "Offloading: Therapeutic Footwear",
    "Offloading: Scotcast Boot or RCW", "Offloading: Half Shoes or Sandals",
    "Offloading: Total Contact Cast", "Offloading: Crutches, Walkers or Wheelchairs",
    "Offloading Score", "Healing Phase", "Phase Confidence (%)", "Healing Phase Abs",
)

# Missing-completely-at-random rates (before ``missing_scale``); temperatures go missing together.
_MISSING = {
    "Weight (Kg)": 0.03, "Type of Diabetes": 0.03, "Onset (Days)": 0.04, "Pain Level": 0.02,
    "Exudate Amount (None:0,Minor,Medium,Severe:3)": 0.03,
    "Exudate Appearance (Serous:1,Haemoserous,Bloody,Thick:4)": 0.20,
    "Wound Score": 0.03, "Offloading Score": 0.02,
}
_TEMPERATURE_COLUMNS = (
    "Wound Centre Temperature (°C)", "Peri-Ulcer Temperature (°C)",
    "Intact Skin Temperature (°C)", "Wound Centre Temperature Normalized (°C)",
    "Peri-Ulcer Temperature Normalized (°C)")
_PERI_COLUMNS = ("Erythema at Peri-ulcer", "Edema at Peri-ulcer", "Maceration at Peri-ulcer")
_TEMPERATURE_MISSING = 0.05
_PERI_MISSING = 0.02


# --------------------------------------------------------------------------- knobs


def _check_signal(name: str, value) -> tuple[float, float, float]:
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

    knobs["clinical_signal"] = _check_signal("clinical_signal", knobs["clinical_signal"])
    knobs["image_signal"] = _check_signal("image_signal", knobs["image_signal"])
    mix = _check_signal("class_mix", knobs["class_mix"])
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


def class_means(signal, class_mix) -> np.ndarray:
    """(3, 2) latent class means ``s[c] * centred d_c`` (see the module docstring).

    This is the mean of every class with a non-zero signal. A class with signal 0 has
    no mean of its own: its cases draw a decoy class (:func:`decoy_classes`), so the
    row returned for it (the origin) is not where its cases sit.
    """
    mix = np.asarray(class_mix, dtype=float)
    centred = _DIRECTIONS - (mix / mix.sum()) @ _DIRECTIONS
    return np.asarray(signal, dtype=float)[:, None] * centred


def decoy_classes(signal, class_mix, label, u) -> np.ndarray:
    """The class whose latent mean each case draws: its own, or a decoy when its signal is 0.

    A case of a class with signal 0 takes one of the classes with non-zero signal, at
    random in proportion to ``class_mix`` (``u``: one uniform draw per case), so its
    latent is distributed exactly as the other classes' taken together. With fewer than
    two non-zero classes no class can differ from the rest (the equalities force one
    shared distribution), so every case gets -1: the origin.
    """
    signal = np.asarray(signal, dtype=float)
    label = np.asarray(label, dtype=int)
    live = np.flatnonzero(signal > 0)
    if len(live) < 2:
        return np.full(len(label), -1, dtype=int)
    mix = np.asarray(class_mix, dtype=float)[live]
    cum = np.cumsum(mix / mix.sum())
    pick = live[np.minimum(np.searchsorted(cum, np.asarray(u, dtype=float), side="right"),
                           len(live) - 1)]
    return np.where(signal[label] > 0, label, pick)


def _case_means(signal, class_mix, label, u) -> np.ndarray:
    """(n, 2) latent mean of each case: its class mean, its decoy's, or the origin."""
    source = decoy_classes(signal, class_mix, label, u)
    means = np.vstack([class_means(signal, class_mix), np.zeros((1, 2))])
    return means[source]  # -1 indexes the appended origin row


def _mixed_noise(own: np.ndarray, common: np.ndarray, shared_effect: float) -> np.ndarray:
    """Case noise whose variance share ``shared_effect`` is ``common`` to both modalities."""
    if shared_effect == 0.0:
        return own  # exactly the unshared draw: cohorts without the knob keep their bytes
    return math.sqrt(1.0 - shared_effect) * own + math.sqrt(shared_effect) * common


def _draw_latents(random_state: int, knobs: dict) -> dict:
    """Structure, labels and both case latents, with the random streams positioned for the rest.

    Stream order is part of the output's identity: the clinical and image streams draw
    their case noise first, exactly as before the decoy and shared-effect streams
    existed (those two are extra children of the seed, unused by older cohorts), so a
    cohort without zero signals or shared effect is byte-identical to version 1.
    """
    seeds = np.random.SeedSequence(random_state).spawn(5)
    structure_seed, clinical_seed, image_seed, decoy_seed, shared_seed = seeds
    cases = _draw_structure(np.random.default_rng(structure_seed), knobs)
    n = len(cases)
    label = cases["label"].to_numpy()
    clinical_rng = np.random.default_rng(clinical_seed)
    clinical_own = clinical_rng.normal(0.0, _CASE_SD, size=(n, 2))
    # Each patient's thermal maps share one skin temperature level (drawn apart from the table).
    image_rng = np.random.default_rng(image_seed)
    skin_by_patient = {int(p): float(image_rng.normal(30.3, 2.2))
                       for p in np.unique(cases["patient"])}
    image_own = image_rng.normal(0.0, _CASE_SD, size=(n, 2))

    decoy_rng = np.random.default_rng(decoy_seed)
    clinical_u, image_u = decoy_rng.random(n), decoy_rng.random(n)
    common = _common_noise(np.random.default_rng(shared_seed), cases, knobs)
    effect = knobs["shared_effect"]
    clinical_noise = _mixed_noise(clinical_own, common, effect)
    image_noise = _mixed_noise(image_own, common, effect)
    clinical = _case_means(knobs["clinical_signal"], knobs["class_mix"], label, clinical_u) \
        + clinical_noise
    image = _case_means(knobs["image_signal"], knobs["class_mix"], label, image_u) + image_noise
    return {"cases": cases, "clinical_rng": clinical_rng, "image_rng": image_rng,
            "skin_by_patient": skin_by_patient, "clinical_latent": clinical,
            "image_latent": image, "clinical_noise": clinical_noise, "image_noise": image_noise}


def _common_noise(rng: np.random.Generator, cases: pd.DataFrame, knobs: dict) -> np.ndarray:
    """The shared camera/visit noise (sd ``_CASE_SD``): per visit, plus a per-patient part."""
    patients = cases["patient"].to_numpy()
    _, p_idx = np.unique(patients, return_inverse=True)
    visit = rng.normal(0.0, _CASE_SD, size=(len(cases), 2))
    patient = rng.normal(0.0, _CASE_SD, size=(int(p_idx.max()) + 1 if len(p_idx) else 0, 2))
    share = knobs["shared_patient_share"]
    return math.sqrt(1.0 - share) * visit + math.sqrt(share) * patient[p_idx]


def cohort_latents(preset: str = DEFAULT_PRESET, random_state: int = DEFAULT_SEED,
                   n_patients: int | None = None, **overrides) -> pd.DataFrame:
    """The cases and their true latents, exactly as :func:`generate_cohort` draws them.

    One row per case: ``patient``, ``appt``, ``dfu``, ``label``, the clinical latent
    ``clinical_0``/``clinical_1``, the case-level image latent ``image_0``/``image_1``
    (each thermal map adds its own jitter) and the two case noises ``*_noise_0/1``
    (latent minus its class or decoy mean). For checking the ground truth; writes nothing.
    """
    knobs = resolve_knobs(preset, n_patients=n_patients, **overrides)
    drawn = _draw_latents(int(random_state), knobs)
    frame = drawn["cases"][["patient", "appt", "dfu", "label"]].copy()
    for name in ("clinical_latent", "image_latent", "clinical_noise", "image_noise"):
        prefix = name.replace("_latent", "")
        for axis in range(2):
            frame[f"{prefix}_{axis}"] = drawn[name][:, axis]
    return frame


# --------------------------------------------------------------------------- structure, labels


def _draw_structure(rng: np.random.Generator, knobs: dict) -> pd.DataFrame:
    """Cases (patient, appt, dfu), their label and ulcer id; phases progress per ulcer."""
    n_appt_max = knobs["max_appointments"]
    # Fewer long follow-ups than short ones, as in the study (mean about 3 visits at 6 max).
    weights = np.linspace(1.0, 0.4, n_appt_max)
    weights /= weights.sum()
    patient_ids = np.sort(rng.choice(np.arange(1, 1000), size=knobs["n_patients"], replace=False)) \
        if knobs["n_patients"] < 999 else np.arange(1, knobs["n_patients"] + 1)
    rows = []
    ulcer = 0
    for patient in patient_ids:
        n_appts = int(rng.choice(np.arange(1, n_appt_max + 1), p=weights))
        n_ulcers = 2 if rng.random() < knobs["second_ulcer_fraction"] else 1
        for dfu in range(1, n_ulcers + 1):
            first = 0 if dfu == 1 else int(rng.integers(0, n_appts))
            start = rng.normal(0.0, 1.0)
            rate = rng.uniform(0.15, 0.6)
            for k, appt in enumerate(range(first, n_appts)):
                rows.append((int(patient), appt, dfu, ulcer, start + rate * k))
            ulcer += 1
    cases = pd.DataFrame(rows, columns=["patient", "appt", "dfu", "ulcer", "progress"])
    cases = cases.sort_values(["patient", "appt", "dfu"], kind="stable").reset_index(drop=True)
    cases["n_dfus"] = cases.groupby("patient")["dfu"].transform("max")
    # Rank by progress: exact marginal mix, monotone phases within each ulcer.
    order = np.argsort(cases["progress"].to_numpy(), kind="stable")
    cum = np.cumsum(knobs["class_mix"])
    cuts = np.rint(cum[:2] * len(cases)).astype(int)
    label = np.empty(len(cases), dtype=int)
    rank = np.empty(len(cases), dtype=int)
    rank[order] = np.arange(len(cases))
    label[:] = np.where(rank < cuts[0], 0, np.where(rank < cuts[1], 1, 2))
    cases["label"] = label
    return cases


# --------------------------------------------------------------------------- clinical table


def _ordinal(latent: np.ndarray, cuts) -> np.ndarray:
    return np.searchsorted(np.asarray(cuts, dtype=float), latent).astype(float)


def _clinical_table(rng: np.random.Generator, cases: pd.DataFrame, knobs: dict,
                    z: np.ndarray) -> pd.DataFrame:
    """The table from the clinical latent ``z`` (``rng`` already past the latent's noise)."""
    n = len(cases)
    label = cases["label"].to_numpy()
    z0, z1 = z[:, 0], z[:, 1]

    def noise(sd=1.0):
        return rng.normal(0.0, sd, size=n)

    patients = cases["patient"].to_numpy()
    uniq_p, p_idx = np.unique(patients, return_inverse=True)
    n_p = len(uniq_p)
    ulcers = cases["ulcer"].to_numpy()
    uniq_u, u_idx = np.unique(ulcers, return_inverse=True)
    n_u = len(uniq_u)

    # Patient-level columns (no class information).
    pid = rng.choice(np.arange(1000, 10000), size=n_p, replace=False)
    age = np.clip(np.rint(rng.normal(62, 11, n_p)), 27, 93)
    sex = np.where(rng.random(n_p) < 0.8, "M", "F")
    weight = np.round(np.clip(rng.normal(95, 24, n_p), 50, 200), 1)
    diabetes = np.where(rng.random(n_p) < 0.78, 2.0, 1.0)
    heart = (rng.random(n_p) < 0.45).astype(float)
    skin_base = rng.normal(30.3, 2.2, n_p)
    offloading = np.clip(rng.choice([0, 1, 1, 1, 2, 2, 3], size=n_p), 0, 3).astype(float)
    # Ulcer-level columns (no class information).
    side = np.where(rng.random(n_u) < 0.52, "Right", "Left")
    aspect = rng.choice(["Plantar", "Dorsal", "Lateral", "Medial"], p=[0.87, 0.1, 0.02, 0.01],
                        size=n_u)
    location = rng.choice(["Hallux", "toes", "middle", "Heel", "ankle"],
                          p=[0.36, 0.4, 0.14, 0.08, 0.02], size=n_u)
    onset = np.rint(np.clip(rng.lognormal(np.log(250), 1.1, n_u), 0, 7000))

    # Visit-level columns without class information.
    appt_days = np.rint(np.clip(rng.lognormal(np.log(24), 0.55, n), 5, 180))
    appt_days = np.where(rng.random(n) < 0.15, np.rint(rng.uniform(0, 120, n)), appt_days)
    intact = np.round(skin_base[p_idx] + noise(1.1), 1)

    # Informative columns: clinical latent (I low z0, R high z0; P high z1) plus noise.
    wound_norm = -0.005 - 0.05 * z0 + 0.05 * noise()
    peri_norm = 0.0 - 0.03 * z0 + 0.015 * z1 + 0.045 * noise()
    wound_temp = np.round(np.clip(intact * (1 + wound_norm), 14.0, 40.5), 1)
    peri_temp = np.round(np.clip(intact * (1 + peri_norm), 14.0, 39.5), 1)
    wound_norm = np.round(wound_temp / intact - 1, 5)  # consistent with the rounded readings
    peri_norm = np.round(peri_temp / intact - 1, 5)
    exudate = _ordinal(-0.8 * z0 + 0.5 * z1 + noise(), [-0.6, 0.9])
    appearance_latent = 0.8 * z1 - 0.3 * z0 + noise()
    appearance = np.where(appearance_latent > 0.4, "Bloody",
                          np.where(appearance_latent > -0.2, "Haemoserous", "Serous")).astype(object)
    appearance[rng.random(n) < 0.02] = "Thick"
    wound_score = _ordinal(-0.6 * z0 + 0.4 * z1 + noise(), [0.3, 1.3, 2.0, 2.6])
    erythema = (-0.9 * z0 + noise() > 0.9).astype(float)
    edema = (-0.6 * z0 + 0.5 * z1 + noise() > 0.5).astype(float)
    maceration = (0.7 * z1 + noise() > 0.9).astype(float)
    pain = _ordinal(-0.5 * z0 + noise(), [0.9, 1.4, 1.8, 2.2, 2.6])

    label_text = np.array(LABELS)[label]
    suffix = np.where(label == 2, rng.choice(["", "-"], size=n), rng.choice(["", "+", "-"], size=n))
    phase = np.char.add(label_text.astype(str), suffix.astype(str))
    confidence = rng.choice([60, 70, 80, 80, 90, 100], size=n).astype(float)

    columns = {
        "ID": pid[p_idx].astype(str), "Patient#": patients, "Age": age[p_idx],
        "Sex (F:0, M:1)": sex[p_idx], "Weight (Kg)": weight[p_idx],
        "Type of Diabetes": diabetes[p_idx], "Heart Conditions": heart[p_idx],
        "Number of DFUs": cases["n_dfus"].to_numpy(), "DFU#": cases["dfu"].to_numpy(),
        "Side (Left:0, Right:1)": side[u_idx], "Foot Aspect": aspect[u_idx],
        "Location Grouped (Hallux:1,Toes,Middle,Heel,Ankle:5)": location[u_idx],
        "Onset (Days)": onset[u_idx], "Appt#": cases["appt"].to_numpy(),
        "Appt Days": appt_days,
        "Wound Centre Temperature (°C)": wound_temp, "Peri-Ulcer Temperature (°C)": peri_temp,
        "Intact Skin Temperature (°C)": intact,
        "Wound Centre Temperature Normalized (°C)": wound_norm,
        "Peri-Ulcer Temperature Normalized (°C)": peri_norm,
        "Pain Level": pain,
        "Exudate Amount (None:0,Minor,Medium,Severe:3)": exudate,
        "Exudate Appearance (Serous:1,Haemoserous,Bloody,Thick:4)": appearance,
        "Erythema at Peri-ulcer": erythema, "Edema at Peri-ulcer": edema,
        "Maceration at Peri-ulcer": maceration, "Wound Score": wound_score,
        "Offloading Score": offloading[p_idx],
        "Healing Phase": phase, "Phase Confidence (%)": confidence,
        "Healing Phase Abs": label_text,
    }
    frame = pd.DataFrame(columns)
    frame = frame[[c for c in _REAL_COLUMN_ORDER if c in frame.columns]]

    scale = knobs["missing_scale"]
    for col, rate in _MISSING.items():
        frame[col] = frame[col].astype(object).where(rng.random(n) >= rate * scale)
    for group, rate in ((_TEMPERATURE_COLUMNS, _TEMPERATURE_MISSING), (_PERI_COLUMNS, _PERI_MISSING)):
        gone = rng.random(n) < rate * scale
        for col in group:
            frame[col] = frame[col].astype(object).where(~gone)
    return frame


def _format_table(frame: pd.DataFrame) -> bytes:
    """CSV bytes, UTF-8 with a byte-order mark; whole numbers without a trailing '.0'."""
    out = pd.DataFrame(index=frame.index)
    for col in frame.columns:
        values = frame[col]
        text = []
        for v in values:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                text.append("")
            elif isinstance(v, (float, np.floating)):
                text.append(str(int(v)) if float(v).is_integer() else repr(round(float(v), 5)))
            else:
                text.append(str(v))
        out[col] = text
    return ("\ufeff" + out.to_csv(index=False, lineterminator="\n")).encode("utf-8")


# --------------------------------------------------------------------------- thermal maps


def _viridis_lut() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["viridis"](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).round().astype(np.uint8)


def _render_thermal(rng: np.random.Generator, v: np.ndarray, skin: float, angle: str,
                    knobs: dict, lut: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One thermal map (H, W, 3 uint8) and its wound box (xmin, ymin, xmax, ymax), max exclusive."""
    width, height = knobs["image_width"], knobs["image_height"]
    sx, sy = width / 64.0, height / 80.0
    yy, xx = np.mgrid[0:height, 0:width].astype(float)

    # Foot: an ellipse narrowing towards the heel (bottom), shifted/squeezed by the angle.
    shift = {"L": -4.0, "M": 0.0, "R": 4.0}[angle] * sx
    cx = width / 2 + shift + rng.normal(0, 1.5) * sx
    cy = height * 0.53 + rng.normal(0, 1.5) * sy
    ax = (19.0 if angle == "M" else 16.5) * sx * rng.uniform(0.93, 1.07)
    ay = 34.0 * sy * rng.uniform(0.95, 1.05)
    rel_y = (yy - cy) / ay
    half_width = ax * (1.0 - 0.28 * np.clip(rel_y, 0.0, 1.0))
    radius = np.sqrt(((xx - cx) / half_width) ** 2 + rel_y ** 2)
    foot = 1.0 / (1.0 + np.exp((radius - 1.0) * 14.0))

    ambient = rng.normal(22.0, 1.0) + 0.6 * (yy / height - 0.5)
    toes = np.clip(-rel_y, 0.0, 1.0) ** 2
    skin_field = skin - 1.6 * toes
    for _ in range(3):
        bx, by = rng.uniform(0, width), rng.uniform(0, height)
        sigma = rng.uniform(8, 15) * sx
        skin_field += rng.normal(0, 0.5) * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * sigma ** 2))

    # Wound: an ellipse inside the foot; contrast, size and warm rim carry the class signal.
    contrast = -1.5 * v[0]
    rim = 0.9 * v[1]
    size = math.exp(-0.15 * v[0])
    rx = rng.uniform(4.0, 6.5) * sx * size
    ry = rx * rng.uniform(0.75, 1.3) * sy / sx
    for _ in range(20):  # place the wound well inside the foot
        wx = cx + rng.uniform(-0.45, 0.45) * ax
        wy = cy + rng.uniform(-0.65, 0.6) * ay
        if radius[int(np.clip(wy, 0, height - 1)), int(np.clip(wx, 0, width - 1))] < 0.6:
            break
    rho = np.sqrt(((xx - wx) / rx) ** 2 + ((yy - wy) / ry) ** 2)
    wound = 1.0 / (1.0 + np.exp((rho - 1.0) * 6.0))
    ring = np.exp(-(((rho - 1.5) / 0.45) ** 2))
    texture = rng.normal(0, 0.25, size=xx.shape) * wound

    temperature = (ambient * (1 - foot)
                   + foot * (skin_field + contrast * wound + rim * ring + texture)
                   + rng.normal(0, knobs["image_noise"], size=xx.shape))
    low, high = _TEMP_SPAN
    index = np.clip(np.rint((temperature - low) / (high - low) * 255.0), 0, 255).astype(np.intp)
    rgb = lut[index]

    jitter = rng.integers(-1, 2, size=4)
    xmin = int(np.clip(math.floor(wx - rx) + jitter[0], 0, width - 2))
    ymin = int(np.clip(math.floor(wy - ry) + jitter[1], 0, height - 2))
    xmax = int(np.clip(math.ceil(wx + rx) + 1 + jitter[2], xmin + 2, width))
    ymax = int(np.clip(math.ceil(wy + ry) + 1 + jitter[3], ymin + 2, height))
    return rgb, (xmin, ymin, xmax, ymax)


def _png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _write_images(rng: np.random.Generator, cases: pd.DataFrame, skin_by_patient: dict,
                  knobs: dict, folder: Path, latent: np.ndarray) -> pd.DataFrame:
    """Thermal maps from the case-level image ``latent`` (``rng`` already past its noise)."""
    lut = _viridis_lut()
    n = len(cases)
    has_image = rng.random(n) >= knobs["no_image_fraction"]
    max_images = knobs["max_images_per_case"]
    count_p = np.array([0.3, 0.3, 0.4][:max_images])
    counts = rng.choice(np.arange(1, max_images + 1), p=count_p / count_p.sum(), size=n)
    angle_sets = {1: ["M"], 2: None, 3: ["L", "M", "R"]}
    rows = []
    number = 1
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if not has_image[i]:
            continue
        patient, appt, dfu = (int(cases.at[i, k]) for k in ("patient", "appt", "dfu"))
        angles = angle_sets[counts[i]] or ["M", str(rng.choice(["L", "R"]))]
        for angle in sorted(angles, key="LMR".index):
            v = latent[i] + rng.normal(0.0, _IMAGE_JITTER_SD, size=2)
            rgb, box = _render_thermal(rng, v, skin_by_patient[patient], angle, knobs, lut)
            name = image_filename(number, patient, appt, dfu, "B", "T", angle, "W")
            (folder / name).write_bytes(_png_bytes(rgb))
            rows.append((name, patient, appt, dfu, "B", "T", angle + "W", 1, *box))
            number += 1
    return pd.DataFrame(rows, columns=list(BBOX_COLUMNS))


# --------------------------------------------------------------------------- writing


def _is_generated(folder: Path) -> bool:
    try:
        meta = json.loads((folder / "cohort.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "preset" in meta and "knobs" in meta


def generate_cohort(out_dir: str | Path, preset: str = DEFAULT_PRESET, random_state: int = DEFAULT_SEED,
                    n_patients: int | None = None, **overrides) -> Path:
    """Write a synthetic cohort folder that :func:`fusionlib.data.load_cohort` reads.

    Parameters
    ----------
    out_dir : folder to create. An existing folder is replaced only when it is empty
        or itself a generated cohort (it has a ``cohort.json``); anything else is a
        DataError, so user data is never overwritten.
    preset : a key of :data:`PRESETS`.
    random_state : int seed; the same seed gives byte-identical files.
    n_patients : number of patients (default 120).
    **overrides : any knob of :data:`DEFAULT_KNOBS` (e.g. ``clinical_signal=(1, 1, 0)``,
        ``image_signal``, ``no_image_fraction``, ``class_mix``).

    The folder is built under a temporary name beside ``out_dir`` and renamed into
    place, so an interrupted run never leaves a half-written cohort.

    Returns the folder's path.
    """
    knobs = resolve_knobs(preset, n_patients=n_patients, **overrides)
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)) or random_state < 0:
        raise ValueError(f"random_state must be a non-negative integer, got {random_state!r}")
    random_state = int(random_state)
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DataError("cannot write a synthetic cohort here: a file of that name exists", out_dir)
        if any(out_dir.iterdir()) and not _is_generated(out_dir):
            raise DataError("cannot write a synthetic cohort here: the folder exists and is not a "
                            "generated cohort (no cohort.json); refusing to overwrite it", out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    drawn = _draw_latents(random_state, knobs)
    cases = drawn["cases"]
    table = _clinical_table(drawn["clinical_rng"], cases, knobs, drawn["clinical_latent"])

    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        boxes = _write_images(drawn["image_rng"], cases, drawn["skin_by_patient"], knobs,
                              tmp / DEFAULT_IMAGE_DIRS["thermal_map"], drawn["image_latent"])
        atomic_write_bytes(tmp / CLINICAL_FILENAME, _format_table(table))
        if len(boxes):
            atomic_write_bytes(tmp / BBOX_FILENAMES["thermal"],
                          boxes.to_csv(index=False, lineterminator="\n").encode("utf-8"))
        else:  # the loader refuses a box table without rows; a table-only cohort is valid
            (tmp / DEFAULT_IMAGE_DIRS["thermal_map"]).rmdir()
        counts = np.bincount(cases["label"], minlength=3)
        custom = any(k in overrides for k in ("clinical_signal", "image_signal", "class_mix",
                                              "shared_effect", "shared_patient_share"))
        meta = {
            "name": f"synthetic:{preset}",
            "preset": preset,
            "random_state": random_state,
            "generator_version": GENERATOR_VERSION,
            "generator_digest": _generator_digest(),
            "knobs": {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()},
            "summary": {
                "ground truth": (_ground_truth_line(knobs) if custom
                                 else PRESETS[preset]["ground_truth"]),
                "generated": f"preset {preset}, seed {random_state}, {len(cases)} cases, "
                             f"{len(boxes)} thermal maps",
            },
            "counts": {lab: int(c) for lab, c in zip(LABELS, counts)},
        }
        atomic_write_bytes(tmp / "cohort.json", (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir



def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the finished folder ``tmp`` with renames; on failure keep the old one."""
    os.chmod(tmp, 0o755)
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    trash = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
    os.replace(out_dir, trash / "old")
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(trash / "old", out_dir)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)

def _ground_truth_line(knobs: dict) -> str:
    c, i = knobs["clinical_signal"], knobs["image_signal"]
    line = (f"per-class signal (I, P, R): clinical s=({c[0]:g}, {c[1]:g}, {c[2]:g}), "
            f"thermal images s=({i[0]:g}, {i[1]:g}, {i[2]:g})")
    if knobs["shared_effect"] > 0:
        line += (f"; shared visit effect {knobs['shared_effect']:g} of the case noise variance"
                 f" ({knobs['shared_patient_share']:g} of it per patient)")
    return line


# --------------------------------------------------------------------------- default location


def _data_root() -> Path:
    env = os.environ.get("FUSIONLIB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").is_file() and (repo / "fusionlib").is_dir():
        return repo / "data" / "generated"
    return Path.cwd() / "data" / "generated"


def default_cohort_dir(preset: str = DEFAULT_PRESET, random_state: int = DEFAULT_SEED) -> Path:
    """Where the embedded default cohort lives: ``<root>/<preset>_seed<seed>``.

    ``<root>`` is ``$FUSIONLIB_DATA_DIR`` when set, else ``data/generated`` in the
    source checkout (editable install), else ``./data/generated``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return _data_root() / f"{preset}_seed{int(random_state)}"


def ensure_default_cohort(preset: str = DEFAULT_PRESET, random_state: int = DEFAULT_SEED) -> Path:
    """The default cohort's folder, generated first if absent or stale (idempotent)."""
    folder = default_cohort_dir(preset, random_state)
    if _is_current(folder, preset, random_state):
        return folder
    try:
        generate_cohort(folder, preset=preset, random_state=random_state)
    except OSError:
        # Another process may have put the same cohort in place meanwhile.
        if not _is_current(folder, preset, random_state):
            raise
    return folder


def _generator_digest() -> str:
    """Hash of this module's source: an edited generator never reuses a stale default cohort
    (a forgotten GENERATOR_VERSION bump once left results computed on an old cohort)."""
    import hashlib

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _is_current(folder: Path, preset: str, random_state: int) -> bool:
    try:
        meta = json.loads((folder / "cohort.json").read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("preset") == preset and meta.get("random_state") == int(random_state)
            and meta.get("generator_version") == GENERATOR_VERSION
            and meta.get("generator_digest") == _generator_digest()
            and meta.get("knobs", {}).get("n_patients") == DEFAULT_KNOBS["n_patients"]
            and (folder / CLINICAL_FILENAME).is_file())


# --------------------------------------------------------------------------- real labels, synthetic images

REAL_SYNTHETIC_VERSION = 2
"""Bumped whenever :func:`synthesize_thermal_images` output changes (stale folders are rebuilt)."""
REAL_SYNTHETIC_NAME = "real+synthetic-thermal"


def _signal_text(signal) -> str:
    return "(" + ", ".join(f"{float(s):g}" for s in signal) + ")"


def synthesize_thermal_images(clinical_csv_or_folder: str | Path, out_dir: str | Path,
                              image_signal=(0.9, 0.9, 1.3), random_state: int = 0,
                              no_image_fraction: float = 0.15) -> Path:
    """A cohort folder pairing the REAL clinical table with SYNTHETIC thermal maps.

    Reads the real clinical table (a CSV path, or a folder holding
    ``DataMaster_Processed_V12_WithMissing.csv``) with
    :func:`fusionlib.data.read_clinical_table`, and writes ``out_dir`` (meant to be a
    generated, git-ignored folder such as ``data/generated/...``) with a copy of the
    table, a ``Thermal_Map_IMG/`` folder of thermal maps drawn by the synthetic
    renderer conditioned on each case's TRUE healing phase at the per-class
    ``image_signal`` (I, P, R) -- the same latent model as :func:`generate_cohort`,
    with ``class_mix`` set to the table's own label shares --, their
    ``bounding_box_thermal.csv`` and a ``cohort.json`` named
    ``"real+synthetic-thermal"`` whose summary says the images are synthetic.

    A case key that repeats in the table gets images once (the loader attaches them
    to its first record). ``no_image_fraction`` of the cases get no image, so the
    missing-modality rule is exercised. The folder is built beside ``out_dir`` and
    renamed into place; an existing folder is replaced only when it is empty or
    itself a generated cohort. Deterministic for one ``random_state``.
    """
    from .data import read_clinical_table

    source = Path(clinical_csv_or_folder)
    if source.is_dir():
        source = source / CLINICAL_FILENAME
    signal = _check_signal("image_signal", image_signal)
    knobs = resolve_knobs(DEFAULT_PRESET, image_signal=signal, no_image_fraction=no_image_fraction)
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)) or random_state < 0:
        raise ValueError(f"random_state must be a non-negative integer, got {random_state!r}")
    table = read_clinical_table(source)
    first = table.cases[~table.cases["case_id"].str.contains("r", regex=False)]
    cases = first[["patient", "appt", "dfu", "label"]].reset_index(drop=True)
    too_big = (cases["patient"] > 999) | (cases["appt"] > 99) | (cases["dfu"] > 9)
    if too_big.any():
        raise DataError("a case key does not fit the image file-name convention "
                        "(Patient# <= 999, Appt# <= 99, DFU# <= 9)", source)
    counts = np.bincount(cases["label"], minlength=3).astype(float)
    knobs["class_mix"] = tuple(round(c, 6) for c in (np.maximum(counts, 1) / max(counts.sum(), 1)))

    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DataError("cannot write a cohort here: a file of that name exists", out_dir)
        if any(out_dir.iterdir()) and not (_is_generated(out_dir) or _is_real_synthetic(out_dir)):
            raise DataError("cannot write a cohort here: the folder exists and is not a "
                            "generated cohort (no cohort.json); refusing to overwrite it", out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(np.random.SeedSequence([int(random_state), 7331]))
    skin_by_patient = {int(p): float(rng.normal(30.3, 2.2)) for p in np.unique(cases["patient"])}
    # Case noise first from the main stream (as before); decoys for zero signals from their own.
    own = rng.normal(0.0, _CASE_SD, size=(len(cases), 2))
    decoy_u = np.random.default_rng(np.random.SeedSequence([int(random_state), 7331, 1])).random(
        len(cases))
    latent = _case_means(signal, knobs["class_mix"], cases["label"].to_numpy(), decoy_u) + own
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        boxes = _write_images(rng, cases, skin_by_patient, knobs,
                              tmp / DEFAULT_IMAGE_DIRS["thermal_map"], latent)
        shutil.copyfile(source, tmp / CLINICAL_FILENAME)
        atomic_write_bytes(tmp / BBOX_FILENAMES["thermal"],
                      boxes.to_csv(index=False, lineterminator="\n").encode("utf-8"))
        with_image = boxes.drop_duplicates(["Patient#", "Appt#", "DFU#"]).shape[0]
        meta = {
            "name": REAL_SYNTHETIC_NAME,
            "synthesized_from": str(source.resolve()),
            "source_sha256": _file_sha256(source),
            "image_signal": list(signal),
            "random_state": int(random_state),
            "no_image_fraction": float(no_image_fraction),
            "version": REAL_SYNTHETIC_VERSION,
            "knobs": {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()},
            "summary": {
                "images": f"thermal images are SYNTHETIC, rendered from the true labels at signal "
                          f"(I,P,R)={_signal_text(signal)}",
                "generated": f"real clinical table {source.name} ({table.n_cases} rows), seed "
                             f"{int(random_state)}, {len(boxes)} synthetic thermal maps for "
                             f"{with_image} of {len(cases)} case keys",
            },
        }
        atomic_write_bytes(tmp / "cohort.json", (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _is_real_synthetic(folder: Path) -> bool:
    try:
        meta = json.loads((folder / "cohort.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("name") == REAL_SYNTHETIC_NAME


def real_synthetic_dir(image_signal=(0.9, 0.9, 1.3), random_state: int = 0) -> Path:
    """Where :func:`ensure_real_synthetic_cohort` keeps its folder (under the generated-data root)."""
    signal = _check_signal("image_signal", image_signal)
    tag = "_".join(f"{s:g}" for s in signal)
    return _data_root() / f"real_synthimg_{tag}_seed{int(random_state)}"


def ensure_real_synthetic_cohort(data_dir: str | Path, image_signal=(0.9, 0.9, 1.3),
                                 random_state: int = 0) -> Path:
    """The real-table + synthetic-thermal folder, (re)built when absent or stale (idempotent).

    Stale means: another source table (by content hash), signal, seed or generator version.
    """
    source = Path(data_dir)
    if source.is_dir():
        source = source / CLINICAL_FILENAME
    if not source.is_file():
        raise DataError("clinical table not found (dataset real_synthetic_images needs the real "
                         "table; set data_dir or $FUSIONLIB_DFU_DIR)", source)
    signal = _check_signal("image_signal", image_signal)
    folder = real_synthetic_dir(signal, random_state)

    def current() -> bool:
        try:
            meta = json.loads((folder / "cohort.json").read_text())
        except (OSError, ValueError):
            return False
        return (meta.get("name") == REAL_SYNTHETIC_NAME
                and meta.get("version") == REAL_SYNTHETIC_VERSION
                and meta.get("image_signal") == list(signal)
                and meta.get("random_state") == int(random_state)
                and meta.get("source_sha256") == _file_sha256(source)
                and (folder / CLINICAL_FILENAME).is_file())

    if current():
        return folder
    try:
        synthesize_thermal_images(source, folder, image_signal=signal, random_state=random_state)
    except OSError:
        if not current():  # another process may have put the same folder in place meanwhile
            raise
    return folder
