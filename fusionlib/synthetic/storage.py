"""Writing a generated cohort folder, and the default cohort's location and staleness check."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes, staged_folder
from ..data import (BBOX_FILENAMES, CLINICAL_FILENAME, COHORT_FILE, DEFAULT_IMAGE_DIRS, LABELS,
                    read_cohort_stamp)
from ..errors import DataError
from ..settings import check_seed
from .latents import draw_latents
from .presets import (DEFAULT_KNOBS, DEFAULT_PRESET, DEFAULT_SEED, GENERATOR_VERSION, PRESETS,
                      resolve_knobs)
from .rendering import write_images
from .table import clinical_table, format_table

# --------------------------------------------------------------------------- writing


def generated_stamp(folder: Path) -> dict:
    """The folder's cohort stamp (:func:`fusionlib.data.read_cohort_stamp`), or ``{}`` when it
    has none or an unreadable one: then the folder is not a generated cohort (never
    overwritten) or not a current one (rebuilt)."""
    try:
        return read_cohort_stamp(folder) or {}
    except DataError:
        return {}


def is_generated(folder: Path) -> bool:
    meta = generated_stamp(folder)
    return "preset" in meta and "knobs" in meta


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
    random_state = check_seed(random_state)
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DataError("cannot write a synthetic cohort here: a file of that name exists", out_dir)
        if any(out_dir.iterdir()) and not is_generated(out_dir):
            raise DataError("cannot write a synthetic cohort here: the folder exists and is not a "
                            "generated cohort (no cohort.json); refusing to overwrite it", out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    drawn = draw_latents(random_state, knobs)
    cases = drawn["cases"]
    table = clinical_table(drawn["clinical_rng"], cases, knobs, drawn["clinical_latent"])

    with staged_folder(out_dir) as tmp:
        boxes = write_images(drawn["image_rng"], cases, drawn["skin_by_patient"], knobs,
                             tmp / DEFAULT_IMAGE_DIRS["thermal_map"], drawn["image_latent"])
        atomic_write_bytes(tmp / CLINICAL_FILENAME, format_table(table))
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
        atomic_write_bytes(tmp / COHORT_FILE, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return out_dir



def _ground_truth_line(knobs: dict) -> str:
    c, i = knobs["clinical_signal"], knobs["image_signal"]
    line = (f"per-class signal (I, P, R): clinical s=({c[0]:g}, {c[1]:g}, {c[2]:g}), "
            f"thermal images s=({i[0]:g}, {i[1]:g}, {i[2]:g})")
    if knobs["shared_effect"] > 0:
        line += (f"; shared visit effect {knobs['shared_effect']:g} of the case noise variance"
                 f" ({knobs['shared_patient_share']:g} of it per patient)")
    return line


# --------------------------------------------------------------------------- default location


def data_root() -> Path:
    env = os.environ.get("FUSIONLIB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]   # fusionlib/synthetic/storage.py -> checkout
    if (repo / "pyproject.toml").is_file() and (repo / "fusionlib").is_dir():
        return repo / "data" / "generated"
    return Path.cwd() / "data" / "generated"


def default_cohort_dir(preset: str = DEFAULT_PRESET, random_state: int = DEFAULT_SEED,
                       n_patients: int | None = None) -> Path:
    """Where the embedded default cohort lives: ``<root>/<preset>_seed<seed>``, with
    ``_n<patients>`` appended for a cohort of other than the default number of patients.

    ``<root>`` is ``$FUSIONLIB_DATA_DIR`` when set, else ``data/generated`` in the
    source checkout (editable install), else ``./data/generated``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    size = "" if n_patients in (None, DEFAULT_KNOBS["n_patients"]) else f"_n{int(n_patients)}"
    return data_root() / f"{preset}_seed{int(random_state)}{size}"


def ensure_default_cohort(preset: str = DEFAULT_PRESET, random_state: int = DEFAULT_SEED,
                          n_patients: int | None = None) -> Path:
    """The default cohort's folder (of ``n_patients`` patients, default 120), generated first
    if absent or stale (idempotent)."""
    n_patients = DEFAULT_KNOBS["n_patients"] if n_patients is None else int(n_patients)
    folder = default_cohort_dir(preset, random_state, n_patients)
    if _is_current(folder, preset, random_state, n_patients):
        return folder
    try:
        generate_cohort(folder, preset=preset, random_state=random_state, n_patients=n_patients)
    except OSError:
        # Another process may have put the same cohort in place meanwhile.
        if not _is_current(folder, preset, random_state, n_patients):
            raise
    return folder


def _generator_digest() -> str:
    """Hash of the generator's sources (every ``.py`` of this package, by name and bytes): an
    edited generator never reuses a stale default cohort (a forgotten GENERATOR_VERSION bump
    once left results computed on an old cohort). Its value is written to ``cohort.json``."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _is_current(folder: Path, preset: str, random_state: int, n_patients: int) -> bool:
    meta = generated_stamp(folder)
    return (meta.get("preset") == preset and meta.get("random_state") == int(random_state)
            and meta.get("generator_version") == GENERATOR_VERSION
            and meta.get("generator_digest") == _generator_digest()
            and meta.get("knobs", {}).get("n_patients") == n_patients
            and (folder / CLINICAL_FILENAME).is_file())
