"""Readers for the study's on-disk formats: the clinical table, box tables, image folders.

Every way a file can be unusable becomes a one-line :class:`fusionlib.errors.DataError`
naming the file (and the line or column); problems inside image folders are
collected in a :class:`~fusionlib.data.problems.FolderProblems` instead, so one bad
PNG does not stop a load. The synthetic cohort (:mod:`fusionlib.synthetic`) writes
exactly these formats, so the default run goes through the same loader as real data.
"""

from __future__ import annotations

import csv
import json
import logging
import stat
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .model import (BBOX_COLUMNS, BBOX_FILENAMES, CATEGORICAL_FEATURES, CLINICAL_FILENAME,
                    DEFAULT_IMAGE_DIRS, FEATURES, IDENTIFIER_COLUMNS, IMAGE_COLUMNS, KEY_COLUMNS,
                    LABEL_COLUMN, LABELS, LEAKING_COLUMNS, MODALITIES, MODALITY_CAMERA, Cohort,
                    empty_images, case_id, parse_image_filename)
from .problems import PROBLEM_KINDS, FolderProblems, dropped_images

logger = logging.getLogger("fusionlib")

# --------------------------------------------------------------------------- CSV reading


def read_csv_checked(path: str | Path, required: tuple[str, ...] = (), what: str = "table") -> pd.DataFrame:
    """Read a CSV as text columns, turning every way it can be unusable into a DataError.

    Handles a byte-order mark, UTF-16/32 with one (Excel's "Unicode text", tab-separated),
    a missing or empty file, binary content and missing required columns; returns a
    DataFrame of ``str`` columns (NaN for empty cells).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} not found", path)
    if path.is_dir():
        raise DataError(f"expected a CSV file for the {what}, found a folder", path)
    raw = path.read_bytes()
    text = _decode_table(raw, path, what)
    if not text.strip():
        raise DataError(f"{what} is empty", path)
    import io

    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, skipinitialspace=True,
                            sep=_separator(text))
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


_UNICODE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32", "UTF-32"), (b"\x00\x00\xfe\xff", "utf-32", "UTF-32"),
                 (b"\xff\xfe", "utf-16", "UTF-16"), (b"\xfe\xff", "utf-16", "UTF-16"))
"""Byte-order marks of the wide encodings (UTF-32 first: its LE mark begins with UTF-16's)."""


def _decode_table(raw: bytes, path: Path, what: str) -> str:
    """A table file's text: UTF-8 (a byte-order mark is fine), or UTF-16/32 with their mark.

    Excel's "Unicode text" export writes UTF-16 with a byte-order mark (and tabs); it
    is read like the UTF-8 file. Without a mark, NUL bytes are refused as binary content,
    and as UTF-16 with the command that converts it when every other byte is NUL.
    """
    for bom, codec, label in _UNICODE_BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(codec)
            except UnicodeDecodeError as err:
                raise DataError(f"{what} is not {label} text despite its {label} byte-order "
                                f"mark (byte {err.start})", path) from None
    head = raw[:4096]
    if b"\x00" in head:
        even, odd = head[0::2], head[1::2]
        for zeros, chars, order in ((odd, even, "LE"), (even, odd, "BE")):
            if (len(chars) > 1 and zeros.count(0) >= 0.9 * len(zeros)
                    and chars.count(0) <= 0.1 * len(chars)):   # mostly ASCII text, not zeros
                raise DataError(f"{what} looks like UTF-16 text without a byte-order mark; save "
                                f"it as UTF-8 (for example: iconv -f UTF-16{order} -t UTF-8 "
                                f"{path.name} > new{path.suffix})", path)
        raise DataError(f"{what} is not a CSV text file (binary content)", path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{what} is not UTF-8 text (byte {err.start})", path) from None


def _separator(text: str) -> str:
    """``","``, or a tab when the header splits into more fields on tabs (Excel's Unicode text)."""
    header = (text.lstrip("\ufeff").splitlines() or [""])[0]
    try:
        by_tab = len(next(csv.reader([header], delimiter="\t"), []))
        by_comma = len(next(csv.reader([header]), []))
    except csv.Error:               # pandas reports what is wrong with the file
        return ","
    return "\t" if by_tab > by_comma else ","


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
    path : path to the CSV (UTF-8, a byte-order mark is fine; UTF-16 with its mark, comma-
        or tab-separated, as Excel's "Unicode text" export writes, is read too).
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


COHORT_FILE = "cohort.json"
"""A generated cohort's stamp: how the folder was made (preset or source table, seed,
generator version), its name and summary lines. Real data folders have none."""


def read_cohort_stamp(folder: str | Path) -> dict | None:
    """The folder's :data:`COHORT_FILE` as a dict, or None when it has none; a DataError
    naming the file when it cannot be read or holds no JSON object.

    The one reader of the stamp: the loader takes its name and summary, the generators
    (:mod:`fusionlib.synthetic`) whether a folder is theirs and still current."""
    path = Path(folder) / COHORT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the cohort stamp: {getattr(err, 'strerror', None) or err}",
                        path) from None
    try:
        stamp = json.loads(text)
    except ValueError as err:
        raise DataError(f"the cohort stamp is not valid JSON ({err})", path) from None
    if not isinstance(stamp, dict):
        raise DataError(f"the cohort stamp must be a JSON object, got a {type(stamp).__name__}",
                        path)
    return stamp


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
    stamp = read_cohort_stamp(root)
    if stamp is not None:
        cohort.meta = stamp
        cohort.name = name or stamp.get("name", cohort.name)
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



def _not_a_regular_file(path: Path) -> str | None:
    """Why a folder entry is no image file: a problem kind, ``"subfolder"``, or None (a file).

    A dangling or looping symbolic link is ``broken_link``; a folder named like an image
    (``*.png``), a pipe, socket or device is ``not_a_file`` (never opened: a pipe would
    block); any other folder is a ``subfolder``, not a candidate image. An entry that
    cannot be examined at all (no permission) is ``unreadable_image``.
    """
    try:
        mode = path.stat().st_mode          # follows links
    except OSError:
        return "broken_link" if path.is_symlink() else "unreadable_image"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode) and path.suffix.lower() != ".png":
        return "subfolder"
    return "not_a_file"


def scan_images(root: Path, cases: pd.DataFrame, image_dirs: dict[str, str],
                problems: FolderProblems | None = None) -> pd.DataFrame:
    """Find each modality's PNGs under ``root`` and match them to cases and boxes.

    Every readable, well-named image with a clinical row (and a box inside it, when
    it has a box) becomes one row; the others are recorded in ``problems`` (a
    :class:`FolderProblems`, created and dropped when not given) and left out, as are
    broken links and folders named ``*.png``. Hidden files and other subfolders are
    ignored. Each PNG is checked with Pillow's ``verify`` (header
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
            if path.name.startswith("."):
                continue
            shown = f"{folder}/{path.name}"
            kind = _not_a_regular_file(path)
            if kind == "subfolder":
                continue
            present.add(path.name)
            if kind is not None:
                problems.add(kind, shown)
                continue
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
        return empty_images()
    images = pd.DataFrame(rows, columns=list(IMAGE_COLUMNS))
    images["case_id"] = images["case_id"].astype("str")
    images["modality"] = images["modality"].astype("str")
    images["path"] = images["path"].astype("str")
    return images
