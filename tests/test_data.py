"""The clinical-table loader: real format, explicit features, and every bad input."""

import numpy as np
import pytest

from fusionlib.data import (CATEGORICAL_FEATURES, FEATURES, LEAKING_COLUMNS, Cohort,
                            parse_image_filename, image_filename, read_bounding_boxes,
                            read_clinical_table)
from fusionlib.errors import DataError

HEADER = "ID,Patient#,Appt#,DFU#,Age,Sex (F:0, M:1),Healing Phase,Phase Confidence (%),Healing Phase Abs"
# The sex column name holds a comma, so it is quoted as in a real CSV writer's output.
HEADER = 'ID,Patient#,Appt#,DFU#,Age,"Sex (F:0, M:1)",Healing Phase,Phase Confidence (%),Healing Phase Abs'
ROWS = ["1,1,0,1,60,F,I+,80,I", "2,1,1,1,61,F,P-,70,P", "3,2,0,1,55,M,R,90,R", "4,2,0,2,55,M,P,90,P"]


def write(tmp_path, lines, name="table.csv", bom=True):
    path = tmp_path / name
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_bom_table_with_keys_labels_and_features(tmp_path):
    cohort = read_clinical_table(write(tmp_path, [HEADER, *ROWS]))
    assert isinstance(cohort, Cohort)
    assert cohort.cases["case_id"].tolist() == ["P001A00U1", "P001A01U1", "P002A00U1", "P002A00U2"]
    assert cohort.y.tolist() == [0, 1, 2, 1]
    assert list(cohort.features.columns) == ["Age", "Sex (F:0, M:1)"]
    assert cohort.features["Age"].dtype == np.float64
    assert str(cohort.features["Sex (F:0, M:1)"].dtype) == "str"
    for leak in LEAKING_COLUMNS:
        assert leak not in cohort.features.columns


@pytest.mark.parametrize("lines, message", [
    ([HEADER, *ROWS[:2], "3,2,0,1,55,M,R,90,X"], "label 'X' is not one of I, P, R"),
    ([HEADER.replace(",Healing Phase Abs", ""), *[r.rsplit(",", 1)[0] for r in ROWS]],
     "missing required column 'Healing Phase Abs'"),
    ([HEADER, *ROWS, "5,1,0,1,60,F,P,80,P"], "conflicting labels"),
    ([HEADER, ROWS[0], "2,1,1,1,sixty,F,P-,70,P"], "column 'Age', line 3: expected a number, got 'sixty'"),
    ([HEADER, "1,one,0,1,60,F,I+,80,I"], "column 'Patient#', line 2: expected a number"),
    ([HEADER], "has a header but no rows"),
])
def test_bad_tables_give_one_line_naming_file_and_problem(tmp_path, lines, message):
    path = write(tmp_path, lines)
    with pytest.raises(DataError) as info:
        read_clinical_table(path)
    text = str(info.value)
    assert message in text
    assert str(path) in text and "\n" not in text


def test_missing_empty_and_binary_files(tmp_path):
    with pytest.raises(DataError, match="clinical table not found"):
        read_clinical_table(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("  \n")
    with pytest.raises(DataError, match="clinical table is empty"):
        read_clinical_table(empty)
    binary = tmp_path / "image.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(DataError, match="not a CSV text file"):
        read_clinical_table(binary)


def test_repeated_key_with_same_label_is_kept_as_a_second_record(tmp_path):
    cohort = read_clinical_table(write(tmp_path, [HEADER, *ROWS, "5,1,0,1,62,F,I,80,I"]))
    assert cohort.n_cases == 5
    assert cohort.cases["case_id"].iloc[-1] == "P001A00U1r1"


def test_leaking_columns_refused_as_explicit_features(tmp_path):
    with pytest.raises(ValueError, match="leaks the label"):
        read_clinical_table(write(tmp_path, [HEADER, *ROWS]), features=["Age", "Healing Phase"])


def test_filename_convention_round_trip():
    name = image_filename(280, 3, 1, 1, "B", "T", "L", "W")
    assert name == "280_P003011BTLW.png"
    parts = parse_image_filename(name)
    assert (parts["n"], parts["patient"], parts["appt"], parts["dfu"], parts["angle"]) == (280, 3, 1, 1, "L")
    assert parse_image_filename("foot.png") is None


def test_bounding_box_corners_must_be_ordered(tmp_path):
    path = write(tmp_path, ["Filename,Patient#,Appt#,DFU#,DebriStat,Camera,Angle,Bounding Box Number,"
                            "Xmin,Ymin,Xmax,Ymax", "1_P001001BTMW.png,1,0,1,B,T,MW,1,50,10,40,20"])
    with pytest.raises(DataError, match="not ordered"):
        read_bounding_boxes(path)


@pytest.mark.real_data
def test_real_table_loads_with_documented_shape(real_cohort):
    assert real_cohort.n_cases == 890
    assert real_cohort.cases["patient"].nunique() == 268
    assert real_cohort.class_counts() == {"I": 276, "P": 496, "R": 118}
    assert set(real_cohort.features.columns) <= set(FEATURES)
    assert len(real_cohort.features.columns) == len(FEATURES)
    for col in CATEGORICAL_FEATURES:
        assert str(real_cohort.features[col].dtype) == "str"
    assert real_cohort.cases["case_id"].is_unique
