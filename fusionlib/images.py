"""Image reading for the image branch: crop the wound box, resize, pad, cache.

Box convention: ``(xmin, ymin, xmax, ymax)`` in pixel coordinates with ``xmax``
and ``ymax`` exclusive (Pillow's crop convention), as in the bounding-box tables.
A crop is the box enlarged by ``margin`` of its width (height) on each side,
clamped to the image; it is then resized so its longer side is ``size`` (aspect
ratio kept) and centred on a zero-padded ``size x size`` square.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ._io import atomic_open, note
from .data import MODALITIES, file_digest
from .errors import DataError

logger = logging.getLogger("fusionlib")

CACHE_VERSION = 2
"""Part of every cache key; bump when the crop/resize output changes.

2: keyed by file content (not path and mtime); 16-bit images scaled to their range.
"""

# Pillow modes that convert("RGB") handles without losing the value range.
_RGB_CONVERTIBLE = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK",
                    "YCbCr", "LAB", "HSV"}
# Single-channel modes wider than 8 bits: convert("RGB") clips them at 255 (a 16-bit
# thermal map becomes white), so they are scaled from their own min..max to 0..255.
_WIDE_GREY = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
# Any read failure of a cache file means "recompute it", never "fail the run".
CACHE_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile,
                     pickle.UnpicklingError)


def _to_rgb(image, path: Path):
    """An opened Pillow image as 8-bit RGB, keeping the contrast of wide greyscale modes."""
    from PIL import Image

    if image.mode in _RGB_CONVERTIBLE:
        return image.convert("RGB")
    if image.mode in _WIDE_GREY:
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"image mode {image.mode} holds non-finite values", path)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        grey = Image.fromarray(np.round(scaled).astype(np.uint8))
        return grey.convert("RGB")
    raise DataError(f"unsupported image mode {image.mode!r}; expected 8-bit greyscale, palette, "
                    f"RGB(A) or 16-bit greyscale", path)


def _check_geometry(size, margin) -> tuple[int, float]:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    try:
        margin_f = float(margin)
    except (TypeError, ValueError):
        margin_f = float("nan")
    if not (math.isfinite(margin_f) and margin_f >= 0):
        raise ValueError(f"margin must be a non-negative number, got {margin!r}")
    return int(size), margin_f


def _normalise_box(box) -> tuple[float, float, float, float] | None:
    """A box as four floats, or None for no box (None or any NaN corner)."""
    if box is None:
        return None
    values = np.asarray(box, dtype=float).ravel()
    if values.size != 4:
        raise ValueError(f"a box needs four numbers (xmin, ymin, xmax, ymax), got {box!r}")
    if np.isnan(values).any():
        return None
    return tuple(float(v) for v in values)


def crop_bounds(box, width: int, height: int, margin: float = 0.15) -> tuple[int, int, int, int]:
    """Integer crop ``(left, top, right, bottom)`` for a box enlarged by ``margin``, clamped.

    ``box`` None (or NaN) means the whole image. A box that ends up empty after
    clamping (entirely outside the image) also falls back to the whole image.
    """
    box = _normalise_box(box)
    if box is None:
        return 0, 0, width, height
    xmin, ymin, xmax, ymax = box
    dx, dy = margin * (xmax - xmin), margin * (ymax - ymin)
    left = max(0, int(math.floor(xmin - dx)))
    top = max(0, int(math.floor(ymin - dy)))
    right = min(width, int(math.ceil(xmax + dx)))
    bottom = min(height, int(math.ceil(ymax + dy)))
    if right <= left or bottom <= top:
        return 0, 0, width, height
    return left, top, right, bottom


def load_image(path: str | Path, box=None, size: int = 32, margin: float = 0.15) -> np.ndarray:
    """One image as ``float32 (size, size, 3)`` in [0, 1]: wound crop, resized, zero-padded.

    Raises DataError naming the file when it is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    size, margin = _check_geometry(size, margin)
    path = Path(path)
    if not path.is_file():
        raise DataError("image not found", path)
    try:
        with Image.open(path) as opened:
            opened.load()
            image = _to_rgb(opened, path)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise DataError("not a readable PNG image", path) from None

    left, top, right, bottom = crop_bounds(box, image.width, image.height, margin)
    if (left, top, right, bottom) != (0, 0, image.width, image.height):
        image = image.crop((left, top, right, bottom))
    width, height = image.size
    scale = size / max(width, height)
    new_w = max(1, min(size, int(round(width * scale))))
    new_h = max(1, min(size, int(round(height * scale))))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    out = np.zeros((size, size, 3), dtype=np.float32)
    off_y, off_x = (size - new_h) // 2, (size - new_w) // 2
    out[off_y:off_y + new_h, off_x:off_x + new_w] = np.asarray(image, dtype=np.float32) / 255.0
    return out


def _cache_key(path: Path, box, size: int, margin: float) -> str:
    # The file's content (size and SHA-256), not its path and mtime: an image rewritten in
    # place within the mtime granularity, or restored with its old mtime, must not hit.
    if not path.is_file():
        raise DataError("image not found", path)
    box = _normalise_box(box)
    key = json.dumps([CACHE_VERSION, file_digest(path),
                      None if box is None else list(box), size, repr(margin)])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _save_atomic(array: np.ndarray, target: Path) -> None:
    with atomic_open(target, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def load_images(paths, boxes=None, size: int = 32, margin: float = 0.15,
                cache_dir: str | Path | None = None) -> np.ndarray:
    """Many images as ``float32 (n, size, size, 3)``; see :func:`load_image`.

    ``boxes``: None, or one box per path (a row of NaN, or None, means no box).
    With ``cache_dir`` each crop is kept as one ``.npy`` file keyed by the file's
    content (size and SHA-256 of its bytes), the box, ``size`` and ``margin``, so a
    second load of unchanged files decodes no PNG. Cache files are written
    atomically; an unreadable cache file is logged, deleted and recomputed.
    """
    size, margin = _check_geometry(size, margin)
    paths = [Path(p) for p in paths]
    if boxes is None:
        boxes = [None] * len(paths)
    elif len(boxes) != len(paths):
        raise ValueError(f"got {len(paths)} paths but {len(boxes)} boxes")
    if isinstance(boxes, np.ndarray) or hasattr(boxes, "to_numpy"):
        boxes = list(np.asarray(boxes, dtype=float))
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
    out = np.zeros((len(paths), size, size, 3), dtype=np.float32)
    for i, (path, box) in enumerate(zip(paths, boxes)):
        if cache is None:
            out[i] = load_image(path, box, size, margin)
            continue
        target = cache / f"{_cache_key(path, box, size, margin)}.npy"
        if target.is_file():
            try:
                cached = np.load(target, allow_pickle=False)
                if cached.shape != (size, size, 3) or cached.dtype != np.float32:
                    raise ValueError(f"shape {cached.shape}, dtype {cached.dtype}")
                out[i] = cached
                continue
            except CACHE_READ_ERRORS as err:
                logger.warning("crop cache entry %s is unreadable (%s); recomputing it",
                               target, type(err).__name__)
                note(f"crop cache entry {target} was unreadable ({type(err).__name__}); recomputed")
                target.unlink(missing_ok=True)
        out[i] = load_image(path, box, size, margin)
        _save_atomic(out[i], target)
    return out


def cohort_image_arrays(cohort, modality: str, size: int = 32, margin: float = 0.15,
                        cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every image of ``modality`` in ``cohort`` and the position of its case in ``cohort.cases``.

    Returns ``(X, case_index)``: ``X`` float32 ``(m, size, size, 3)``, ``case_index``
    int ``(m,)`` with values in ``0..cohort.n_cases-1``, in case order.
    """
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    rows = cohort.images_of(modality)
    position = {cid: i for i, cid in enumerate(cohort.cases["case_id"])}
    case_index = np.array([position[c] for c in rows["case_id"]], dtype=int)
    boxes = rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy(dtype=float)
    X = load_images(list(rows["path"]), boxes, size, margin, cache_dir=cache_dir)
    return X, case_index
