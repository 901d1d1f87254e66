"""The cohort data layer: one in-memory representation, and loaders for the real formats.

A :class:`Cohort` holds one record per case -- a (patient, appointment, ulcer)
visit -- with its ordinal label (I=0, P=1, R=2), its clinical features and zero
or more images per modality with optional wound bounding boxes.

The on-disk formats are the study's:

* the clinical table (``DataMaster_Processed_V12_WithMissing.csv``): UTF-8 with
  a byte-order mark, one row per visit, text categories and missing values;
* bounding-box tables (``bounding_box_thermal.csv``, ``bounding_box_depth.csv``);
* one folder of PNGs per image modality, named
  ``{n}_P{patient:03d}{appt:02d}{dfu:1d}{B|A}{D|T}{R|M|L}{Z|W}.png``.

The synthetic cohort (:mod:`fusionlib.cohort`) writes exactly these formats, so
the default run goes through the same loader as real data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

logger = logging.getLogger("fusionlib")

LABELS = ("I", "P", "R")
"""Healing phases in ordinal order; a label's integer code is its index here."""

MODALITIES = ("thermal_map", "depth_rgb", "depth_map", "thermal_rgb")
"""Image modalities known to the library, in the order reports list them."""

CLINICAL_FILENAME = "DataMaster_Processed_V12_WithMissing.csv"
BBOX_FILENAMES = {"thermal": "bounding_box_thermal.csv", "depth": "bounding_box_depth.csv"}
# Which camera (and so which bounding-box table) each modality comes from.
MODALITY_CAMERA = {"thermal_map": "thermal", "thermal_rgb": "thermal",
                   "depth_rgb": "depth", "depth_map": "depth"}
DEFAULT_IMAGE_DIRS = {"thermal_map": "Thermal_Map_IMG", "thermal_rgb": "Thermal_RGB",
                      "depth_rgb": "Depth_RGB", "depth_map": "Depth_Map_IMG"}

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
    images: pd.DataFrame = field(default_factory=lambda: _empty_images())
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


def _empty_images() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c in ("xmin", "ymin", "xmax", "ymax")
                                      else "str") for c in IMAGE_COLUMNS})


# --------------------------------------------------------------------------- CSV reading


def read_csv_checked(path: str | Path, required: tuple[str, ...] = (), what: str = "table") -> pd.DataFrame:
    """Read a CSV as text columns, turning every way it can be unusable into a DataError.

    Handles a byte-order mark, a missing or empty file, binary content and missing
    required columns; returns a DataFrame of ``str`` columns (NaN for empty cells).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} not found", path)
    if path.is_dir():
        raise DataError(f"expected a CSV file for the {what}, found a folder", path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{what} is empty", path)
    if b"\x00" in raw[:4096]:
        raise DataError(f"{what} is not a CSV text file (binary content)", path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{what} is not UTF-8 text (byte {err.start})", path) from None
    import io

    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise DataError(f"{what} is not a readable CSV: {detail}", path) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        shown = ", ".join(repr(c) for c in list(frame.columns)[:6])
        raise DataError(
            f"{what} is missing required column {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f"; found columns {shown}{', ...' if frame.shape[1] > 6 else ''}", path)
    if frame.empty:
        raise DataError(f"{what} has a header but no rows", path)
    return frame


def _to_number(frame: pd.DataFrame, column: str, path: Path, integer: bool = False) -> pd.Series:
    """Parse one text column as numbers; text that is not a number is a DataError."""
    text = frame[column]
    numbers = pd.to_numeric(text, errors="coerce")
    bad = text.notna() & numbers.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"column {column!r}, line {row + 2}: expected a number, got "
                        f"{text.iloc[row]!r}", path)
    # "inf", "-inf" and overflowing literals (1e999) parse as numbers but break every model
    # later without naming the column; text "nan" stays a missing value.
    infinite = np.isinf(numbers.to_numpy(dtype=float))
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise DataError(f"column {column!r}, line {row + 2}: expected a finite number, got "
                        f"{text.iloc[row]!r}", path)
    if integer:
        if numbers.isna().any():
            row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
            raise DataError(f"column {column!r}, line {row + 2}: value is missing; "
                            f"expected an integer", path)
        # Beyond 2**53 a float no longer holds every integer (and int64 casts wrap around).
        unfit = (numbers != numbers.round()) | (numbers.abs() > 2 ** 53)
        if unfit.any():
            row = int(np.flatnonzero(unfit.to_numpy())[0])
            raise DataError(f"column {column!r}, line {row + 2}: expected an integer, got "
                            f"{text.iloc[row]!r}", path)
        return numbers.astype(int)
    return numbers.astype(float)


def read_clinical_table(path: str | Path, features: str | list[str] | tuple = "auto",
                        name: str | None = None) -> Cohort:
    """Read a clinical table in the study's format into a :class:`Cohort` (no images).

    Parameters
    ----------
    path : path to the CSV (UTF-8, a byte-order mark is fine).
    features : "auto" or list of str
        "auto" uses every column of :data:`FEATURES` present in the file (at least
        one must be); an explicit list requires each named column. Identifiers,
        the label and the label-leaking columns are refused as features.
    name : name for reports; defaults to the file's stem.

    Raises
    ------
    DataError
        Missing/empty/non-CSV file, missing key or label column, a label outside
        I/P/R, text in a numeric column, or one case key with conflicting labels.
    """
    path = Path(path)
    frame = read_csv_checked(path, required=KEY_COLUMNS + (LABEL_COLUMN,), what="clinical table")
    forbidden = set(IDENTIFIER_COLUMNS) | set(LEAKING_COLUMNS) | {LABEL_COLUMN}
    if isinstance(features, str):
        if features != "auto":
            raise ValueError(f"features must be 'auto' or a list of column names, got {features!r}")
        chosen = [c for c in FEATURES if c in frame.columns]
        if not chosen:
            raise DataError("clinical table has none of the documented feature columns "
                            f"(for example {FEATURES[0]!r})", path)
    else:
        chosen = list(features)
        leaking = [c for c in chosen if c in forbidden]
        if leaking:
            raise ValueError(f"column {leaking[0]!r} is an identifier, the label or leaks the "
                             f"label; it cannot be a feature")
        absent = [c for c in chosen if c not in frame.columns]
        if absent:
            raise DataError(f"clinical table is missing required column {absent[0]!r}", path)

    keys = {col: _to_number(frame, col, path, integer=True) for col in KEY_COLUMNS}
    labels_text = frame[LABEL_COLUMN].str.strip()
    code = {label: i for i, label in enumerate(LABELS)}
    unknown = ~labels_text.isin(list(LABELS))
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataError(f"column {LABEL_COLUMN!r}, line {row + 2}: label "
                        f"{frame[LABEL_COLUMN].iloc[row]!r} is not one of I, P, R", path)
    labels = labels_text.map(code).astype(int)

    cases = pd.DataFrame({"patient": keys["Patient#"], "appt": keys["Appt#"],
                          "dfu": keys["DFU#"], "label": labels})
    # The same key twice is a repeated visit record; it is kept only if the label agrees.
    repeat = cases.groupby(["patient", "appt", "dfu"]).cumcount()
    conflict = cases.groupby(["patient", "appt", "dfu"])["label"].transform("nunique") > 1
    if conflict.any():
        row = int(np.flatnonzero(conflict.to_numpy())[0])
        p, a, d = (int(cases.iloc[row][k]) for k in ("patient", "appt", "dfu"))
        lines = [i + 2 for i in np.flatnonzero(
            ((cases["patient"] == p) & (cases["appt"] == a) & (cases["dfu"] == d)).to_numpy())]
        raise DataError(f"case (Patient# {p}, Appt# {a}, DFU# {d}) appears on lines "
                        f"{', '.join(map(str, lines))} with conflicting labels", path)
    cases.insert(0, "case_id", [case_id(p, a, d, r) for p, a, d, r in
                                zip(cases["patient"], cases["appt"], cases["dfu"], repeat)])
    cases["case_id"] = cases["case_id"].astype("str")

    columns = {}
    for col in chosen:
        if col in CATEGORICAL_FEATURES:
            columns[col] = frame[col].str.strip().astype("str")
        else:
            columns[col] = _to_number(frame, col, path)
    features_frame = pd.DataFrame(columns, index=cases.index)
    # A table whose features are all empty still "trains" (on imputed constants) and reports
    # a meaningless score; refuse it here, where the file can be named.
    if chosen and features_frame.isna().all().all():
        raise DataError(f"clinical table has no usable feature: all {len(chosen)} feature "
                        f"columns are empty", path)
    return Cohort(cases=cases, features=features_frame, name=name or path.stem, root=path.parent,
                  source=path)


def read_bounding_boxes(path: str | Path) -> pd.DataFrame:
    """Read a bounding-box table; returns Filename, keys and integer box corners.

    A box whose corners are not ordered (Xmin >= Xmax or Ymin >= Ymax) is a DataError.
    """
    path = Path(path)
    frame = read_csv_checked(path, required=BBOX_COLUMNS, what="bounding-box table")
    out = pd.DataFrame({"Filename": frame["Filename"].str.strip().astype("str")})
    for col in ("Patient#", "Appt#", "DFU#", "Bounding Box Number", "Xmin", "Ymin", "Xmax", "Ymax"):
        out[col] = _to_number(frame, col, path, integer=True)
    bad = (out["Xmin"] >= out["Xmax"]) | (out["Ymin"] >= out["Ymax"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"line {row + 2}: box corners are not ordered "
                        f"(Xmin < Xmax and Ymin < Ymax expected)", path)
    return out


PROBLEM_KINDS = {
    "unreadable_image": "unreadable or corrupt PNG",
    "bad_filename": "file name outside the convention",
    "no_clinical_row": "image with no clinical row",
    "box_outside_image": "box outside the image",
    "box_without_image": "box but no image",
}
"""Kinds of data-folder problem :func:`scan_images` collects, with their readable names."""


@dataclass
class FolderProblems:
    """Problems found while scanning a cohort folder: counts per kind and the first few files.

    Files with a problem are left out of the cohort; the rest loads normally.
    ``examples[kind]`` holds up to ``keep`` names (``folder/file.png`` relative to the
    cohort folder; for ``box_without_image`` the box table's Filename).
    """

    root: str = ""
    counts: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)
    keep: int = 5

    def add(self, kind: str, name: str) -> None:
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}; expected one of {', '.join(PROBLEM_KINDS)}")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < self.keep:
            shown.append(name)

    @property
    def total(self) -> int:
        return int(sum(self.counts.values()))

    def __bool__(self) -> bool:
        return self.total > 0

    def to_dict(self) -> dict:
        """Plain, JSON-able form (what ``cohort.meta["problems"]`` holds)."""
        return {"root": self.root, "total": self.total,
                "counts": {k: int(self.counts[k]) for k in PROBLEM_KINDS if k in self.counts},
                "examples": {k: list(self.examples[k]) for k in PROBLEM_KINDS if k in self.examples}}

    @classmethod
    def from_dict(cls, data: dict) -> "FolderProblems":
        return cls(root=data.get("root", ""), counts=dict(data.get("counts", {})),
                   examples={k: list(v) for k, v in data.get("examples", {}).items()})

    def summary(self) -> list[str]:
        """Readable lines: one per kind with its count and first files (none when clean)."""
        lines = []
        for kind, label in PROBLEM_KINDS.items():
            n = self.counts.get(kind, 0)
            if n:
                shown = ", ".join(self.examples.get(kind, []))
                more = ", ..." if n > len(self.examples.get(kind, [])) else ""
                lines.append(f"{label}: {n} ({shown}{more})")
        return lines

    def one_line(self) -> str:
        """``N problems: 2 corrupt..., 1 ...; first: <file>`` for a strict-mode DataError."""
        parts = [f"{self.counts[k]} {label}" for k, label in PROBLEM_KINDS.items() if self.counts.get(k)]
        first = next((self.examples[k][0] for k in PROBLEM_KINDS if self.examples.get(k)), None)
        return (f"{self.total} data-folder problem{'s' if self.total != 1 else ''} "
                f"({', '.join(parts)}); first: {first}")


def load_cohort(root: str | Path, *, clinical: str = CLINICAL_FILENAME,
                image_dirs: dict[str, str] | None = None, features: str | list[str] = "auto",
                name: str | None = None, strict: bool = False) -> Cohort:
    """Load a cohort folder laid out as the study's (clinical table, box tables, image folders).

    Image folders that do not exist are skipped (a table-only cohort is valid).
    Each image is matched to its case by (patient, appointment, ulcer); a case key
    that repeats in the table gets the images on its first record. The wound box
    comes from the camera's bounding-box table (the first box for that file name).
    Several images per case are normal.

    Problems in the image folders (see :data:`PROBLEM_KINDS`: a corrupt PNG, a file
    name outside the convention, an image with no clinical row, a box outside its
    image, a box row whose file is not in an existing modality folder) do not stop
    the load: the files concerned are left out and a summary is kept in
    ``cohort.meta["problems"]`` (a plain dict, see :class:`FolderProblems`), which
    :meth:`Cohort.summary` prints. With ``strict=True`` any problem is a DataError
    naming the folder, the counts per kind and the first file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("cohort folder not found", root)
    cohort = read_clinical_table(root / clinical, features=features, name=name or root.name)
    cohort.root = root
    meta_file = root / "cohort.json"
    if meta_file.exists():
        cohort.meta = json.loads(meta_file.read_text())
        cohort.name = name or cohort.meta.get("name", cohort.name)
    problems = FolderProblems(root=str(root))
    cohort.images = scan_images(root, cohort.cases, image_dirs or DEFAULT_IMAGE_DIRS, problems)
    if problems:
        if strict:
            raise DataError(problems.one_line(), root)
        cohort.meta["problems"] = problems.to_dict()
    cohort.meta["dropped_images"] = dropped = dropped_images(problems)
    if dropped["count"]:
        reasons = ", ".join(f"{n} {PROBLEM_KINDS[k]}" for k, n in dropped["by_reason"].items())
        logger.warning("%s: %d image%s dropped (%s)", root, dropped["count"],
                       "s" if dropped["count"] != 1 else "", reasons)
    return cohort


DROPPED_KINDS = ("unreadable_image", "bad_filename", "no_clinical_row", "box_outside_image")
"""Problem kinds that leave an image file out of the cohort (a box row without image is not one)."""


def dropped_images(problems: FolderProblems | dict | None) -> dict:
    """``{"count": n, "by_reason": {kind: n}}``: image files a folder scan left out, by reason."""
    if isinstance(problems, dict):
        problems = FolderProblems.from_dict(problems)
    counts = {} if problems is None else problems.counts
    by_reason = {k: int(counts[k]) for k in DROPPED_KINDS if counts.get(k)}
    return {"count": int(sum(by_reason.values())), "by_reason": by_reason}


def scan_images(root: Path, cases: pd.DataFrame, image_dirs: dict[str, str],
                problems: FolderProblems | None = None) -> pd.DataFrame:
    """Find each modality's PNGs under ``root`` and match them to cases and boxes.

    Every readable, well-named image with a clinical row (and a box inside it, when
    it has a box) becomes one row; the others are recorded in ``problems`` (a
    :class:`FolderProblems`, created and dropped when not given) and left out.
    Hidden files are ignored. Each PNG is checked with Pillow's ``verify`` (header
    and chunk checksums, no decoding).
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    problems = problems if problems is not None else FolderProblems(root=str(root))
    first_record = cases.drop_duplicates(["patient", "appt", "dfu"], keep="first")
    key_to_case = {(p, a, d): c for c, p, a, d in zip(
        first_record["case_id"], first_record["patient"], first_record["appt"], first_record["dfu"])}
    boxes = {}
    for camera, filename in BBOX_FILENAMES.items():
        if (root / filename).exists():
            table = read_bounding_boxes(root / filename).drop_duplicates("Filename")
            boxes[camera] = table.set_index("Filename")[["Xmin", "Ymin", "Xmax", "Ymax"]]
    rows = []
    for modality, folder in image_dirs.items():
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        directory = root / folder
        if not directory.is_dir():
            continue
        table = boxes.get(MODALITY_CAMERA[modality])
        present = set()
        for path in sorted(directory.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            present.add(path.name)
            shown = f"{folder}/{path.name}"
            parts = parse_image_filename(path.name)
            if parts is None:
                problems.add("bad_filename", shown)
                continue
            case = key_to_case.get((parts["patient"], parts["appt"], parts["dfu"]))
            if case is None:
                problems.add("no_clinical_row", shown)
                continue
            try:
                with Image.open(path) as opened:
                    width, height = opened.size
                    opened.verify()
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError,
                    Image.DecompressionBombError):
                problems.add("unreadable_image", shown)
                continue
            box = (table.loc[path.name].to_numpy(dtype=float)
                   if table is not None and path.name in table.index else np.full(4, np.nan))
            if not np.isnan(box).any() and (box[0] < 0 or box[1] < 0 or box[2] > width
                                            or box[3] > height):
                problems.add("box_outside_image", shown)
                continue
            rows.append((case, modality, str(path.resolve()), *box))
        if table is not None:
            for filename in table.index:
                if filename not in present:
                    problems.add("box_without_image", f"{folder}/{filename}")
    if not rows:
        return _empty_images()
    images = pd.DataFrame(rows, columns=list(IMAGE_COLUMNS))
    images["case_id"] = images["case_id"].astype("str")
    images["modality"] = images["modality"].astype("str")
    images["path"] = images["path"].astype("str")
    return images
