"""``make results`` (``fusionlib.study``): its tables follow from the runs' predictions, it
rewrites only the generated sections of the results file, and it leaves the file alone when a
study cannot be tabulated."""

import json

import numpy as np
import pytest
import yaml

from fusionlib import study
from fusionlib.decision import DECISIONS
from fusionlib.metrics import qwk
from fusionlib.report.conclusions import four_way_verdict

TINY = {"protocol": {"folds": 2, "data_percentage": 30, "seeds": [0, 1]},
        "image": {"epochs": 2, "inner_folds": 2, "size": 16},
        "clinical": {"options": {"n_estimators": 20}, "inner_folds": 2},
        "head": {"penalty": [0.0, 0.01]}}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A two-run study (fixed and trainable at 30 %, seeds 0 and 1), run in-process into the
    layout the runner writes: ``<root>/<study>/<run>/``."""
    from fusionlib.experiment import run_experiment
    from fusionlib.params import validate

    base = tmp_path_factory.mktemp("study")
    params_dir, root = base / "params", base / "runs-study"
    params_dir.mkdir()
    for fusion in ("fixed", "trainable"):
        raw = {"name": f"{fusion}_30", "fusion": {"variant": fusion}, **TINY}
        (params_dir / f"{fusion}_30.yaml").write_text(yaml.safe_dump(raw))
        result = run_experiment(validate(raw), cache_dir=base / "cache", progress=False)
        result.save(root / "tiny" / raw["name"])
        (root / "tiny" / raw["name"] / "done.json").write_text(json.dumps({"status": "ok"}))
    spec = study.Study("tiny", (str(params_dir / "*.yaml"),), image_branch_gap=True)
    return spec, root


def test_comparison_rows_follow_from_the_predictions(tiny_study):
    spec, root = tiny_study
    runs = study.load_study(spec, root)
    assert [r.name for r in runs] == ["fixed_30", "trainable_30"]
    table = study.comparison_table(runs, n_boot=200)
    variants = set(table["variant"])
    # Rows say what they are (the fusion variant), the run's name beside it.
    assert "trainable" in variants and "stacking (baseline)" in variants
    assert set(table["decision"]) == set(DECISIONS)
    row = table[(table["variant"] == "trainable") & (table["decision"] == "argmax")].iloc[0]
    assert row["run"] == "trainable_30"
    a, b = runs[1].predictions, runs[0].predictions
    joined = a.merge(b, on=["seed", "repeat", "case_id"], suffixes=("", "_b"))
    per_seed = [qwk(g["label"], g["pred_argmax"]) - qwk(g["label"], g["pred_argmax_b"])
                for _, g in joined.groupby("seed")]
    assert row["seeds"] == 2
    assert row["ΔQWK per seed"] == pytest.approx(per_seed)
    assert row["ΔQWK"] == pytest.approx(np.mean(per_seed))
    low, high = row["ΔQWK interval"]
    assert low < row["ΔQWK"] < high
    q, ll = row["compare"]["qwk"], row["compare"]["log_loss"]
    assert row["QWK verdict"] == four_way_verdict(row["ΔQWK"], q["se"], q["df"], 0.02)
    assert row["log-loss verdict"] == four_way_verdict(row["Δlog-loss"], ll["se"], ll["df"], 0.02,
                                                       lower_is_better=True)
    assert row["detectable ΔQWK"] > (high - low) / 2          # 80 % power, not 50 %
    agree = (joined["pred_argmax"] == joined["pred_argmax_b"]).groupby(joined["seed"]).mean()
    assert row["agreement"] == pytest.approx(agree.mean())


def test_main_rewrites_only_the_generated_sections(tiny_study, monkeypatch, tmp_path):
    spec, root = tiny_study
    monkeypatch.setitem(study.STUDIES, "tiny", spec)
    out = tmp_path / "results.md"
    prose = "# Results\n\nHand-written prose stays.\n\n<!-- generated:tiny-comparison -->\nold\n" \
            "<!-- /generated:tiny-comparison -->\n\nMore prose.\n"
    out.write_text(prose)
    assert study.main(["--studies", "tiny", "--root", str(root), "--out", str(out),
                       "--n-boot", "100", "--no-run"]) == 0
    text = out.read_text()
    assert "Hand-written prose stays." in text and "More prose." in text
    assert "\nold\n" not in text
    for name in ("runs", "answers", "comparison", "weights", "rules", "trainable-folds",
                 "branch-gap"):
        assert f"<!-- generated:tiny-{name} -->" in text, name
    assert "| 30 % | trainable (trainable_30) | argmax |" in text
    assert "- trainable at 30 % (trainable_30) − fixed_30 (argmax): ΔQWK" in text
    # Only a full regeneration speaks for every table: here one study of several.
    assert "generated:provenance" not in text
    # Rendering again from the same runs gives the same file: nothing random is left unseeded.
    assert study.main(["--studies", "tiny", "--root", str(root), "--out", str(out),
                       "--n-boot", "100", "--no-run"]) == 0
    assert out.read_text() == text


def test_a_missing_run_leaves_the_results_file_unchanged(tiny_study, monkeypatch, tmp_path, capsys):
    spec, root = tiny_study
    extra = tmp_path / "mlp_30.yaml"
    extra.write_text(yaml.safe_dump({"name": "mlp_30", "fusion": {"variant": "mlp"}, **TINY}))
    monkeypatch.setitem(study.STUDIES, "tiny", study.Study("tiny", (*spec.files, str(extra))))
    out = tmp_path / "results.md"
    out.write_text("# Results\n")
    assert study.main(["--studies", "tiny", "--root", str(root), "--out", str(out),
                       "--no-run"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fusionlib: error: study 'tiny': no finished run for mlp_30")
    assert out.read_text() == "# Results\n"


def test_a_study_of_the_real_table_is_skipped_without_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FUSIONLIB_DFU_DIR", str(tmp_path / "absent"))
    out = tmp_path / "results.md"
    out.write_text("# Results\n<!-- generated:real-runs -->\nkept\n<!-- /generated:real-runs -->\n")
    assert study.main(["--studies", "real", "--root", str(tmp_path / "runs"), "--out", str(out),
                       "--no-run"]) == 0
    assert "study real: the real clinical table is not here" in capsys.readouterr().err
    assert "\nkept\n" in out.read_text()


def test_every_study_names_existing_valid_parameter_files():
    from fusionlib.running import load_all

    for spec in study.STUDIES.values():
        files = study.study_files(spec)
        loaded = load_all(files)
        assert all(len(p.protocol.seeds or []) >= 3 for _, p in loaded), spec.name
        fixed = [p for _, p in loaded if p.fusion.variant == "fixed"]
        assert fixed, f"study {spec.name} has no fixed run to compare with"


def test_a_full_regeneration_rewrites_the_provenance_line(tiny_study, monkeypatch, tmp_path):
    spec, root = tiny_study
    monkeypatch.setattr(study, "STUDIES", {"tiny": spec})
    out = tmp_path / "results.md"
    out.write_text("# Results\n<!-- generated:provenance -->\nold\n<!-- /generated:provenance -->\n")
    assert study.main(["--root", str(root), "--out", str(out), "--n-boot", "100", "--no-run"]) == 0
    text = out.read_text()
    assert "2 runs, each over seeds 0, 1; 100 bootstrap resamples; experiment code" in text
    assert "\nold\n" not in text


def test_the_planner_reproduces_the_measured_interval(tiny_study):
    """At the study's own patients and seeds the planner predicts the verdict interval's SE."""
    spec, root = tiny_study
    runs = study.load_study(spec, root)
    row = study.comparison_table(runs, n_boot=200).iloc[0]
    q = row["compare"]["qwk"]
    comp = q["components"]
    assert comp.s0 == 2 and comp.shift_measured
    se, _ = comp.interval(comp.n0, comp.s0)
    assert se == pytest.approx(q["se"], rel=1e-9)


def test_plan_command_prints_the_grid_and_what_it_takes(tiny_study, capsys):
    from fusionlib.cli import main

    _, root = tiny_study
    assert main(["plan", "--runs-dir", str(root / "tiny"), "--patients", "100", "1000",
                 "--seeds", "3", "8", "--n-boot", "100"]) == 0
    out = capsys.readouterr().out
    assert "Planner: 1 comparison(s)" in out and "conclusive at" in out
    assert "trainable at 30 % (run trainable_30) vs fixed_30: detectable ΔQWK" in out
    assert "patients 3 seeds 8 seeds" in " ".join(out.split())
    # Bad margins and empty folders: one line, exit 2.
    assert main(["plan", "--runs-dir", str(root / "tiny"), "--qwk-margin", "-1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "fusionlib: error: --qwk-margin: Input should be greater than 0, got -1.0")
    assert main(["plan", "--runs-dir", str(root / "absent")]) == 2
    assert "no finished runs" in capsys.readouterr().err
