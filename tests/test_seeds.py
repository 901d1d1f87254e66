"""Several seeds inside one run (``protocol.seeds``): validation, what is kept per seed, and
that each seed of a several-seed run is exactly the single-seed run of that seed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fusionlib.errors import FusionlibError
from fusionlib.fusion import get_fusion
from fusionlib.models import build_fusion_head
from fusionlib.params import validate
from fusionlib.settings import check_seed
from fusionlib.synthetic import generate_cohort, synthesize_thermal_images

TINY = {"protocol": {"folds": 2, "data_percentage": 50},
        "image": {"epochs": 2, "inner_folds": 2, "size": 16},
        "clinical": {"options": {"n_estimators": 20}, "inner_folds": 2},
        "head": {"penalty": [0.0, 0.01]}}


def _params(name, fusion="trainable", **protocol):
    raw = {"name": name, "fusion": {"variant": fusion}, **TINY}
    raw["protocol"] = {**TINY["protocol"], **protocol}
    return validate(raw)


def test_seed_list_and_validation():
    assert _params("a").protocol.seed_list() == [0]
    assert _params("a", seed=4).protocol.seed_list() == [4]
    assert _params("a", seeds=[2, 0, 1]).protocol.seed_list() == [2, 0, 1]
    for bad, words in (([], "non-empty"), ([1, 1], "distinct"), ([-1], ">= 0")):
        with pytest.raises(FusionlibError, match="protocol.seeds") as err:
            _params("a", seeds=bad)
        assert words in str(err.value)
    with pytest.raises(FusionlibError, match="either seed"):
        _params("a", seed=3, seeds=[1, 2])
    # The notebook's parameters cell keeps seed: 0 when only seeds is edited there.
    assert _params("a", seed=0, seeds=[0, 1, 2]).protocol.seed_list() == [0, 1, 2]


@pytest.mark.parametrize("bad, shown", [(-1, "-1"), (True, "True"), (1.5, "1.5"), ("3", "'3'"),
                                         (None, "None")])
def test_one_seed_check_and_one_message_from_every_entry_point(bad, shown, tmp_path):
    """The generator, the real-table image synthesiser, the Keras builders and a fusion
    variant's option check refuse a bad seed with the same words (they once had four
    checks, two of them saying "int" and two "integer")."""
    expected = f"random_state must be a non-negative integer, got {shown}"
    calls = {"check_seed": lambda: check_seed(bad),
             "generate_cohort": lambda: generate_cohort(tmp_path / "g", n_patients=5,
                                                        random_state=bad),
             "synthesize_thermal_images": lambda: synthesize_thermal_images(
                 tmp_path / "table.csv", tmp_path / "s", random_state=bad),
             "build_fusion_head": lambda: build_fusion_head(["metadata", "thermal_map"],
                                                            random_state=bad)}
    for name, call in calls.items():
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == expected, name
    # A fusion option says which variant it belongs to, then the same words.
    with pytest.raises(ValueError) as err:
        get_fusion("trainable").check(["metadata", "thermal_map"], {"random_state": bad})
    assert str(err.value) == f"fusion 'trainable': {expected}"
    assert not (tmp_path / "g").exists() and not (tmp_path / "s").exists()


def test_check_seed_accepts_numpy_integers_as_plain_ints():
    seed = check_seed(np.int64(7))
    assert seed == 7 and type(seed) is int
    assert get_fusion("fixed").check(["metadata", "thermal_map"],
                                     {"random_state": np.uint8(3)})[1]["random_state"] == 3


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    from fusionlib.experiment import run_experiment

    cache = tmp_path_factory.mktemp("seeds-cache")
    both = run_experiment(_params("both", seeds=[0, 3]), cache_dir=cache, progress=False)
    # A fresh cache: the single-seed run must not just read the several-seed run's branches.
    alone = run_experiment(_params("alone", seed=3), cache_dir=tmp_path_factory.mktemp("c2"),
                           progress=False)
    return both, alone, cache


def test_each_seed_is_the_single_seed_run(two_seeds):
    both, alone, _ = two_seeds
    assert both.seeds == [0, 3]
    mine = both.predictions()
    seed3 = mine[mine["seed"] == 3].drop(columns="seed").reset_index(drop=True)
    ref = alone.predictions().drop(columns="seed").reset_index(drop=True)
    pd.testing.assert_frame_equal(seed3, ref)
    # At 50 % of the patients each seed draws its own subsample.
    per_seed = mine.groupby("seed")["patient"].agg(lambda p: frozenset(p))
    assert per_seed[0] != per_seed[3]


def test_summary_over_seeds(two_seeds):
    both, _, _ = two_seeds
    summary = both.summary()
    table = both.fold_table()
    assert summary["seeds"] == [0, 3] and summary["n_folds"] == 4
    assert list(table["seed"]) == [0, 0, 3, 3]
    qwk = summary["by_seed"]["metrics"]["qwk"]
    expected = [table.loc[table["seed"] == s, "qwk"].mean() for s in (0, 3)]
    assert qwk["per_seed"] == pytest.approx(expected)
    assert qwk["mean"] == pytest.approx(np.mean(expected))
    assert qwk["sd"] == pytest.approx(np.std(expected, ddof=1))
    assert set(summary["by_seed"]["pooled"]) == {"0", "3"}
    sizes = both.predictions().groupby("seed").size()
    assert {int(k): v for k, v in summary["n_cases_per_seed"].items()} == sizes.to_dict()
    assert {w["seed"] for w in both.weights()} == {0, 3}


def test_report_pairs_by_seed(two_seeds, tmp_path):
    """Two several-seed runs are joined on (seed, repeat, case): every case of every seed."""
    from fusionlib import report
    from fusionlib.experiment import run_experiment
    from fusionlib.report.tables import paired_comparisons, runs_table

    both, _, cache = two_seeds
    runs = tmp_path / "runs"
    # The same branches as the trainable run (read from its cache): only the head differs.
    fixed = run_experiment(_params("fixed_50", fusion="fixed", seeds=[0, 3]),
                           cache_dir=cache, progress=False)
    for name, result in (("fixed_50", fixed), ("trainable_50", both)):
        result.save(runs / name)
        (runs / name / "done.json").write_text(json.dumps({"ok": True}))
    loaded = report.load_runs(runs)
    assert [r.seeds for r in loaded] == [[0, 3], [0, 3]]
    paired = paired_comparisons(loaded, n_boot=50, baselines=False)
    assert len(paired) == 1
    assert paired["cases"].iloc[0] == len(both.predictions()) == len(fixed.predictions())
    assert not paired["note"].iloc[0]
    assert len(paired["per-fold diffs"].iloc[0]) == 4       # (seed, repeat, fold) strata
    table = runs_table(loaded).set_index("name")
    assert table.loc["trainable_50", "QWK over seeds"].endswith("(2 seeds)")
    verdict = report.verdict_table(loaded, n_boot=50).set_index("run").loc["trainable_50"]
    assert verdict["seeds"] == 2 and len(verdict["ΔQWK per seed"].split(", ")) == 2


def test_runs_before_seeds_read_their_seed(tmp_path, two_seeds):
    """A predictions.csv written before the seed column existed gets the run's one seed."""
    from fusionlib import report

    _, alone, _ = two_seeds
    folder = tmp_path / "runs" / "alone"
    alone.save(folder)
    frame = pd.read_csv(folder / "predictions.csv").drop(columns="seed")
    frame.to_csv(folder / "predictions.csv", index=False)
    (folder / "done.json").write_text(json.dumps({"ok": True}))
    run, = report.load_runs(tmp_path / "runs")
    assert run.seeds == [3] and set(run.predictions["seed"]) == {3}


def test_fold_interval_is_per_seed_and_cases_per_seed(two_seeds):
    """With several seeds the fold interval is not computed over all seeds' folds pooled, and
    the case counts are one seed's (not the union of the seeds' 50 % subsamples)."""
    from fusionlib.metrics import mean_ci

    both, _, _ = two_seeds
    summary, table = both.summary(), both.fold_table()
    parts = [mean_ci(table.loc[table["seed"] == s, "qwk"].to_numpy()) for s in (0, 3)]
    assert summary["qwk"]["mean"] == pytest.approx(np.mean([p[0] for p in parts]))
    half = np.mean([(p[3] - p[2]) / 2 for p in parts])
    assert summary["qwk"]["ci95"] == pytest.approx([summary["qwk"]["mean"] - half,
                                                    summary["qwk"]["mean"] + half])
    per_seed = list(summary["n_cases_per_seed"].values())
    assert summary["n_cases"] == round(np.mean(per_seed))
    assert sum(summary["modality_counts"].values()) == pytest.approx(np.mean(per_seed), abs=2)
