"""Which data an experiment uses: its settings section, where the data lives, loading, fingerprint.

Data flows one way: the runner and the experiment ask this module for the data; the
parameter schema only declares :class:`DataSettings`. Two fingerprints exist for two jobs:

* :func:`data_fingerprint` is CHEAP (stamps, file digests of the tables, a listing of the
  image folders): the runner uses it to decide whether a run is up to date, without
  loading every dataset in its own process;
* :meth:`fusionlib.data.Cohort.fingerprint` hashes the loaded cohort's content; the
  experiment keys its branch cache on it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

from pydantic import Field, field_validator

from .data import GENERATED_MODALITIES, IMAGE_MODALITIES, MODALITIES
from .errors import DataError
from .fusion.options import CLINICAL
from .registry import Registry
from .settings import Settings, choice, fail, one_of

REAL_DATA_ENV = "FUSIONLIB_DFU_DIR"
"""Environment variable naming the real data folder when ``data.data_dir`` is not given."""
DEFAULT_REAL_DIR = "../shared/data/dfu"
_RACY_NS = 2_000_000_000
"""Files changed this recently (ns) are hashed by :func:`data_fingerprint`, not listed by stat."""


@dataclass(frozen=True)
class Dataset:
    """One dataset ``data.dataset`` can name.

    ``folder(data)`` is the folder its cohort is read from (generating it first where it is
    generated); ``generated``: identified by the ``cohort.json`` stamp the generator writes
    (else by its files, see :func:`data_fingerprint`); ``real_table``: it reads the real
    clinical table (``data.data_dir``, ``$FUSIONLIB_DFU_DIR``, ``../shared/data/dfu``);
    ``cohort_name``: the loaded cohort's name (default: the folder's); ``options``: the
    ``data`` keys only this dataset reads (the others refuse ``n_patients``, and check the
    ``preset`` only where it is read).
    """

    name: str
    summary: str
    folder: Callable
    generated: bool = True
    real_table: bool = False
    cohort_name: str | None = None
    options: frozenset = frozenset()


def _synthetic_folder(data) -> Path:
    from .synthetic import ensure_default_cohort   # lazy: the generator is needed only here

    return ensure_default_cohort(preset=data.preset, random_state=data.cohort_seed,
                                 n_patients=data.n_patients)


def _real_synthetic_folder(data) -> Path:
    # The real clinical table and labels; thermal maps rendered from the true labels.
    from .synthetic import ensure_real_synthetic_cohort   # lazy, as above

    return ensure_real_synthetic_cohort(data.resolved_data_dir(), data.image_signal,
                                        data.cohort_seed)


DATASETS: Registry[Dataset] = Registry("dataset", [
    Dataset("synthetic", "generated preset", _synthetic_folder,
            options=frozenset({"preset", "n_patients"})),
    Dataset("real", "a folder in the study's layout", lambda data: data.resolved_data_dir(),
            generated=False, real_table=True, cohort_name="real:dfu"),
    Dataset("real_synthetic_images", "the real clinical table with SYNTHETIC thermal maps "
            "rendered from each case's true phase", _real_synthetic_folder, real_table=True),
])
"""Dataset name -> :class:`Dataset`. Another dataset: ``DATASETS.register(Dataset(...))``."""


class DataSettings(Settings):
    """Section ``data``: which cohort and which of its modalities the experiment uses."""

    dataset: Annotated[str, choice(DATASETS)] = Field("synthetic", description=DATASETS.describe())
    preset: str = Field("dfu_like", description="synthetic preset (`fusionlib.synthetic.PRESETS`)")
    cohort_seed: int = Field(0, ge=0, description="generator seed of the synthetic data")
    n_patients: Optional[int] = Field(None, ge=20, le=999, description=(
        "patients of the generated `synthetic` cohort (default 120; at most 999, the three "
        "digits the study's file names give a patient); a study sized by `fusionlib plan` "
        "sets it"))
    data_dir: Optional[str] = Field(None, description=(
        f"real data folder; else `${REAL_DATA_ENV}`, else `{DEFAULT_REAL_DIR}`"))
    image_signal: list[float] = Field([0.9, 0.9, 1.3], description=(
        "per-class (I, P, R) signal of the synthetic images for `real_synthetic_images`"))
    modalities: list[str] = Field([CLINICAL, "thermal_map"], description=(
        "`metadata` (the clinical-table branch) first, then image modalities the dataset "
        f"provides (`synthetic`, `real_synthetic_images`: "
        f"{', '.join(f'`{m}`' for m in GENERATED_MODALITIES)}; `real`: those whose "
        "folder holds PNGs), checked before any notebook runs"))

    @field_validator("image_signal")
    @classmethod
    def _signal(cls, value):
        if len(value) != 3 or any(v < 0 for v in value):
            fail(f"expected three non-negative numbers (I, P, R), got {value!r}")
        return [float(v) for v in value]

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, value):
        if not value:
            fail("must name at least one modality")
        for m in value:
            one_of(m, [CLINICAL, *MODALITIES])
        if len(set(value)) != len(value):
            fail(f"lists a modality twice: {value}")
        if value[0] != CLINICAL and CLINICAL in value:
            fail(f"{CLINICAL!r} must come first when present")
        return value

    @field_validator("n_patients")
    @classmethod
    def _n_patients(cls, value, info):
        dataset = info.data.get("dataset")
        if value is not None and "n_patients" not in _options_of(dataset):
            takers = [f"`{d.name}`" for d in DATASETS.values() if "n_patients" in d.options]
            fail(f"applies to the {', '.join(takers)} dataset only, not {dataset!r}")
        return value

    @field_validator("preset")
    @classmethod
    def _preset(cls, value, info):
        if "preset" in _options_of(info.data.get("dataset")):
            from .synthetic import PRESETS

            one_of(value, list(PRESETS))
        return value

    def resolved_data_dir(self) -> Path | None:
        """The real data folder: ``data_dir``, else $FUSIONLIB_DFU_DIR, else ../shared/data/dfu.

        For ``real_synthetic_images`` this is where the real clinical table is read from.
        """
        if not DATASETS[self.dataset].real_table:
            return Path(self.data_dir) if self.data_dir else None
        return Path(self.data_dir or os.environ.get(REAL_DATA_ENV) or DEFAULT_REAL_DIR)

    def available_modalities(self) -> list[str]:
        """The image modalities this dataset can provide, found without loading it.

        ``synthetic`` and ``real_synthetic_images``: those the generators write
        (:attr:`fusionlib.data.Modality.generated`); ``real``: those whose image folder in the
        data folder holds at least one PNG (the public DFU folder has none: its images are
        not published).
        """
        if self.dataset != "real":
            return [name for name, m in IMAGE_MODALITIES.items() if m.generated]
        folder = self.resolved_data_dir()
        return [name for name, m in IMAGE_MODALITIES.items() if _has_png(folder / m.folder)]

    def check_available(self) -> None:
        """ValueError naming the first image modality asked for that the dataset cannot provide,
        with what it can; checked before any notebook runs, since the experiment would only
        fail on it after the clinical branch has trained."""
        available = self.available_modalities()
        for name in self.modalities:
            if name == CLINICAL or name in available:
                continue
            modality = IMAGE_MODALITIES[name]
            folder = self.resolved_data_dir()
            if self.dataset == "real" and not folder.is_dir():
                where = f"the real data folder {folder} does not exist, so it has no {name} images"
            elif self.dataset == "real":
                where = (f"the real data folder {folder} has no {name} images "
                         f"({modality.label}: no PNG files in its {modality.folder}/)")
            else:
                where = (f"the {self.dataset} dataset has no {name} images ({modality.label}): "
                         f"its generator makes {', '.join(available) or 'none'} only")
            raise ValueError(f"{where}; available: {', '.join(['metadata', *available])}")


def _has_png(folder: Path) -> bool:
    """Whether ``folder`` is a folder holding a ``.png`` file (what the image scan reads)."""
    try:
        return any(path.suffix == ".png" for path in folder.iterdir())
    except OSError:         # absent, not a folder, unreadable: no images from it
        return False


def _options_of(dataset) -> frozenset:
    entry = DATASETS.get(dataset)
    return entry.options if entry is not None else frozenset()


def data_folder(data: DataSettings) -> Path:
    """The folder the experiment's cohort is read from, generated first when generated."""
    return Path(DATASETS[data.dataset].folder(data))


def load_dataset(data: DataSettings):
    """The experiment's cohort: the generated synthetic one, or the real folder."""
    from .data import load_cohort

    name = DATASETS[data.dataset].cohort_name
    return load_cohort(data_folder(data), **({"name": name} if name else {}))


def data_fingerprint(data: DataSettings) -> str:
    """A cheap fingerprint of the data ``data`` selects (16 hex digits); DataError if absent.

    Generated folders (synthetic, real_synthetic_images) are identified by their
    ``cohort.json`` stamp, which names the generator version and digest, the preset or
    signal, the seed and (for real tables) the source table's SHA-256. A real folder is
    identified by the content of its top-level files (the tables) and a listing (path, size,
    modification time, inode, status-change time) of everything below; files changed in the
    last two seconds are hashed instead (their timestamps may not have ticked yet).
    """
    folder = data_folder(data)
    digest = hashlib.sha256(data.dataset.encode() + b"\0")
    if DATASETS[data.dataset].generated:
        digest.update((folder / "cohort.json").read_bytes())
        return digest.hexdigest()[:16]
    from .data import CLINICAL_FILENAME

    if not (folder / CLINICAL_FILENAME).is_file():
        raise DataError(f"clinical table {CLINICAL_FILENAME} not found (set data.data_dir or "
                        f"${REAL_DATA_ENV})", folder)
    now = time.time_ns()
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(folder).as_posix()
        digest.update(relative.encode() + b"\0")
        if path.parent == folder:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
            continue
        stat = path.stat()
        # Size and mtime alone let a file rewritten in place with the same size, its mtime
        # then restored (os.utime, cp -p, tar, rsync -t), pass for the old one: the run stays
        # "up to date" on other pixels. The inode and ctime close that without reading the
        # images: the ctime changes on every write and nothing can set it back (os.utime
        # moves it to now), a file swapped in by rename has another inode. Timestamps tick
        # coarsely (a few ms on Linux), so a file changed within _RACY_NS of now is hashed
        # instead, as git does for "racily clean" files. A copied or restored data folder
        # reruns once (new inodes and ctimes): a spurious rerun, never a stale result.
        # (On Windows st_ctime is the creation time; the inode still catches replaced files.)
        if max(stat.st_ctime_ns, stat.st_mtime_ns) > now - _RACY_NS:
            digest.update(b"sha256:" + hashlib.sha256(path.read_bytes()).digest())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}:"
                          f"{stat.st_ctime_ns}".encode())
    return digest.hexdigest()[:16]
