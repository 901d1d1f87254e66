"""Weight recovery on synthetic presets with known truth, at a size the tests cannot afford.

Usage: .venv/bin/python bench/bench_weight_recovery.py [--patients 300] [--folds 3]
       [--presets images_uninformative clinical_uninformative] [--work DIR]

Prints, per preset and fusion variant, the test QWK, the image branch's validation QWK and the
effective RF share per fold (docs/results.md records the figures).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["images_uninformative", "clinical_uninformative"])
    parser.add_argument("--fusions", nargs="+", default=["trainable", "convex"])
    parser.add_argument("--work", help="folder for cohorts and caches (default: a temp folder)")
    args = parser.parse_args()
    from fusionlib.synthetic import generate_cohort
    from fusionlib.data import load_cohort
    from fusionlib.experiment import run_experiment
    from fusionlib.params import validate

    work = Path(args.work or tempfile.mkdtemp(prefix="fusionlib-recovery-"))
    columns = ["qwk", "thermal_map_val_qwk", "rf_share", "rf_share_I", "rf_share_P", "rf_share_R"]
    for preset in args.presets:
        root = work / f"{preset}_{args.patients}"
        if not (root / "cohort.json").exists():
            generate_cohort(root, preset=preset, random_state=0, n_patients=args.patients)
        for fusion in args.fusions:
            params = validate({"name": f"{preset}_{fusion}", "fusion": {"variant": fusion},
                               "protocol": {"folds": args.folds}})
            result = run_experiment(params, cohort=load_cohort(root), cache_dir=work / f"cache_{preset}",
                                    progress=False)
            table = result.fold_table()[columns]
            print(f"\n{preset}, {args.patients} patients, {fusion}: mean RF share "
                  f"{table['rf_share'].mean():.3f}")
            print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
