"""The cross-run report: loading runs, tables, paired comparisons, HTML and a real browser.

Two real tiny runs (``fixed`` and ``trainable`` at 30% of the default synthetic
cohort, 2 folds) are built once per module with
:func:`fusionlib.experiment.run_experiment`; everything else reads them.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from html import escape as html_escape
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from fusionlib import report
from fusionlib.errors import FusionlibError
from fusionlib.report.browser import find_chromium, measure, run_probe, screenshot
from helpers import cli_here

REPO = Path(__file__).resolve().parents[1]
TINY = {"protocol": {"folds": 2, "data_percentage": 30}, "image": {"epochs": 2, "inner_folds": 2},
        "clinical": {"options": {"n_estimators": 20}, "inner_folds": 2}, "head": {"max_epochs": 50}}


def _executed_notebook(path):
    """A stand-in for the runner's executed.ipynb: code that a reader must not see."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("import fusionlib\nprint('run finished')")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="run finished\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Experiment"), cell]
    nbformat.write(nb, str(path))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    from fusionlib.experiment import run_experiment
    from fusionlib.params import validate

    root = tmp_path_factory.mktemp("report")
    runs = root / "runs"
    for fusion in ("fixed", "trainable"):
        params = validate({"name": f"{fusion}_30", "fusion": {"variant": fusion}, **TINY})
        result = run_experiment(params, cache_dir=root / "cache", progress=False)
        result.save(runs / params.name)
        _executed_notebook(runs / params.name / "executed.ipynb")
        (runs / params.name / "done.json").write_text(json.dumps({"ok": True}))
    # Folders the report must ignore.
    (runs / ".tmp-fixed_30-abc").mkdir()
    shutil.copy(runs / "fixed_30" / "metrics.json", runs / ".tmp-fixed_30-abc")
    shutil.copytree(runs / "trainable_30", runs / ".old-trainable_30-1a2b3c4d")   # a swap's leftover
    unfinished = runs / "convex_30"
    unfinished.mkdir()
    shutil.copy(runs / "trainable_30" / "metrics.json", unfinished)  # no done.json yet
    return runs


@pytest.fixture(scope="module")
def built(runs_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "reports"
    index = report.build_report(runs_dir, out, n_boot=300)
    return index


# --------------------------------------------------------------------------- loading and tables


def test_load_runs_only_complete(runs_dir):
    left_out = []
    runs = report.load_runs(runs_dir, left_out=left_out)
    assert [r.name for r in runs] == ["fixed_30", "trainable_30"]
    assert left_out == [("convex_30", "no done.json (unfinished or not a run folder)")]
    assert all(r.synthetic for r in runs)
    assert runs[0].predictions is not None and len(runs[0].weights) == 2


def test_load_runs_missing_dir(tmp_path):
    assert report.load_runs(tmp_path / "nope") == []


def test_runs_table(runs_dir):
    table = report.runs_table(report.load_runs(runs_dir))
    assert list(table["fusion"]) == ["fixed", "trainable"]
    for column in ("QWK", "QWK fold t-interval", "accuracy", "macro-F1", "F1 I", "F1 P", "F1 R",
                   "trainable fusion params", "RF share"):
        assert column in table
    assert list(table["trainable fusion params"]) == [0, 21]
    assert table.loc[0, "RF share"] == pytest.approx(0.70, abs=1e-4)
    assert (table["QWK CI low"] <= table["QWK mean"] + 1e-12).all()
    assert re.match(r"^-?\d\.\d{3} ± \d\.\d{3}$", table.loc[0, "QWK"])
    # The report says which modalities the cases had and scores the complete ones apart.
    summary = report.load_runs(runs_dir)[0].summary
    assert "metadata+thermal_map" in table.loc[0, "cases by modality"]
    assert table.loc[0, "QWK complete cases"] == pytest.approx(summary["scores_complete_cases"]["qwk"])


def test_paired_comparisons(runs_dir):
    runs = report.load_runs(runs_dir)
    paired = report.paired_comparisons(runs, n_boot=200)
    row = paired[paired["variant"] == "trainable_30"].iloc[0]
    fixed, trainable = runs
    assert row["vs"] == "fixed_30" and row["kind"] == "fusion"
    assert row["cases"] == len(fixed.predictions) == len(trainable.predictions)
    assert row["CI low"] <= row["QWK diff"] + 1e-9 and row["QWK diff"] <= row["CI high"] + 1e-9
    assert len(row["per-fold diffs"]) == 2
    expected = trainable.folds["qwk"].to_numpy() - fixed.folds["qwk"].to_numpy()
    np.testing.assert_allclose(row["per-fold diffs"], expected, atol=1e-9)
    assert row["QWK fixed"] == pytest.approx(fixed.summary["pooled"]["qwk"])
    baselines = paired[paired["kind"] == "baseline"]["variant"].tolist()
    assert any(v.startswith("metadata_only") for v in baselines)
    side = report.paired_side_by_side(paired)
    assert "30% of patients" in side.columns and "trainable" in side["variant"].tolist()


def test_paired_needs_fixed_at_same_percentage(runs_dir):
    runs = [r for r in report.load_runs(runs_dir) if r.fusion != "fixed"]
    assert report.paired_comparisons(runs).empty
    assert report.paired_side_by_side(report.paired_comparisons(runs)).empty


def test_paired_comparisons_use_the_metrics_bootstrap(runs_dir):
    """The paired row's QWK diff and CI are :func:`fusionlib.metrics.paired_bootstrap_qwk` on
    the case-joined predictions (its agreement with a slow reference is in test_metrics)."""
    from fusionlib.metrics import paired_bootstrap_qwk

    fixed, trainable = report.load_runs(runs_dir)
    row = report.paired_comparisons([fixed, trainable], n_boot=200, random_state=4,
                                    baselines=False).iloc[0]
    joined = trainable.predictions.merge(fixed.predictions[["repeat", "case_id", "pred"]],
                                         on=["repeat", "case_id"], suffixes=("_a", "_b"))
    boot = paired_bootstrap_qwk(joined["label"].to_numpy(), joined["pred_a"].to_numpy(),
                                joined["pred_b"].to_numpy(), joined["patient"].to_numpy(),
                                n_boot=200, random_state=4)
    assert (row["QWK diff"], row["CI low"], row["CI high"], row[report.SHARE_NOT_BETTER]) == \
        (boot["delta"], boot["ci_low"], boot["ci_high"], boot["share_not_better"])
    assert row["patients"] == boot["n_patients"]


def test_html_table_has_id_and_caption():
    text = report.html_table(pd.DataFrame({"name": ["a"], "x": [0.12345]}), "my-table", "Cap <1>")
    assert 'id="my-table"' in text and "<caption>Cap &lt;1&gt;</caption>" in text
    assert "0.123" in text and "0.12345" not in text


def test_no_runs_is_a_clear_error(tmp_path):
    (tmp_path / "runs" / ".tmp-x").mkdir(parents=True)
    with pytest.raises(FusionlibError, match=r"no finished runs in .*runs; run `fusionlib run "
                                             r"params/\*\.yaml` first"):
        report.build_report(tmp_path / "runs", tmp_path / "out")
    assert not (tmp_path / "out" / "index.html").exists()


# --------------------------------------------------------------------------- the HTML report


def test_report_html(built):
    text = built.read_text(encoding="utf-8")
    assert built.name == "index.html"
    for table_id in ("verdict-table", "plan-table", "kappa-table", "kappa-table-more",
                     "rf-share-table", "paired-table", "calibration-table", "provenance-table"):
        assert f'id="{table_id}"' in text, table_id
    assert 'id="synthetic-banner"' in text and 'id="report-nav"' in text
    # A reader's order: the answers in words and their figure, then the compact verdict table
    # (the details folded below it), then the runs.
    answers = text.find('id="verdict-answers"')
    assert 0 < answers < text.find('class="fl-figure fl-verdict-figure"') < text.find('id="verdict-table"') \
        < text.find('id="verdict-details"') < text.find('id="kappa-table"')
    assert text.find("<table") == text.find('<table', text.find('id="verdict-answers"'))
    assert ("Does trainable fusion (run trainable_30) beat the fixed 70/30 mix (run fixed_30) at "
            "30 % of the patients?") in text
    # Every section has a navigation link and folds; the bulky ones start folded.
    for section in ("answers", "planner", "runs", "weights", "paired", "calibration", "confusion",
                    "provenance"):
        assert f'<section id="{section}"' in text and f'href="#{section}"' in text, section
    assert '<section id="provenance" class="fl-section"><details>' in text
    assert '<section id="answers" class="fl-section"><details open>' in text
    for heading in ("Answers", "What it would take", "Runs", "Learned weights",
                    "Pooled-case comparison", "Calibration", "Confusion matrices", "Provenance"):
        assert f"<h2>{heading}</h2>" in text, heading
    # The learned-weights summary figure and every fold's raw weights folded away per run.
    assert re.search(r'alt="weights: what each variant learned[^"]*"', text)
    assert 'id="weights-trainable_30"' in text and text.count('class="fl-heat"') >= 2
    assert 'id="confusion-fixed_30"' in text
    # no code, no notebook chrome
    assert "import fusionlib" not in text and "load_runs(" not in text
    assert "jp-InputPrompt" not in text and "In&nbsp;[" not in text
    # self-contained: every image embedded, nothing fetched from the network, no script
    images = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", text)
    assert len(images) >= 5 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "<script" not in text
    assert not re.search(r"<link[^>]*href=\"https?:", text)
    # one page per run, linked, code hidden too
    for name in ("fixed_30", "trainable_30"):
        page = built.parent / "runs" / f"{name}.html"
        assert page.is_file() and f'href="runs/{name}.html"' in text
        body = page.read_text(encoding="utf-8")
        assert "run finished" in body and "import fusionlib" not in body
    assert not list(built.parent.glob(".*.tmp")) and not list(built.parent.glob(".report-*"))
    assert not list(built.parent.glob(".probe-*"))


def test_build_report_is_rerunnable(built, runs_dir):
    before = built.stat().st_mtime_ns
    again = report.build_report(runs_dir, built.parent, n_boot=50)
    assert again == built and built.stat().st_mtime_ns >= before
    assert 'id="kappa-table"' in built.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- headless Chromium

_PROBE = """
<script>
window.addEventListener("load", function () {
  function rows(id) {
    var t = document.getElementById(id);
    return t ? t.querySelectorAll("tbody tr").length : -1;
  }
  function visible(el) { var r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; }
  var imgs = Array.prototype.slice.call(document.images);
  var weights = imgs.filter(function (i) { return (i.alt || "").indexOf("weights") === 0; });
  var out = {
    kappa_rows: rows("kappa-table"), paired_rows: rows("paired-table"),
    kappa_visible: !!document.getElementById("kappa-table") && visible(document.getElementById("kappa-table")),
    paired_visible: !!document.getElementById("paired-table") && visible(document.getElementById("paired-table")),
    images: imgs.length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length,
    weights: weights.length,
    weights_ok: weights.filter(function (i) { return i.naturalWidth > 0 && visible(i); }).length,
    kappa_text: (document.getElementById("kappa-table") || {}).innerText || ""
  };
  var pre = document.createElement("pre");
  pre.id = "fl-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""



def _chromium():
    path = find_chromium()
    if path:
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium not installed (install Debian's `chromium` package)")
    pytest.skip("chromium not installed (Debian: apt-get install chromium; .ci/run installs it)")


def test_report_first_screen_answers_and_nothing_overflows_in_chromium(built):
    """At 1280x800 in headless Chromium, measured by the page itself: the answers end within
    the first 800 px, the page is no wider than the window, and with every <details> opened no
    table or heatmap is wider than its box (no horizontal scrolling anywhere)."""
    figures = measure(built, 1280, 800, chromium=_chromium())
    assert figures["window_width"] == 1280, figures
    assert figures["scroll_width"] <= 1280 and figures["scroll_width_open"] <= 1280, figures
    assert figures["table_overflow_closed"] <= 1 and figures["table_overflow_open"] <= 1, figures
    assert 0 < figures["answers_bottom"] <= 800, figures
    assert 0 < figures["figure_bottom"] <= 800, figures
    assert figures["nav_links"] == 8 and figures["broken_images"] == 0, figures
    assert figures["details"] >= 8, figures


def test_browser_probe_sees_an_overflowing_table(built, tmp_path):
    """The measurement is real: a page with a table wider than the window is caught."""
    wide = tmp_path / "wide.html"
    cells = "".join(f"<td>column-{i}-with-a-long-unbreakable-value</td>" for i in range(40))
    wide.write_text(built.read_text(encoding="utf-8").replace(
        "</main>", f'<div class="fl-table-wrap"><table id="too-wide"><tr>{cells}</tr></table></div></main>', 1),
        encoding="utf-8")
    figures = measure(wide, 1280, 800, chromium=_chromium())
    assert figures["table_overflow_closed"] > 500 and figures["widest"] == "too-wide", figures


def test_report_renders_in_chromium(built, tmp_path):
    from PIL import Image

    chromium = _chromium()
    probe = run_probe(built, _PROBE, chromium=chromium)
    assert probe["kappa_rows"] == 2 and probe["kappa_visible"], probe
    assert probe["paired_rows"] >= 1 and probe["paired_visible"], probe
    assert "fixed_30" in probe["kappa_text"] and "trainable_30" in probe["kappa_text"]
    assert probe["images"] >= 5 and probe["broken"] == 0, probe
    # the learned-weights summary figure (the per-fold weights are coloured tables)
    assert probe["weights"] >= 1 and probe["weights_ok"] == probe["weights"], probe

    shot = screenshot(built, tmp_path / "report.png", 1280, 2400, chromium=chromium)
    assert shot.is_file(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10, "screenshot is blank"
    assert (pixels < 128).mean() > 0.01, "screenshot has almost no dark (text/plot) pixels"


# --------------------------------------------------------------------------- plots


def test_plots_smoke():
    from fusionlib import plots

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    proba = rng.dirichlet(np.ones(3), 50)
    figs = [
        plots.confusion_matrix(y, proba.argmax(1)),
        plots.confusion_matrices({"a": (y, y), "b": (y, proba.argmax(1))}),
        plots.reliability_diagram({"a": (y, proba)}),
        plots.class_mix({"I": 3, "P": 5, "R": 1}),
        plots.class_mix(y),
        plots.clinical_share([{"clinical_share": 0.6, "clinical_share_I": 0.5,
                               "clinical_share_P": 0.7, "clinical_share_R": 0.8}]),
        plots.clinical_share([{"clinical_share": None}]),
        plots.fusion_weight_heatmaps([{"fold": 0, "fusion": "convex", "raw": {"a": 0.4}}]),
        plots.fusion_weight_heatmaps([{"fold": 0, "fusion": "per_class_convex",
                                       "raw": {"a_c": [0.2, 0.5, 0.9]}}]),
        plots.fusion_weight_heatmaps([{"fold": f, "fusion": "trainable",
                                       "raw": {"modalities": ["metadata", "thermal_map"],
                                               "matrix": rng.normal(size=(6, 3)).tolist()}}
                                      for f in range(3)]),
        plots.fusion_weight_heatmaps([]),
        plots.verdict_intervals([{"label": f"v{i}", **{m: {"delta": 0.01 * i, "interval": (-0.05, 0.06),
                                                          "margin": 0.02, "verdict": v}
                                                      for m in ("qwk", "log_loss")}}
                                 for i, v in enumerate(("better", "worse", "equivalent", "x"))]),
        plots.verdict_intervals([]),
        plots.influence_summary([{"title": "a", "variant": {"overall": [0.4, 0.5], "I": [0.3]},
                                  "fixed": {"overall": [0.6]}},
                                 {"title": "b", "variant": {"R": [0.2, 0.3]}, "fixed": None}]),
        plots.influence_summary([{"title": "none", "variant": {}, "fixed": None}]),
        plots.training_curve({"epoch": [10, 20], "train_loss": [1, 0.9], "val_loss": [1, 0.95],
                              "best_epoch": 20}),
    ]
    for fig in figs:
        assert len(plots.to_base64_png(fig, dpi=40)) > 100


# --------------------------------------------------------------------------- another clinical model

GB = {"clinical": {"model": "hist_gradient_boosting", "options": {"max_iter": 20},
                   "inner_folds": 2}}


@pytest.fixture(scope="module")
def gb_runs(runs_dir):
    """The same two runs with gradient boosting as the clinical model: their image branches
    come from ``runs_dir``'s branch cache (the image branch does not depend on the clinical
    model), so only the boosting and the heads are fitted."""
    from fusionlib.experiment import run_experiment
    from fusionlib.params import validate

    runs = runs_dir.parent / "gb_runs"
    for fusion in ("fixed", "trainable"):
        params = validate({"name": f"{fusion}_30", "fusion": {"variant": fusion}, **TINY, **GB})
        result = run_experiment(params, cache_dir=runs_dir.parent / "cache", progress=False)
        assert result.provenance["branch_cache"]["hits"] >= 2     # each fold's image branch
        result.save(runs / params.name)
        _executed_notebook(runs / params.name / "executed.ipynb")
        (runs / params.name / "done.json").write_text(json.dumps({"ok": True}))
    return runs


def _words(text: str) -> str:
    """The page's text without its embedded images (base64 can spell anything)."""
    return re.sub(r"base64,[A-Za-z0-9+/=]+", "", text)


def test_a_gradient_boosting_report_names_its_model_and_never_rf(gb_runs, tmp_path):
    from fusionlib.report.html import weight_tables_html

    runs = report.load_runs(gb_runs)
    assert [r.clinical.long for r in runs] == ["gradient boosting"] * 2
    # the verdict's words: the weighting sentence names the model
    table = report.verdict_table(runs, n_boot=200)
    sentences = report.verdict_sentences(table)
    weighting = [s for s in sentences if s.startswith("What weighting")]
    assert weighting and "the clinical (gradient boosting) branch's share" in weighting[0]
    assert not any(re.search(r"\bRF\b", s) for s in sentences)
    # the runs table's share columns and the raw weights' rows carry the model's label
    columns = report.runs_table_columns(runs)
    assert {"GB share", "GB influence"} <= set(columns) and not any("RF" in c for c in columns)
    assert {"GB share", "GB influence"} <= set(report.runs_table(runs).columns)
    trainable = next(r for r in runs if r.fusion == "trainable")
    heat = weight_tables_html(trainable.weights, trainable.clinical.short)
    assert "<th>GB:I</th>" in heat and "RF" not in heat
    # the whole page
    page = _words(report.build_report(gb_runs, tmp_path / "reports", n_boot=200)
                  .read_text(encoding="utf-8"))
    assert "The clinical branch is gradient boosting" in page and "clinical" in page
    assert "<th>GB influence</th>" in page
    assert not re.search(r"\bRF\b", page), re.search(r".{80}\bRF\b.{80}", page, re.S)


def test_the_default_forest_keeps_its_rf_labels(runs_dir):
    runs = report.load_runs(runs_dir)
    assert {r.clinical.short for r in runs} == {"RF"}
    assert {"RF share", "RF influence"} <= set(report.runs_table_columns(runs))
    page = report.report_content(runs, n_boot=50)
    assert "The clinical branch is" not in page.header
    assert not any("(random forest)" in s for s in page.answers)


def test_runs_of_two_clinical_models_share_neutral_labels(runs_dir, gb_runs):
    from fusionlib.report.page import clinical_model_note

    forest, boosted = report.load_runs(runs_dir)[0], report.load_runs(gb_runs)[0]
    assert set(report.runs_table([forest, boosted]).columns) >= {"clinical share",
                                                                   "clinical influence"}
    note = clinical_model_note([forest, boosted])
    assert "random forest (fixed_30); gradient boosting (fixed_30)" in note


def test_figures_label_the_clinical_model_they_are_given():
    from fusionlib import plots

    shares = plots.clinical_share([{"clinical_share": 0.6}], clinical="GB")
    assert shares.axes[0].get_ylabel() == "effective GB share"
    assert "fixed 70% GB" in [t.get_text() for t in shares.axes[0].get_legend().get_texts()]
    mix = plots.fusion_weight_heatmaps([{"fold": 0, "fusion": "convex",
                                         "raw": {"modalities": ["metadata", "thermal_map"],
                                                 "a": 0.4}}], clinical="GB")
    assert mix.axes[0].get_ylabel() == "GB weight a"
    default = plots.clinical_share([{"clinical_share": 0.6}])
    assert default.axes[0].get_ylabel() == "effective clinical share"


# --------------------------------------------------------------------------- hand-made run folders
# No training: small, hand-written runs for the report's handling of broken and annotated runs.


def _hand_made_run(runs, name, fusion="fixed", n=24, seed=0, **summary):
    folder = runs / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    proba = rng.dirichlet(np.ones(3), n)
    pd.DataFrame({"repeat": 0, "fold": np.arange(n) % 2, "case_id": [f"c{i}" for i in range(n)],
                  "patient": [f"p{i // 2}" for i in range(n)], "label": np.arange(n) % 3,
                  "pred": proba.argmax(axis=1), "p_I": proba[:, 0], "p_P": proba[:, 1],
                  "p_R": proba[:, 2]}).to_csv(folder / "predictions.csv", index=False)
    metrics = {"summary": {"name": name, "fusion": fusion, "data_percentage": 100.0, "n_folds": 2,
                           "n_cases": n, "qwk": {"mean": 0.4, "sd": 0.1, "ci95": [0.2, 0.6]},
                           **summary},
               "folds": [{"repeat": 0, "fold": k, "qwk": 0.4, "rf_share": 0.7} for k in (0, 1)]}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "provenance.json").write_text(json.dumps(
        {"params": {"fusion": {"variant": fusion}, "protocol": {"seed": seed, "folds": 2},
                    "data": {"cohort_seed": 7}},
         "data": {"name": "hand-made", "fingerprint": "f"}}))
    (folder / "weights.json").write_text("[]")
    (folder / "done.json").write_text(json.dumps({"status": "ok"}))
    return folder


BROKEN = {   # folder -> the file and problem its warning must name
    "no_metrics": "no metrics.json", "no_done": "no done.json",
    "metrics_list": "metrics.json: expected a JSON object, got list",
    "bad_json": "metrics.json: cannot be read", "bad_provenance": "provenance.json: cannot be read",
    "truncated_predictions": "predictions.csv: row",
    "garbled_predictions": "predictions.csv: ",
}


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    runs = tmp_path_factory.mktemp("hand") / "runs"
    _hand_made_run(runs, "fixed_ok")
    _hand_made_run(runs, "trainable_ok", fusion="trainable",
                   dropped_images={"count": 3, "by_reason": {"unreadable": 2, "missing": 1}},
                   head_never_trained_folds=1)
    # Folders whose names the old report hid although they are not the runner's own.
    _hand_made_run(runs, "tmp-archive")
    _hand_made_run(runs, "copy.failed-1")
    # The runner's own folders: ignored without a word.
    shutil.copytree(_hand_made_run(runs, "scratch"), runs / ".tmp-scratch-1234abcd")
    shutil.copytree(runs / "scratch", runs / ".old-scratch-1234abcd")
    shutil.rmtree(runs / "scratch")
    (_hand_made_run(runs, "no_metrics") / "metrics.json").unlink()
    (_hand_made_run(runs, "no_done") / "done.json").unlink()
    (_hand_made_run(runs, "metrics_list") / "metrics.json").write_text("[]")
    (_hand_made_run(runs, "bad_json") / "metrics.json").write_text('{"summary": {"qwk"')
    (_hand_made_run(runs, "bad_provenance") / "provenance.json").write_bytes(b"\xff\xfe\x00")
    csv = _hand_made_run(runs, "truncated_predictions") / "predictions.csv"
    csv.write_text(csv.read_text()[:-40])                 # cut in the middle of the last row
    (_hand_made_run(runs, "garbled_predictions") / "predictions.csv").write_text(
        'repeat,fold,case_id\n0,"1\n')
    return runs


def test_broken_run_folders_are_left_out_with_a_warning(hand_made, caplog):
    left_out = []
    with caplog.at_level("WARNING", logger="fusionlib"):
        runs = report.load_runs(hand_made, left_out=left_out)
    assert sorted(r.name for r in runs) == ["copy.failed-1", "fixed_ok", "tmp-archive", "trainable_ok"]
    reasons = dict(left_out)
    assert sorted(reasons) == sorted(BROKEN)
    for name, problem in BROKEN.items():
        assert problem in reasons[name], (name, reasons[name])
        line = next(r.getMessage() for r in caplog.records if f"/{name}" in r.getMessage())
        assert problem in line and "left out" in line


@pytest.fixture(scope="module")
def hand_made_report(hand_made, tmp_path_factory):
    index = report.build_report(hand_made, tmp_path_factory.mktemp("hand_out") / "reports", n_boot=50)
    return index.read_text(encoding="utf-8")


def test_report_lists_the_runs_left_out(hand_made_report):
    box = re.search(r'id="left-out-runs".*?</div>', hand_made_report, re.S).group(0)
    for name, problem in BROKEN.items():
        assert name in box and html_escape(problem) in box, name
    kappa = re.search(r'id="kappa-table".*?</table>', hand_made_report, re.S).group(0)
    for name in ("fixed_ok", "trainable_ok", "tmp-archive", "copy.failed-1"):
        assert f"<td>{name}</td>" in kappa


def test_report_warns_on_untrained_heads_and_shows_dropped_images(hand_made_report):
    banner = re.search(r'id="head-never-trained-banner".*?</div>', hand_made_report, re.S).group(0)
    assert "trainable_ok" in banner and "1 of 2 folds" in banner and "fixed_ok" not in banner
    kappa = re.search(r'id="kappa-table".*?</table>', hand_made_report, re.S).group(0)
    assert "<th>dropped images</th>" in kappa
    rows = {m.group(1): m.group(0) for m in re.finditer(r"<tr>\s*<td>([^<]+)</td>.*?</tr>", kappa, re.S)}
    assert "<td>3</td>" in rows["trainable_ok"] and "<td>3</td>" not in rows["fixed_ok"]


def test_runs_table_tolerates_runs_without_the_new_keys(hand_made):
    table = report.runs_table(report.load_runs(hand_made))
    assert dict(zip(table["name"], table["dropped images"])) == {
        "fixed_ok": 0, "trainable_ok": 3, "tmp-archive": 0, "copy.failed-1": 0}
    summary = report.load_runs(hand_made)[-1].summary
    assert report.dropped_images_line(summary) == "dropped images: 3 (unreadable 2, missing 1)"
    assert report.dropped_images_line({}) == "dropped images: 0"


def _cli(*args, prefix=(), **kwargs):
    return subprocess.run([*prefix, sys.executable, "-m", "fusionlib", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300, **kwargs)


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_report_out_naming_a_file_is_one_line_error(hand_made, tmp_path, capsys):
    out = tmp_path / "index.html"
    out.write_text("earlier")
    line = _one_error_line(cli_here(capsys, "report", "--runs-dir", hand_made, "--out", out))
    assert line == f"fusionlib: error: {out}: the report output folder (--out) must be a folder, " \
                   "but this is a file"
    assert out.read_text() == "earlier"


def test_report_read_only_out_folder_is_one_line_error(hand_made, other_user):
    folder, prefix, env = other_user
    runs = folder / "runs"
    shutil.copytree(hand_made / "fixed_ok", runs / "fixed_ok")
    out = folder / "reports"
    out.mkdir()
    (out / "index.html").write_text("earlier report")
    out.chmod(0o555)
    line = _one_error_line(_cli("report", "--runs-dir", str(runs), "--out", str(out), env=env,
                                prefix=prefix))
    assert line == (f"fusionlib: error: {out}: the report output folder (--out) is not writable: "
                    "Permission denied")
    assert (out / "index.html").read_text() == "earlier report"
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]


def test_a_variant_is_paired_with_the_fixed_run_of_its_own_seed(tmp_path):
    """Seeds, folds and repeats are read from the saved sections (protocol.seed, ...)."""
    from fusionlib.report.tables import choose_fixed, provenance_table

    runs = tmp_path / "runs"
    for name, fusion, seed in (("fixed_s0", "fixed", 0), ("fixed_s1", "fixed", 1),
                               ("trainable_s1", "trainable", 1)):
        _hand_made_run(runs, name, fusion=fusion, seed=seed)
    loaded = {run.name: run for run in report.load_runs(runs)}
    fixed = [loaded["fixed_s0"], loaded["fixed_s1"]]
    assert choose_fixed(fixed, loaded["trainable_s1"]).name == "fixed_s1"
    assert loaded["trainable_s1"].fusion == "trainable"
    table = provenance_table(list(loaded.values()))
    assert set(table["cohort seed"]) == {7}


def test_verdict_table(runs_dir):
    """Each variant vs fixed over its seeds: the mean ΔQWK is the seeds' QWK differences; the
    verdict reads the patients + seeds interval four ways (better, worse, equivalent within the
    margin, inconclusive); the 80 %-power detectable difference comes from the same SE and df;
    the decision agreement is the share of cases decided alike; the patient bootstrap and the
    corrected t are shown beside it."""
    from fusionlib.metrics import qwk
    from fusionlib.report.conclusions import detectable_difference, four_way_verdict, verdict_words

    runs = report.load_runs(runs_dir)
    table = report.verdict_table(runs, n_boot=200)
    assert list(table.columns) == report.VERDICT_COLUMNS
    row = table.set_index("run").loc["trainable_30"]
    assert row["variant"] == "trainable" and row["vs"] == "fixed_30" and row["seeds"] == 1
    a, b = (next(r for r in runs if r.name == n).predictions for n in ("trainable_30", "fixed_30"))
    joined = a.merge(b, on=["seed", "repeat", "case_id"], suffixes=("", "_b"))
    expected = qwk(joined["label"], joined["pred"]) - qwk(joined["label"], joined["pred_b"])
    assert row["ΔQWK"] == pytest.approx(expected)
    low, high = (float(v) for v in row["ΔQWK interval"].strip("[]").split(","))
    assert low < row["ΔQWK"] < high
    assert row["ΔQWK corrected t"].startswith("[") and row["ΔQWK patient bootstrap"].startswith("[")
    q = table.attrs["compare"][list(table["run"]).index("trainable_30")]["qwk"]
    assert (high - low) / 2 == pytest.approx(q["half_width"], abs=2e-3)
    assert row["detectable ΔQWK (80 % power)"] == pytest.approx(
        detectable_difference(q["se"], q["df"]))
    assert row["detectable ΔQWK (80 % power)"] > q["half_width"]
    verdict = four_way_verdict(row["ΔQWK"], q["se"], q["df"], 0.02)
    assert row["QWK verdict"] == verdict_words(verdict, 0.02, q["detectable"])
    assert row["decision agreement"] == pytest.approx((joined["pred"] == joined["pred_b"]).mean())
    # The variant's clinical influence share beside the fixed mix's on the same cases.
    assert row["clinical influence share"].count("±") == 1
    assert row["fixed's clinical influence share"].count("±") == 1
    answers = report.verdict_sentences(table)
    assert answers[0].startswith("Does trainable fusion (run trainable_30) beat the fixed 70/30 "
                                 "mix (run fixed_30) at 30 %")
    assert "decide alike on" in answers[0]
    assert answers[-1].startswith("What weighting does trainable fusion (run trainable_30) learn?")
    assert "for the fixed mix on the same cases (its setting: clinical weight 0.70)" in answers[-1]


def test_answers_are_keyed_by_variant_not_name(runs_dir, tmp_path):
    """Runs named alpha (fixed) and beta (trainable) get the same answers, naming them."""
    runs = tmp_path / "runs"
    for old, new in (("fixed_30", "alpha"), ("trainable_30", "beta")):
        shutil.copytree(runs_dir / old, runs / new)
        metrics = json.loads((runs / new / "metrics.json").read_text())
        metrics["summary"]["name"] = new
        (runs / new / "metrics.json").write_text(json.dumps(metrics))
    table = report.verdict_table(report.load_runs(runs), n_boot=200)
    assert list(table["run"]) == ["beta"] and list(table["variant"]) == ["trainable"]
    answers = report.verdict_sentences(table)
    assert len(answers) == 2
    assert answers[0].startswith("Does trainable fusion (run beta) beat the fixed 70/30 mix "
                                 "(run alpha) at 30 % of the patients?")
    assert answers[1].startswith("What weighting does trainable fusion (run beta) learn?")


def test_compact_verdict_and_its_details(runs_dir):
    """The first screen's table holds the deciding interval only and one-word verdicts; the
    details hold every other interval, each seed and the verdict in words."""
    table = report.verdict_table(report.load_runs(runs_dir), n_boot=200)
    compact = report.verdict_compact(table)
    row = compact.iloc[0]
    assert row["variant"] == "trainable" and row["data %"] == "30%"
    assert row["ΔQWK [95 % interval]"] == f"{table['ΔQWK'].iloc[0]:+.3f} {table['ΔQWK interval'].iloc[0]}"
    assert row["QWK verdict"] in ("better", "worse", "equivalent", "inconclusive")
    assert row["QWK verdict"] == table.attrs["compare"][0]["qwk"]["verdict"]
    assert not any("bootstrap" in c or "corrected" in c for c in compact.columns)
    shares = [float(v) for v in row["clinical influence: variant / fixed"].split(" / ")]
    assert all(0 <= v <= 1 for v in shares)
    from fusionlib.report.verdict import verdict_details

    details = verdict_details(table)
    qwk = details["qwk-details"][1]
    assert {"ΔQWK patient bootstrap", "ΔQWK corrected t", "ΔQWK per seed", "QWK verdict"} <= set(qwk)
    assert qwk["QWK verdict"].iloc[0] == table["QWK verdict"].iloc[0]


def test_confusion_tables_count_every_case():
    from fusionlib.report.html import confusion_tables_html

    y = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 2, 0])
    text = confusion_tables_html({"run a": (y, pred)})
    cells = re.findall(r"<td[^>]*>(\d+)<br><small>(\d+)%</small></td>", text)
    counts = np.array([int(c) for c, _ in cells]).reshape(3, 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert [int(p) for _, p in cells][:3] == [50, 50, 0]
    assert 'id="confusion-run a"' in text


def test_weight_tables_show_every_fold_on_one_scale():
    from fusionlib.report.html import weight_tables_html

    entries = [{"fold": f, "fusion": "trainable",
                "raw": {"matrix": (np.eye(6, 3) * (f + 1)).tolist(),
                        "modalities": ["metadata", "thermal_map"]}} for f in range(3)]
    text = weight_tables_html(entries)
    assert text.count('class="fl-heat"') == 3 and "fold 2" in text
    # one colour scale: the largest weight (3.0, fold 2) is the darkest red, fold 0's 1.0 paler
    assert "rgb(178, 24, 43)" in text and ">3.00<" in text
    fold0 = text.split("<table")[1]
    assert "rgb(178, 24, 43)" not in fold0 and ">1.00<" in fold0
    assert "No fusion weights" in weight_tables_html([])


def test_report_command_prints_the_answers_then_the_path(runs_dir, tmp_path, capsys):
    """`fusionlib report` through fusionlib.cli.main in this process; the command in a process
    of its own: test_report_read_only_out_folder_is_one_line_error here and
    tests/test_runner_processes.py::test_a_normal_run_and_report_are_quiet."""
    out = tmp_path / "reports"
    proc = cli_here(capsys, "report", "--runs-dir", runs_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == f"report: {out / 'index.html'}"
    printed = " ".join(line.strip() for line in lines[:-1])
    table = report.verdict_table(report.load_runs(runs_dir))
    for answer in report.verdict_sentences(table):
        assert answer in printed
    assert printed.startswith("Does trainable fusion (run trainable_30) beat")
    # the same sentences as the page's first screen
    page = (out / "index.html").read_text(encoding="utf-8")
    assert html_escape(report.verdict_sentences(table)[0].partition("? ")[2]) in page


@pytest.mark.slow
def test_report_notebook_shows_the_same_sections(runs_dir, tmp_path):
    """notebooks/report.ipynb (JupyterLab, papermill) displays the library's sections: no table
    or formatting of its own."""
    papermill = pytest.importorskip("papermill")
    notebook = REPO / "notebooks" / "report.ipynb"
    code = "".join(c.source for c in nbformat.read(str(notebook), as_version=4).cells
                   if c.cell_type == "code")
    assert "def " not in code and "html_table" not in code and ".assign(" not in code
    out = tmp_path / "report.ipynb"
    papermill.execute_notebook(str(notebook), str(out), cwd=str(notebook.parent),
                               parameters={"runs_dir": str(runs_dir), "n_boot": 200},
                               progress_bar=False, kernel_name="python3")
    outputs = [o for c in nbformat.read(str(out), as_version=4).cells if c.cell_type == "code"
               for o in c.get("outputs", [])]
    shown = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    for section in ("answers", "planner", "runs", "weights", "provenance"):
        assert f'<section id="{section}"' in shown, section
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    answers = report.verdict_sentences(report.verdict_table(report.load_runs(runs_dir), n_boot=200))
    assert answers[0] in printed
