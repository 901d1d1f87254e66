"""Data-folder problems: collected into one summary (counts per kind, first files), problem
images left out of the cohort, strict mode as one clear DataError; a known box gives known pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fusionlib.synthetic import generate_cohort
from fusionlib.data import (BBOX_FILENAMES, CLINICAL_FILENAME, FolderProblems, image_filename,
                            load_cohort)
from fusionlib.errors import DataError
from fusionlib.images import cohort_image_arrays

FOLDER = "Thermal_Map_IMG"


@pytest.fixture(scope="module")
def clean_cohort(tmp_path_factory):
    """A small generated cohort in the study's layout, every case with 1-3 thermal maps."""
    return generate_cohort(tmp_path_factory.mktemp("clean") / "c", n_patients=10, random_state=5,
                           no_image_fraction=0.0)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _break_folder(root):
    """Plant a known number of each problem; returns what was planted."""
    images = root / FOLDER
    pngs = sorted(images.glob("*.png"))
    boxes_csv = root / BBOX_FILENAMES["thermal"]
    boxes = pd.read_csv(boxes_csv)
    patients = set(pd.read_csv(root / CLINICAL_FILENAME, encoding="utf-8-sig")["Patient#"])
    stranger = next(p for p in range(1, 1000) if p not in patients)

    # 2 corrupt PNGs: junk bytes, and a truncated file.
    pngs[0].write_bytes(b"not a png at all")
    pngs[1].write_bytes(pngs[1].read_bytes()[:50])
    # 3 file names outside the convention (one of them not even a PNG).
    (images / "photo.png").write_bytes(pngs[2].read_bytes())
    (images / "1_P00101BTMW.png").write_bytes(pngs[2].read_bytes())   # key one digit short
    (images / "notes.txt").write_text("scanned on Tuesday")
    (images / ".DS_Store").write_bytes(b"\0")                         # hidden: ignored
    # 1 image whose (patient, appt, ulcer) has no clinical row.
    (images / image_filename(900, stranger, 0, 1)).write_bytes(pngs[2].read_bytes())
    # 2 boxes outside their image (64 x 80 px): one past the right edge, one negative.
    for png, change in ((pngs[3], {"Xmax": 65}), (pngs[4], {"Ymin": -3})):
        for col, value in change.items():
            boxes.loc[boxes["Filename"] == png.name, col] = value
    # 2 boxes with no image: a deleted PNG, and a row for a file that never existed.
    pngs[5].unlink()
    ghost = boxes.iloc[[0]].assign(Filename=image_filename(901, stranger, 0, 1))
    boxes = pd.concat([boxes, ghost], ignore_index=True)
    boxes.to_csv(boxes_csv, index=False)
    return {"n_png": len(pngs), "corrupt": [pngs[0].name, pngs[1].name],
            "outside": [pngs[3].name, pngs[4].name], "deleted": pngs[5].name}


def test_clean_folder_has_no_problems(clean_cohort):
    cohort = load_cohort(clean_cohort, strict=True)
    assert "problems" not in cohort.meta
    assert len(cohort.images) == len(list((clean_cohort / FOLDER).glob("*.png")))
    assert "problems" not in cohort.summary()


def test_each_problem_kind_is_counted_exactly(tmp_path, clean_cohort):
    root = _copy(clean_cohort, tmp_path / "broken")
    planted = _break_folder(root)
    cohort = load_cohort(root)
    problems = cohort.meta["problems"]
    assert problems["counts"] == {"unreadable_image": 2, "bad_filename": 3, "no_clinical_row": 1,
                                  "box_outside_image": 2, "box_without_image": 2}
    assert problems["total"] == 10
    assert problems["examples"]["unreadable_image"] == [f"{FOLDER}/{n}" for n in planted["corrupt"]]
    assert sorted(problems["examples"]["bad_filename"]) == sorted(
        f"{FOLDER}/{n}" for n in ("photo.png", "1_P00101BTMW.png", "notes.txt"))
    assert f"{FOLDER}/{planted['deleted']}" in problems["examples"]["box_without_image"]
    # Problem images are left out; the rest (several per case) load normally.
    names = {p.rsplit("/", 1)[-1] for p in cohort.images["path"]}
    assert not names & set(planted["corrupt"] + planted["outside"])
    assert len(cohort.images) == planted["n_png"] - 2 - 2 - 1
    assert cohort.images.groupby("case_id").size().max() > 1
    # Plain, JSON-able data, and readable lines in the cohort summary.
    import json

    assert json.loads(json.dumps(problems)) == problems
    text = cohort.summary()
    assert "data-folder problems (files left out): 10" in text
    assert "unreadable or corrupt PNG: 2" in text and "box but no image: 2" in text


def test_examples_are_capped_but_counts_are_not(tmp_path, clean_cohort):
    root = _copy(clean_cohort, tmp_path / "many")
    png = next((root / FOLDER).glob("*.png"))
    for i in range(8):
        (root / FOLDER / f"extra_{i}.png").write_bytes(png.read_bytes())
    problems = load_cohort(root).meta["problems"]
    assert problems["counts"] == {"bad_filename": 8}
    assert len(problems["examples"]["bad_filename"]) == 5
    lines = FolderProblems.from_dict(problems).summary()
    assert lines == [f"file name outside the convention: 8 ({', '.join(problems['examples']['bad_filename'])}, ...)"]


def test_strict_mode_is_one_clear_line_naming_the_folder(tmp_path, clean_cohort):
    root = _copy(clean_cohort, tmp_path / "strict")
    planted = _break_folder(root)
    with pytest.raises(DataError) as err:
        load_cohort(root, strict=True)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{root}: 10 data-folder problems")
    for part in ("2 unreadable or corrupt PNG", "3 file name outside the convention",
                 "1 image with no clinical row", "2 box outside the image", "2 box but no image"):
        assert part in message
    assert message.endswith(f"first: {FOLDER}/{planted['corrupt'][0]}")


def test_folder_names_are_configurable(tmp_path, clean_cohort):
    root = _copy(clean_cohort, tmp_path / "renamed")
    (root / FOLDER).rename(root / "thermal")
    (root / "thermal" / "junk.png").write_bytes(b"x")
    default = load_cohort(root)
    assert len(default.images) == 0 and "problems" not in default.meta  # absent folder: skipped
    cohort = load_cohort(root, image_dirs={"thermal_map": "thermal"})
    assert cohort.meta["problems"]["counts"] == {"bad_filename": 1}
    assert cohort.meta["problems"]["examples"]["bad_filename"] == ["thermal/junk.png"]
    assert len(cohort.images) == len(list((root / "thermal").glob("*_P*.png")))


def test_known_box_in_the_folder_gives_the_known_pixels(tmp_path):
    """Clinical table + box table + PNG in the study's layout -> the crop is the box's pixels."""
    root = tmp_path / "pixels"
    (root / FOLDER).mkdir(parents=True)
    (root / CLINICAL_FILENAME).write_text(
        "\ufeffPatient#,Appt#,DFU#,Healing Phase Abs,Age\n7,0,1,P,60\n7,1,1,R,61\n", encoding="utf-8")
    yy, xx = np.mgrid[0:30, 0:40]
    array = np.stack([xx * 6, yy * 8, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    names = [image_filename(1, 7, 0, 1, angle="L"), image_filename(2, 7, 0, 1, angle="M")]
    for name in names:
        Image.fromarray(array).save(root / FOLDER / name)
    (root / BBOX_FILENAMES["thermal"]).write_text(
        "Filename,Patient#,Appt#,DFU#,DebriStat,Camera,Angle,Bounding Box Number,Xmin,Ymin,Xmax,Ymax\n"
        f"{names[0]},7,0,1,B,T,LW,1,12,4,24,16\n{names[1]},7,0,1,B,T,MW,1,0,10,40,30\n")
    cohort = load_cohort(root, strict=True)
    X, case_index = cohort_image_arrays(cohort, "thermal_map", size=12, margin=0.0)
    np.testing.assert_array_equal(case_index, [0, 0])           # two images for one case
    np.testing.assert_array_equal(X[0], array[4:16, 12:24].astype(np.float32) / 255.0)
    # A box touching the right and bottom edges (max exclusive) is inside the image.
    X40, _ = cohort_image_arrays(cohort, "thermal_map", size=40, margin=0.0)
    np.testing.assert_array_equal(X40[1, 10:30], array[10:30].astype(np.float32) / 255.0)
    assert not X40[1, :10].any() and not X40[1, 30:].any()
