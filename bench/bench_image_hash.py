"""Benchmark: what content-keying an image costs (fusionlib.data.file_digest).

Writes a few 1080x1440 RGB PNGs (a smooth thermal-like field plus noise, about 3 MB
each, like the study's camera output) to a temporary folder and prints, per image,
the time to hash its bytes with SHA-256 (what the data fingerprint and the crop
cache key on) next to the time to decode it with Pillow.

    .venv/bin/python bench/bench_image_hash.py [--n 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    import numpy as np
    from PIL import Image

    from fusionlib.data import file_digest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4, help="number of PNGs (default 4)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        yy, xx = np.mgrid[0:1080, 0:1440]
        for i in range(args.n):
            field = (np.sin(xx / 50 + i) + np.cos(yy / 70)) * 60 + 128 + rng.normal(0, 8, xx.shape)
            grey = field.clip(0, 255).astype(np.uint8)
            path = Path(folder) / f"{i}.png"
            Image.fromarray(np.stack([grey, grey[::-1], grey[:, ::-1]], axis=-1)).save(path)
            paths.append(path)
        size_mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        start = time.perf_counter()
        for _ in range(args.repeats):
            for path in paths:
                file_digest(path)
        hashed = (time.perf_counter() - start) / (args.repeats * len(paths))
        start = time.perf_counter()
        for path in paths:
            with Image.open(path) as image:
                image.load()
        decoded = (time.perf_counter() - start) / len(paths)
    print(f"{args.n} PNGs of 1080x1440, {size_mb:.1f} MB each")
    print(f"size + SHA-256 of the bytes: {1000 * hashed:.1f} ms per image")
    print(f"Pillow decode:               {1000 * decoded:.1f} ms per image "
          f"({decoded / hashed:.0f}x the hash)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
