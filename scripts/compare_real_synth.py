"""Trainable minus fixed on the real clinical table with SYNTHETIC images, over the seeds of
the runs: the report's verdict row (:func:`fusionlib.report.verdict.verdict_row`: the verdict's
patients + seeds interval, with the seed-averaged patient bootstrap and the corrected resampled t
over every (seed, fold) beside it). ``make results`` tabulates the same runs in docs/results.md.
Usage, after ``fusionlib run --jobs 2 params/real/real_synth_*.yaml --runs-dir runs-real``::

    .venv/bin/python scripts/compare_real_synth.py runs-real
"""

from __future__ import annotations

import sys

from fusionlib.report import fmt, load_runs
from fusionlib.report.verdict import verdict_row


def main(runs_dir: str) -> int:
    runs = {run.name: run for run in load_runs(runs_dir)}
    fixed = runs["real_synth_fixed_100"]
    for name in ("real_synth_trainable_100", "real_synth_trainable_minrule_100"):
        row = verdict_row(runs[name], fixed)
        print(f"{name} - fixed: seeds {row['seeds']}; ΔQWK {fmt(row['ΔQWK'], 3, '+')} (per seed "
              f"{row['ΔQWK per seed']}); interval {row['ΔQWK interval']} ({row['QWK verdict']}); "
              f"seed-averaged patient bootstrap "
              f"{row['ΔQWK patient bootstrap']}; corrected resampled t {row['ΔQWK corrected t']}; "
              f"Δlog-loss {fmt(row['Δlog-loss'], 3, '+')} {row['Δlog-loss interval']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs-real"))
