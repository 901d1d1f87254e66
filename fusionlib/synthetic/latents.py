"""Structure, labels and the two case latents: what every generated file is drawn from.

The class directions, the decoy rule for zero signals and the shared visit effect are
described in :mod:`fusionlib.synthetic` (package docstring). Stream order is part of
the output's identity: reordering a draw here changes every cohort's bytes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .presets import DEFAULT_PRESET, DEFAULT_SEED, resolve_knobs

# Class directions in the shared 2-d latent space (axis 0: progress, axis 1: P-specific).
_DIRECTIONS = np.array([[-1.0, -0.35], [0.0, 0.6], [1.0, -0.35]])
CASE_SD = 0.5          # case-level latent spread around the class mean


def class_means(signal, class_mix) -> np.ndarray:
    """(3, 2) latent class means ``s[c] * centred d_c`` (see :mod:`fusionlib.synthetic`).

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


def case_means(signal, class_mix, label, u) -> np.ndarray:
    """(n, 2) latent mean of each case: its class mean, its decoy's, or the origin."""
    source = decoy_classes(signal, class_mix, label, u)
    means = np.vstack([class_means(signal, class_mix), np.zeros((1, 2))])
    return means[source]  # -1 indexes the appended origin row


def _mixed_noise(own: np.ndarray, common: np.ndarray, shared_effect: float) -> np.ndarray:
    """Case noise whose variance share ``shared_effect`` is ``common`` to both modalities."""
    if shared_effect == 0.0:
        return own  # exactly the unshared draw: cohorts without the knob keep their bytes
    return math.sqrt(1.0 - shared_effect) * own + math.sqrt(shared_effect) * common


def draw_latents(random_state: int, knobs: dict) -> dict:
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
    clinical_own = clinical_rng.normal(0.0, CASE_SD, size=(n, 2))
    # Each patient's thermal maps share one skin temperature level (drawn apart from the table).
    image_rng = np.random.default_rng(image_seed)
    skin_by_patient = {int(p): float(image_rng.normal(30.3, 2.2))
                       for p in np.unique(cases["patient"])}
    image_own = image_rng.normal(0.0, CASE_SD, size=(n, 2))

    decoy_rng = np.random.default_rng(decoy_seed)
    clinical_u, image_u = decoy_rng.random(n), decoy_rng.random(n)
    common = _common_noise(np.random.default_rng(shared_seed), cases, knobs)
    effect = knobs["shared_effect"]
    clinical_noise = _mixed_noise(clinical_own, common, effect)
    image_noise = _mixed_noise(image_own, common, effect)
    clinical = case_means(knobs["clinical_signal"], knobs["class_mix"], label, clinical_u) \
        + clinical_noise
    image = case_means(knobs["image_signal"], knobs["class_mix"], label, image_u) + image_noise
    return {"cases": cases, "clinical_rng": clinical_rng, "image_rng": image_rng,
            "skin_by_patient": skin_by_patient, "clinical_latent": clinical,
            "image_latent": image, "clinical_noise": clinical_noise, "image_noise": image_noise}


def _common_noise(rng: np.random.Generator, cases: pd.DataFrame, knobs: dict) -> np.ndarray:
    """The shared camera/visit noise (sd ``CASE_SD``): per visit, plus a per-patient part."""
    patients = cases["patient"].to_numpy()
    _, p_idx = np.unique(patients, return_inverse=True)
    visit = rng.normal(0.0, CASE_SD, size=(len(cases), 2))
    patient = rng.normal(0.0, CASE_SD, size=(int(p_idx.max()) + 1 if len(p_idx) else 0, 2))
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
    drawn = draw_latents(int(random_state), knobs)
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
