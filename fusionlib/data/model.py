"""The cohort data model: :class:`Cohort`, the study's column and file-name conventions.

A :class:`Cohort` holds one record per case -- a (patient, appointment, ulcer)
visit -- with its ordinal label (I=0, P=1, R=2), its clinical features and zero
or more images per modality with optional wound bounding boxes.

The on-disk formats are the study's:

* the clinical table (``DataMaster_Processed_V12_WithMissing.csv``): UTF-8 with
  a byte-order mark, one row per visit, text categories and missing values;
* bounding-box tables (``bounding_box_thermal.csv``, ``bounding_box_depth.csv``);
* one folder of PNGs per image modality, named
  ``{n}_P{patient:03d}{appt:02d}{dfu:1d}{B|A}{D|T}{R|M|L}{Z|W}.png``.

Nothing here reads a file except :func:`file_digest` (content keys); the readers
are in :mod:`fusionlib.data.readers`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .problems import FolderProblems

LABELS = ("I", "P", "R")
"""Healing phases in ordinal order; a label's integer code is its index here."""
N_CLASSES = len(LABELS)
"""The number of phases: the width of every probability array."""


@dataclass(frozen=True)
class Modality:
    """One image modality: everything the library knows about it, in one place.

    Attributes
    ----------
    name : str
        The name parameter files, output files and reports use (``data.modalities``).
    folder : str
        Its image folder under a cohort folder (the study's layout).
    camera : str
        The camera that takes it; modalities of one camera share its bounding-box table.
    box_table : str
        File name of that bounding-box table beside the clinical table.
    label : str
        A human label, for messages.
    generated : bool
        Whether the synthetic generators (the ``synthetic`` cohort and the real table's
        ``real_synthetic_images``) write it; validation refuses the others on those datasets.
    """

    name: str
    folder: str
    camera: str
    box_table: str
    label: str
    generated: bool = False


IMAGE_MODALITIES = {m.name: m for m in (
    Modality("thermal_map", "Thermal_Map_IMG", "thermal", "bounding_box_thermal.csv",
             "thermal-camera temperature maps", generated=True),
    Modality("depth_rgb", "Depth_RGB", "depth", "bounding_box_depth.csv",
             "depth-camera colour photographs"),
    Modality("depth_map", "Depth_Map_IMG", "depth", "bounding_box_depth.csv",
             "depth-camera depth maps"),
    Modality("thermal_rgb", "Thermal_RGB", "thermal", "bounding_box_thermal.csv",
             "thermal-camera colour photographs"),
)}
"""Image modality name -> its :class:`Modality`, in the order reports list them."""

# Views of IMAGE_MODALITIES under their older names (the readers and the generator use them).
MODALITIES = tuple(IMAGE_MODALITIES)
"""Image modalities known to the library, in the order reports list them."""
MODALITY_CAMERA = {m.name: m.camera for m in IMAGE_MODALITIES.values()}
BBOX_FILENAMES = {m.camera: m.box_table for m in IMAGE_MODALITIES.values()}
"""Camera -> its bounding-box table's file name."""
# Grouped by camera: the order the folders have always been scanned in, which is the order of
# a cohort's image rows and so enters Cohort.fingerprint (the branch cache's key).
DEFAULT_IMAGE_DIRS = {m.name: m.folder for m in sorted(
    IMAGE_MODALITIES.values(), key=lambda m: list(BBOX_FILENAMES).index(m.camera))}
GENERATED_MODALITIES = tuple(m.name for m in IMAGE_MODALITIES.values() if m.generated)
"""The image modalities the synthetic generators write."""

CLINICAL_FILENAME = "DataMaster_Processed_V12_WithMissing.csv"

KEY_COLUMNS = ("Patient#", "Appt#", "DFU#")
LABEL_COLUMN = "Healing Phase Abs"
IDENTIFIER_COLUMNS = ("ID", "Patient#", "Appt#", "DFU#")
LEAKING_COLUMNS = ("Healing Phase", "Phase Confidence (%)")
# Free text with dozens of spellings; each has a grouped twin that is a feature.
FREE_TEXT_COLUMNS = ("Location", "Type of Pain", "Type of Pain2", "Dressing")

NUMERIC_FEATURES = (
    "Age", "Weight (Kg)", "Height (cm)", "Smoking", "Alcohol Consumption", "Habits Score",
    "Type of Diabetes", "Heart Conditions", "Cancer History", "Sensory Peripheral",
    "Clinical Score", "Number of DFUs", "Onset (Days)", "No Toes Deformities", "Bunion",
    "Claw", "Hammer", "Charcot Arthropathy", "Flat (Pes Planus) Arch",
    "Abnormally High Arch", "No Arch Deformities", "Foot Score", "Appt Days",
    "Wound Centre Temperature (°C)", "Peri-Ulcer Temperature (°C)",
    "Intact Skin Temperature (°C)", "Wound Centre Temperature Normalized (°C)",
    "Peri-Ulcer Temperature Normalized (°C)", "Pain Level", "Wound Tunneling",
    "Exudate Amount (None:0,Minor,Medium,Severe:3)",
    "No Peri-ulcer Conditions (False:0, True:1)", "Erythema at Peri-ulcer",
    "Edema at Peri-ulcer", "Pale Colour at Peri-ulcer", "Maceration at Peri-ulcer",
    "Wound Score", "No Foot Abnormalities", "Foot Hair Loss", "Foot Dry Skin",
    "Foot Fissure Cracks", "Foot Callus", "Thickened Toenail", "Foot Fungal Nails",
    "Leg Score", "No Offloading", "Offloading: Therapeutic Footwear",
    "Offloading: Scotcast Boot or RCW", "Offloading: Half Shoes or Sandals",
    "Offloading: Total Contact Cast", "Offloading: Crutches, Walkers or Wheelchairs",
    "Offloading Score",
)
"""Clinical columns used as numbers. Values must parse as numbers (or be empty)."""

CATEGORICAL_FEATURES = (
    "Sex (F:0, M:1)", "Side (Left:0, Right:1)", "Foot Aspect",
    "Location Grouped (Hallux:1,Toes,Middle,Heel,Ankle:5)", "Type of Pain Grouped",
    "Type of Pain_Grouped2", "Exudate Appearance (Serous:1,Haemoserous,Bloody,Thick:4)",
    "Odor", "Dressing Grouped",
)
"""Clinical columns used as text categories (encoded on training rows only)."""

FEATURES = NUMERIC_FEATURES + CATEGORICAL_FEATURES

FILENAME_PATTERN = re.compile(
    r"^(?P<n>\d+)_P(?P<patient>\d{3})(?P<appt>\d{2})(?P<dfu>\d)"
    r"(?P<debridement>[BA])(?P<camera>[DT])(?P<angle>[RML])(?P<zoom>[ZW])\.png$"
)
BBOX_COLUMNS = ("Filename", "Patient#", "Appt#", "DFU#", "DebriStat", "Camera", "Angle",
                "Bounding Box Number", "Xmin", "Ymin", "Xmax", "Ymax")
IMAGE_COLUMNS = ("case_id", "modality", "path", "xmin", "ymin", "xmax", "ymax")


def file_digest(path: str | Path) -> str:
    """``<size>-<sha256 of the bytes>`` of a file: what image caches and fingerprints key on.

    Content, not path or modification time: a file rewritten in place (or a folder
    swapped for another with the same names) must not reuse results of the old
    pixels. SHA-256 costs about 2 ms per 3 MB PNG, a tenth of decoding it
    (docs/protocol.md, cache section).
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return f"{path.stat().st_size}-{digest}"
    except OSError:
        raise DataError("image not found or not readable", path) from None


def case_id(patient: int, appt: int, dfu: int, repeat: int = 0) -> str:
    """Stable text key of a case; ``repeat`` tells apart rows that share a key."""
    base = f"P{patient:03d}A{appt:02d}U{dfu}"
    return base if repeat == 0 else f"{base}r{repeat}"


def image_filename(n: int, patient: int, appt: int, dfu: int, debridement: str = "B",
                   camera: str = "T", angle: str = "M", zoom: str = "W") -> str:
    """The study's image file name for the given parts (inverse of :func:`parse_image_filename`)."""
    return f"{n}_P{patient:03d}{appt:02d}{dfu:1d}{debridement}{camera}{angle}{zoom}.png"


def parse_image_filename(name: str) -> dict | None:
    """Parts of a study image file name, or ``None`` when it does not follow the convention."""
    match = FILENAME_PATTERN.match(name)
    if match is None:
        return None
    parts = match.groupdict()
    for key in ("n", "patient", "appt", "dfu"):
        parts[key] = int(parts[key])
    return parts


@dataclass
class Cohort:
    """A labelled cohort: cases, their clinical features and their images.

    Attributes
    ----------
    cases : DataFrame
        One row per case, index ``0..n-1``, columns ``case_id`` (str), ``patient``,
        ``appt``, ``dfu`` and ``label`` (int codes into :data:`LABELS`).
    features : DataFrame
        Same index as ``cases``; numeric columns as float, categorical ones as str.
    images : DataFrame
        Columns :data:`IMAGE_COLUMNS`; one row per image, boxes NaN when absent.
    name : str
        Short name for reports ("synthetic:dfu_like", "real:dfu", ...).
    root : Path or None
        Folder the cohort was read from (image paths are absolute).
    meta : dict
        Free-form facts, e.g. a synthetic cohort's ground truth.
    source : Path or None
        The clinical table the cases came from (named in data errors).
    """

    cases: pd.DataFrame
    features: pd.DataFrame
    images: pd.DataFrame = field(default_factory=lambda: empty_images())
    name: str = "cohort"
    root: Path | None = None
    meta: dict = field(default_factory=dict)
    source: Path | None = None

    @property
    def n_cases(self) -> int:
        return len(self.cases)

    @property
    def y(self) -> np.ndarray:
        return self.cases["label"].to_numpy(dtype=int)

    @property
    def groups(self) -> np.ndarray:
        return self.cases["patient"].to_numpy(dtype=int)

    @property
    def numeric_features(self) -> list[str]:
        return [c for c in self.features.columns if c not in CATEGORICAL_FEATURES]

    @property
    def categorical_features(self) -> list[str]:
        return [c for c in self.features.columns if c in CATEGORICAL_FEATURES]

    @property
    def modalities(self) -> list[str]:
        present = set(self.images["modality"])
        return [m for m in MODALITIES if m in present]

    def images_of(self, modality: str) -> pd.DataFrame:
        """Image rows of one modality, in case order."""
        rows = self.images[self.images["modality"] == modality]
        order = pd.Series(np.arange(self.n_cases), index=self.cases["case_id"])
        return rows.assign(_case=order.reindex(rows["case_id"]).to_numpy()).sort_values(
            ["_case", "path"], kind="stable").drop(columns="_case")

    def has_modality(self, modality: str) -> np.ndarray:
        """Boolean mask over cases: does the case have at least one image of ``modality``."""
        ids = set(self.images.loc[self.images["modality"] == modality, "case_id"])
        return self.cases["case_id"].isin(ids).to_numpy()

    def subset(self, index) -> "Cohort":
        """A new cohort with the cases at positions ``index`` (renumbered from 0)."""
        index = np.asarray(index, dtype=int)
        cases = self.cases.iloc[index].reset_index(drop=True)
        features = self.features.iloc[index].reset_index(drop=True)
        images = self.images[self.images["case_id"].isin(set(cases["case_id"]))]
        return Cohort(cases, features, images.reset_index(drop=True), self.name, self.root,
                      dict(self.meta), self.source)

    def fingerprint(self) -> str:
        """Content hash of cases, features, image list and image bytes; 16 hex digits.

        Each image counts by name, box and :func:`file_digest` (size and SHA-256 of
        its bytes), so changed pixels under the same name give a new fingerprint.
        """
        digest = hashlib.sha256()
        digest.update(self.cases.to_csv(index=False).encode())
        digest.update(self.features.to_csv(index=False).encode())
        images = self.images.copy()
        images["content"] = [file_digest(p) for p in images["path"]]
        images["path"] = [Path(p).name for p in images["path"]]  # location-independent
        digest.update(images.to_csv(index=False).encode())
        return digest.hexdigest()[:16]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.y, minlength=len(LABELS))
        return {label: int(c) for label, c in zip(LABELS, counts)}

    def summary(self) -> str:
        """A short human-readable description (used by ``fusionlib cohort``)."""
        counts = self.class_counts()
        total = max(self.n_cases, 1)
        mix = ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in counts.items())
        per_patient = self.cases.groupby("patient").size()
        missing = float(self.features.isna().to_numpy().mean()) if self.features.size else 0.0
        lines = [
            f"cohort {self.name}: {self.n_cases} cases from {self.cases['patient'].nunique()} "
            f"patients ({per_patient.mean():.1f} visits per patient, max {per_patient.max()})",
            f"  phases: {mix}",
            f"  clinical features: {self.features.shape[1]} "
            f"({len(self.numeric_features)} numeric, {len(self.categorical_features)} categorical), "
            f"{100 * missing:.1f}% of values missing",
        ]
        for modality in MODALITIES:
            rows = self.images[self.images["modality"] == modality]
            if len(rows):
                with_img = self.has_modality(modality).sum()
                boxed = rows["xmin"].notna().mean()
                lines.append(
                    f"  {modality}: {len(rows)} images for {with_img} cases "
                    f"({100 * with_img / total:.0f}% of cases; {100 * boxed:.0f}% with a box)")
        if not len(self.images):
            lines.append("  images: none")
        for key, value in self.meta.get("summary", {}).items():
            lines.append(f"  {key}: {value}")
        problems = self.meta.get("problems")
        if problems:
            lines.append(f"  data-folder problems (files left out): {problems.get('total', 0)}")
            lines.extend(f"    {line}" for line in FolderProblems.from_dict(problems).summary())
        return "\n".join(lines)


def empty_images() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c in ("xmin", "ymin", "xmax", "ymax")
                                      else "str") for c in IMAGE_COLUMNS})
