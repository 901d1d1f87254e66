"""Hardening of the data layer: content-keyed fingerprints and caches, 16-bit images, dropped
images counted, untrainable tables refused, non-finite numbers, fold/seed checks, finite params."""

from __future__ import annotations

import logging
import re
import os

import numpy as np
import pytest
from PIL import Image

from fusionlib.cli import main
from fusionlib.synthetic import generate_cohort
from fusionlib.data import (BBOX_FILENAMES, load_cohort, read_bounding_boxes,
                            read_clinical_table)
from fusionlib.errors import DataError, ParamsError
from fusionlib.experiment import BranchCache
from fusionlib.images import load_image, load_images
from fusionlib.params import validate

HEADER = 'ID,Patient#,Appt#,DFU#,Age,"Sex (F:0, M:1)",Healing Phase,Phase Confidence (%),Healing Phase Abs'


def write(tmp_path, lines, name="table.csv"):
    path = tmp_path / name
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def table_rows(n_patients, labels="IPR", age="60", sex="F"):
    """One visit per (patient, label): every patient has every phase in ``labels``."""
    rows, i = [], 1
    for p in range(1, n_patients + 1):
        for a, label in enumerate(labels):
            rows.append(f"{i},{p},{a},1,{age},{sex},{label},80,{label}")
            i += 1
    return rows


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return generate_cohort(tmp_path_factory.mktemp("small") / "c", n_patients=8, random_state=3,
                           no_image_fraction=0.0)


# --------------------------------------------------------------- 1. content-keyed caches


def _rewrite_pixels(path):
    """New pixels under the same name, size and mtime (an uncompressed PNG's size is fixed)."""
    stat = path.stat()
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    Image.fromarray(255 - array).save(path, compress_level=0)
    return stat


def test_fingerprint_and_branch_key_change_when_pixels_change(tmp_path, small_folder):
    import shutil

    root = shutil.copytree(small_folder, tmp_path / "c")
    for png in (root / "Thermal_Map_IMG").glob("*.png"):  # uncompressed: sizes stay put below
        with Image.open(png) as image:
            image.load()
            image.save(png, compress_level=0)
    before = load_cohort(root).fingerprint()
    key_before = BranchCache.key(data=before, fold=0, settings={"modality": "thermal_map"})
    target = sorted((root / "Thermal_Map_IMG").glob("*.png"))[0]
    stat = _rewrite_pixels(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert target.stat().st_size == stat.st_size
    after = load_cohort(root).fingerprint()
    assert after != before
    assert BranchCache.key(data=after, fold=0, settings={"modality": "thermal_map"}) != key_before


def test_crop_cache_is_keyed_by_content_not_path_and_mtime(tmp_path):
    array = np.tile(np.arange(40, dtype=np.uint8)[None, :, None] * 6, (30, 1, 3))
    path = tmp_path / "img.png"
    Image.fromarray(array).save(path, compress_level=0)
    cache = tmp_path / "cache"
    before = load_images([path], None, size=8, margin=0.0, cache_dir=cache)
    stat = _rewrite_pixels(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same path, size and mtime
    after = load_images([path], None, size=8, margin=0.0, cache_dir=cache)
    np.testing.assert_array_equal(after, load_images([path], None, size=8, margin=0.0))
    assert not np.array_equal(before, after)


# --------------------------------------------------------------- 2. 16-bit images


@pytest.mark.parametrize("dtype, name", [(np.uint16, "deep.png"), (np.int32, "deep32.tif")])
def test_16_bit_png_keeps_its_contrast(tmp_path, dtype, name):
    ramp = np.tile(np.linspace(1000, 4000, 32), (16, 1))  # a thermal-like 16-bit range, all > 255
    path = tmp_path / name  # PNG holds 16-bit greyscale; 32-bit "I" needs TIFF
    Image.fromarray(ramp.astype(dtype)).save(path)
    with Image.open(path) as image:
        assert image.mode in ("I;16", "I")
    out = load_image(path, None, size=32, margin=0.0)
    rows = out[8:24]  # the padded band is zero; the image band holds the ramp
    assert rows.min() == 0.0 and rows.max() == 1.0
    assert np.all(np.diff(rows[4, :, 0]) >= 0) and len(np.unique(rows[..., 0])) > 20


def test_unreadable_modes_are_one_line_errors(tmp_path):
    path = tmp_path / "float.tif"  # a float image holding inf has no range to scale
    image = Image.new("F", (4, 4))
    image.putpixel((0, 0), float("inf"))
    image.save(path)
    with pytest.raises(DataError, match="image mode F holds non-finite values") as info:
        load_image(path)
    assert str(info.value).startswith(str(path))

    from fusionlib.images import _to_rgb

    class Odd:
        mode = "BGR;24"

    with pytest.raises(DataError, match="unsupported image mode 'BGR;24'"):
        _to_rgb(Odd(), path)


# --------------------------------------------------------------- 3. dropped images counted


def test_dropped_images_are_counted_by_reason_and_logged(tmp_path, small_folder, caplog):
    import shutil

    root = shutil.copytree(small_folder, tmp_path / "c")
    pngs = sorted((root / "Thermal_Map_IMG").glob("*.png"))
    pngs[0].write_bytes(b"")                          # zero bytes
    pngs[1].write_bytes(pngs[1].read_bytes()[:50])    # truncated
    (root / "Thermal_Map_IMG" / "junk.png").write_bytes(b"x")
    clean = load_cohort(small_folder)
    assert clean.meta["dropped_images"] == {"count": 0, "by_reason": {}}
    with caplog.at_level(logging.WARNING, logger="fusionlib"):
        cohort = load_cohort(root)
    assert cohort.meta["dropped_images"] == {"count": 3, "by_reason": {"unreadable_image": 2,
                                                                       "bad_filename": 1}}
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(lines) == 1 and "3 images dropped" in lines[0] and "\n" not in lines[0]
    assert "2 unreadable or corrupt PNG" in lines[0]


# --------------------------------------------------------------- 4. untrainable tables


def test_one_class_table_is_refused(tmp_path, capsys):
    from fusionlib.experiment import run_experiment

    path = write(tmp_path, [HEADER, *table_rows(6, labels="PP")])
    assert main(["metadata-cv", "--data", str(path), "--folds", "2"]) == 2  # was: exit 0, QWK 0
    err = capsys.readouterr().err
    assert f"{path}: the cohort lacks phases I, R (has P)" in err and err.count("\n") == 1
    params = validate({"data": {"modalities": ["metadata"]}, "fusion": {"variant": "fixed"},
                       "protocol": {"folds": 2}, "clinical": {"options": {"n_estimators": 5}}})
    with pytest.raises(DataError, match=r"lacks phases I, R \(has P\)"):
        run_experiment(params, cohort=read_clinical_table(path), cache_dir=None, progress=False)


def test_fold_whose_training_rows_lack_a_phase_is_refused(tmp_path, capsys):
    # Phase R on one patient only: whichever fold tests that patient trains without R.
    rows = table_rows(6, labels="IP") + ["99,1,9,1,60,F,R,80,R"]
    path = write(tmp_path, [HEADER, *rows])
    assert main(["metadata-cv", "--data", str(path), "--folds", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fusionlib: error: {path}:") and "\n" not in err
    assert "folds 2 is not possible" in err or "lacks phase R" in err


def test_table_with_every_feature_empty_is_refused(tmp_path):
    path = write(tmp_path, [HEADER, *table_rows(4, age="", sex="")])
    with pytest.raises(DataError, match="no usable feature: all 2 feature columns are empty") as info:
        read_clinical_table(path)
    assert str(path) in str(info.value)


def test_run_experiment_refuses_a_training_fold_without_a_phase(tmp_path):
    from fusionlib.experiment import run_experiment

    rows = table_rows(6, labels="IP") + [f"{90 + k},{k},9,1,60,F,R,80,R" for k in (1, 2)]
    path = write(tmp_path, [HEADER, *rows])
    cohort = read_clinical_table(path)
    params = validate({"data": {"modalities": ["metadata"]}, "fusion": {"variant": "fixed"},
                       "protocol": {"folds": 3}, "clinical": {"options": {"n_estimators": 5}}})
    with pytest.raises(DataError, match="folds 3 is not possible") as info:
        run_experiment(params, cohort=cohort, cache_dir=None, progress=False)
    assert str(path) in str(info.value)


# --------------------------------------------------------------- 7. non-finite numbers


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "1e309", "-1e999"])
def test_non_finite_number_in_a_numeric_column_names_column_and_line(tmp_path, value):
    rows = table_rows(2)
    rows[2] = rows[2].replace(",60,", f",{value},")
    path = write(tmp_path, [HEADER, *rows])
    with pytest.raises(DataError) as info:
        read_clinical_table(path)
    text = str(info.value)
    assert text == f"{path}: column 'Age', line 4: expected a finite number, got {value!r}"


def test_text_nan_stays_a_missing_value(tmp_path):
    rows = table_rows(2)
    rows[0] = rows[0].replace(",60,", ",nan,")
    cohort = read_clinical_table(write(tmp_path, [HEADER, *rows]))
    assert np.isnan(cohort.features["Age"].iloc[0]) and cohort.features["Age"].notna().sum() == 5


@pytest.mark.parametrize("value", ["inf", "1e400", "1e30"])
def test_non_finite_or_huge_box_corner_is_refused(tmp_path, value):
    header = "Filename,Patient#,Appt#,DFU#,DebriStat,Camera,Angle,Bounding Box Number,Xmin,Ymin,Xmax,Ymax"
    path = write(tmp_path, [header, "1_P001001BTMW.png,1,0,1,B,T,M,1,1,2,30,40",
                            f"2_P001011BTMW.png,1,1,1,B,T,M,1,1,2,{value},40"], name=BBOX_FILENAMES["thermal"])
    with pytest.raises(DataError, match=r"column 'Xmax', line 3: expected (a finite number|an integer)"):
        read_bounding_boxes(path)


# --------------------------------------------------------------- 8. metadata-cv arguments


@pytest.mark.parametrize("args, message", [
    (["--folds", "0"], "--folds must be at least 2, got 0"),
    (["--folds", "1"], "--folds must be at least 2, got 1"),
    (["--folds", "1000"], "--folds 1000 is not possible: 4 patients, the fewest with one phase "
                          "are 4 (phase I), so --folds must be between 2 and 4"),
    (["--seeds", "-1"], "--seeds must be integers >= 0, got -1"),
])
def test_metadata_cv_bad_arguments_are_one_line(tmp_path, capsys, args, message):
    path = write(tmp_path, [HEADER, *table_rows(4)])
    assert main(["metadata-cv", "--data", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_metadata_cv_on_three_patients_is_one_line(tmp_path, capsys):
    path = write(tmp_path, [HEADER, *table_rows(3)])
    assert main(["metadata-cv", "--data", str(path)]) == 2  # default 5 folds
    err = capsys.readouterr().err
    assert f"{path}: --folds 5 is not possible: 3 patients" in err and err.count("\n") == 1


# --------------------------------------------------------------- 9. finite parameters


@pytest.mark.parametrize("key, value", [
    ("head.learning_rate", float("inf")), ("stage2.learning_rate", float("nan")),
    ("protocol.data_percentage", float("nan")), ("image.crop_margin", float("nan")),
    ("protocol.validation_fraction", float("nan")), ("head.penalty", [0.0, float("inf")]),
    ("head.learning_rate", 10 ** 400), ("fusion.options", {"temperature": float("inf")}),
    ("data.image_signal", [1, 1, 10 ** 400]),
    ("clinical.options", {"min_samples_leaf": float("inf")}),
])
def test_non_finite_float_parameters_are_refused(key, value):
    section, name = key.split(".")
    with pytest.raises(ParamsError, match=rf"key '{re.escape(key)}(\[\d\])?'.*finite"):
        validate({section: {name: value}})


def test_head_that_never_leaves_its_start_is_flagged(tmp_path):
    from fusionlib.branches import BranchOutput
    from fusionlib.experiment import ExperimentResult, run_fold
    from fusionlib.head import HeadSettings
    from fusionlib.params import ExperimentParams
    from fusionlib.splits import patient_folds

    cohort = load_cohort(generate_cohort(tmp_path / "c", n_patients=24, random_state=2))
    rng = np.random.default_rng(0)
    # Informative fake branch outputs: a learning head improves on its start.
    onehot = np.eye(3)[cohort.y]
    rf = 0.5 * onehot + 0.5 * rng.dirichlet(np.ones(3), cohort.n_cases)
    img = 0.3 * onehot + 0.7 * rng.dirichlet(np.ones(3), cohort.n_cases)
    fold = patient_folds(cohort.y, cohort.groups, 2, 0)[0]
    outputs = {m: BranchOutput(fold.train, fold.test, p[fold.train], p[fold.test])
               for m, p in (("metadata", rf), ("thermal_map", img))}
    flags = {}
    for rate in (1.0, float("inf")):  # inf bypasses validate, as an unchecked caller could
        # A diverging learning rate is an sgd matter (lbfgs has none).
        head = HeadSettings.model_construct(optimizer="sgd", learning_rate=rate, max_epochs=40,
                                            patience=20, penalty=[0.0])
        params = ExperimentParams(head=head)
        result = run_fold(cohort, params, fold, outputs, log=lambda *_: None)
        flags[rate] = result.stage_scores["head_never_trained"]
        summary = ExperimentResult(params, cohort, [result], {}).summary()
        assert summary["head_never_trained_folds"] == int(flags[rate])
    assert flags == {1.0: False, float("inf"): True}
    # The default lbfgs head moves from its start: not flagged.
    params = ExperimentParams(head=HeadSettings(penalty=[0.0]))
    assert not run_fold(cohort, params, fold, outputs,
                        log=lambda *_: None).stage_scores["head_never_trained"]
