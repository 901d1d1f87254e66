"""Trainable minus fixed on the real clinical table with SYNTHETIC images, over the seeds of
the runs: the seed-averaged patient bootstrap and the corrected resampled t (Nadeau-Bengio)
over every (seed, fold). Usage, after
``fusionlib run --jobs 2 params/real/real_synth_*.yaml --runs-dir runs-real``::

    .venv/bin/python scripts/compare_real_synth.py runs-real
"""
import numpy as np, pandas as pd, sys
from fusionlib.metrics import seed_averaged_bootstrap, corrected_resampled_t, case_log_loss, qwk
from fusionlib.results.files import PROBA_COLUMNS
root = sys.argv[1]
fixed = pd.read_csv(f"{root}/real_synth_fixed_100/predictions.csv", dtype={"case_id": str})
for name in ("real_synth_trainable_100", "real_synth_trainable_minrule_100"):
    a = pd.read_csv(f"{root}/{name}/predictions.csv", dtype={"case_id": str})
    j = a.merge(fixed[["seed","repeat","case_id","pred",*PROBA_COLUMNS]], on=["seed","repeat","case_id"], suffixes=("", "_b"))
    seeds, folds = [], []
    for s, g in j.groupby("seed"):
        y = g["label"].to_numpy()
        seeds.append({"y": y, "pred_a": g["pred"].to_numpy(), "pred_b": g["pred_b"].to_numpy(),
                      "loss_a": case_log_loss(y, g[PROBA_COLUMNS].to_numpy()),
                      "loss_b": case_log_loss(y, g[[c + "_b" for c in PROBA_COLUMNS]].to_numpy()),
                      "groups": g["patient"].to_numpy()})
        for f, h in g.groupby("fold"):
            folds.append(qwk(h["label"], h["pred"]) - qwk(h["label"], h["pred_b"]))
    boot = seed_averaged_bootstrap(seeds, n_boot=2000)
    t = corrected_resampled_t(folds, test_train_ratio=1 / 4)
    q = boot["qwk"]; l = boot["log_loss"]
    print(f"{name} - fixed: cases {len(j)}; ΔQWK {q['delta']:+.3f}; seed-averaged patient bootstrap "
          f"[{q['ci_low']:+.3f}, {q['ci_high']:+.3f}]; corrected resampled t over {t['n_splits']} (seed, fold) "
          f"[{t['ci_low']:+.3f}, {t['ci_high']:+.3f}] (mean of fold diffs {t['delta']:+.3f}); per seed "
          + ", ".join(f"{p['qwk']:+.3f}" for p in boot["per_seed"])
          + f"; Δlog-loss {l['delta']:+.3f} [{l['ci_low']:+.3f}, {l['ci_high']:+.3f}], per seed "
          + ", ".join(f"{p['log_loss']:+.3f}" for p in boot["per_seed"]))
