"""The synthetic clinical table: the study's columns from the clinical latent, and its CSV bytes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..data import LABELS

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


# --------------------------------------------------------------------------- clinical table


def _ordinal(latent: np.ndarray, cuts) -> np.ndarray:
    return np.searchsorted(np.asarray(cuts, dtype=float), latent).astype(float)


def clinical_table(rng: np.random.Generator, cases: pd.DataFrame, knobs: dict,
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


def format_table(frame: pd.DataFrame) -> bytes:
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
