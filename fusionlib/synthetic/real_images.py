"""The REAL clinical table paired with SYNTHETIC thermal maps (dataset ``real_synthetic_images``)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes, staged_folder
from ..data import (BBOX_FILENAMES, CLINICAL_FILENAME, COHORT_FILE, DEFAULT_IMAGE_DIRS,
                    read_clinical_table)
from ..errors import DataError
from ..settings import check_seed
from .latents import CASE_SD, case_means
from .presets import DEFAULT_PRESET, check_signal, resolve_knobs
from .rendering import write_images
from .storage import data_root, generated_stamp, is_generated

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
    source = Path(clinical_csv_or_folder)
    if source.is_dir():
        source = source / CLINICAL_FILENAME
    signal = check_signal("image_signal", image_signal)
    knobs = resolve_knobs(DEFAULT_PRESET, image_signal=signal, no_image_fraction=no_image_fraction)
    random_state = check_seed(random_state)
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
        if any(out_dir.iterdir()) and not (is_generated(out_dir) or _is_real_synthetic(out_dir)):
            raise DataError("cannot write a cohort here: the folder exists and is not a "
                            "generated cohort (no cohort.json); refusing to overwrite it", out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(np.random.SeedSequence([int(random_state), 7331]))
    skin_by_patient = {int(p): float(rng.normal(30.3, 2.2)) for p in np.unique(cases["patient"])}
    # Case noise first from the main stream (as before); decoys for zero signals from their own.
    own = rng.normal(0.0, CASE_SD, size=(len(cases), 2))
    decoy_u = np.random.default_rng(np.random.SeedSequence([int(random_state), 7331, 1])).random(
        len(cases))
    latent = case_means(signal, knobs["class_mix"], cases["label"].to_numpy(), decoy_u) + own
    with staged_folder(out_dir) as tmp:
        boxes = write_images(rng, cases, skin_by_patient, knobs,
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
        atomic_write_bytes(tmp / COHORT_FILE, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return out_dir


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _is_real_synthetic(folder: Path) -> bool:
    return generated_stamp(folder).get("name") == REAL_SYNTHETIC_NAME


def real_synthetic_dir(image_signal=(0.9, 0.9, 1.3), random_state: int = 0) -> Path:
    """Where :func:`ensure_real_synthetic_cohort` keeps its folder (under the generated-data root)."""
    signal = check_signal("image_signal", image_signal)
    tag = "_".join(f"{s:g}" for s in signal)
    return data_root() / f"real_synthimg_{tag}_seed{int(random_state)}"


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
    signal = check_signal("image_signal", image_signal)
    folder = real_synthetic_dir(signal, random_state)

    def current() -> bool:
        meta = generated_stamp(folder)
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
