"""Check that the synthetic generator still writes the bytes it wrote before a refactoring.

    python scripts/check_generator_digests.py

Small cohorts of four presets (10 patients, seed 3) are generated into a temporary
folder and each one's files are hashed (``cohort.json`` without its
``generator_digest``, which hashes the generator's own sources). The expected digests
were written by the generator before it became a package (commit efef26e,
``fusionlib/cohort.py``). A refactoring must keep them; a deliberate change of the
output bumps ``GENERATOR_VERSION`` and updates them here.

This is a script, not a test: PNG bytes depend on Pillow's zlib and the rendering on
the CPU's floating point, so another machine may differ in a byte without anything
being wrong. It exits 1 when a digest differs.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

from fusionlib.synthetic import generate_cohort

EXPECTED = {"dfu_like": "b5049fe72fc293c3", "clinical_weak_for_R": "2ba7e0e6e70efbad",
            "shared_camera": "ac71a8e6d78fb5de", "complementary": "8b906475391aee19"}


def cohort_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "cohort.json":
            meta = json.loads(data)
            meta.pop("generator_digest")
            data = json.dumps(meta, indent=2).encode()
        digest.update(str(path.relative_to(root)).encode() + b"\0" + data + b"\0")
    return digest.hexdigest()[:16]


def main() -> int:
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for preset, expected in EXPECTED.items():
            got = cohort_digest(generate_cohort(Path(tmp) / preset, preset, random_state=3,
                                                n_patients=10))
            ok = got == expected
            failed += not ok
            print(f"{preset:22s} {got}  {'same bytes' if ok else f'DIFFERS (expected {expected})'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
