"""Benchmark: the on-disk crop cache of fusionlib.images.load_images.

Loads every wound crop of a cohort folder twice through ``load_images`` with a fresh
cache folder: the first load decodes each PNG, crops, resizes and writes one ``.npy``
per crop; the second reads the ``.npy`` files only. Prints both times and their
ratio (target: at least 5x).

    .venv/bin/python bench/bench_crop_cache.py                  # generates a folder
    .venv/bin/python bench/bench_crop_cache.py --folder DIR     # a folder in the study's layout

The generated folder (a synthetic cohort with larger thermal maps than the default,
closer to the camera's resolution) is kept under a temporary directory and removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="cohort folder to read (default: generate one)")
    parser.add_argument("--modality", default="thermal_map")
    parser.add_argument("--n-patients", type=int, default=80, help="generated cohort size")
    parser.add_argument("--width", type=int, default=480, help="generated image width (px)")
    parser.add_argument("--height", type=int, default=640, help="generated image height (px)")
    parser.add_argument("--size", type=int, default=32, help="crop size (image_size)")
    parser.add_argument("--margin", type=float, default=0.15, help="crop margin")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from fusionlib.data import load_cohort
    from fusionlib.images import load_images

    work = Path(tempfile.mkdtemp(prefix="bench_crop_cache-"))
    try:
        if args.folder:
            root = Path(args.folder)
            made = ""
        else:
            from fusionlib.synthetic import generate_cohort

            started = time.perf_counter()
            root = generate_cohort(work / "cohort", n_patients=args.n_patients,
                                   random_state=args.seed, image_width=args.width,
                                   image_height=args.height)
            made = f" (generated in {time.perf_counter() - started:.1f} s)"
        cohort = load_cohort(root)
        rows = cohort.images_of(args.modality)
        if not len(rows):
            print(f"no {args.modality} images in {root}", file=sys.stderr)
            return 1
        paths = list(rows["path"])
        boxes = rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy(dtype=float)
        megabytes = sum(Path(p).stat().st_size for p in paths) / 1e6
        from PIL import Image

        with Image.open(paths[0]) as first:
            shape = f"{first.width}x{first.height}"
        cache = work / "crop_cache"   # fresh: nothing cached yet

        started = time.perf_counter()
        cold = load_images(paths, boxes, size=args.size, margin=args.margin, cache_dir=cache)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        warm = load_images(paths, boxes, size=args.size, margin=args.margin, cache_dir=cache)
        second_s = time.perf_counter() - started
        assert (cold == warm).all(), "cached crops differ from decoded crops"

        print(f"folder: {root}{made}")
        print(f"images: {len(paths)} {args.modality} PNGs, {shape} px, {megabytes:.1f} MB; "
              f"crops {args.size}x{args.size}, margin {args.margin:g}")
        print(f"first load (decode + crop + resize + write cache): {first_s:.3f} s")
        print(f"second load (cache hits only): {second_s:.3f} s")
        print(f"ratio: {first_s / second_s:.1f}x (target >= 5x)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
