"""Synthetic thermal maps: one foot-and-wound temperature field per image, as viridis PNGs."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import BBOX_COLUMNS, image_filename

_IMAGE_JITTER_SD = 0.2  # extra latent spread per image of the same case
_TEMP_SPAN = (18.0, 36.0)  # degC mapped onto the colour map's ends


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


def write_images(rng: np.random.Generator, cases: pd.DataFrame, skin_by_patient: dict,
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
