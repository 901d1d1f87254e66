"""Property tests (Hypothesis): malformed input to the clinical-table loader, the bounding-box
reader and the parameter schema gives DataError/ParamsError or a clean load, nothing else.

The examples are fixed by the "ci" profile in conftest.py (derandomized, no database)."""

from __future__ import annotations

import csv
import io
import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fusionlib.data import BBOX_COLUMNS, KEY_COLUMNS, LABEL_COLUMN, read_bounding_boxes, read_clinical_table
from fusionlib.errors import DataError, ParamsError
from fusionlib.params import SECTIONS, ExperimentParams, validate

NUMBERS = st.one_of(st.integers(-10 ** 30, 10 ** 30).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["inf", "-inf", "nan", "NaN", "Infinity", "1e309", "-0", "1_000",
                                     "0x10", " 7 ", "3.", ".5", "1e-400", "9" * 25]))
CELLS = st.one_of(NUMBERS, st.sampled_from(["", "I", "P", "R", " R ", "i", "F", "M", "\"", ",", "\n"]),
                  st.text(max_size=8))
CLINICAL_HEADER = ["ID", *KEY_COLUMNS, "Age", "Sex (F:0, M:1)", "Pain Level", LABEL_COLUMN]


def _load(reader, data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.csv"
        path.write_bytes(data)
        return reader(path)


def _csv(header, rows) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _only_data_errors(reader, data: bytes):
    try:
        return _load(reader, data)
    except DataError as err:
        assert "\n" not in str(err)  # one line for the CLI
        return None


@given(st.binary(max_size=400))
def test_clinical_loader_on_random_bytes(data):
    _only_data_errors(read_clinical_table, data)


@given(st.lists(st.lists(CELLS, min_size=len(CLINICAL_HEADER), max_size=len(CLINICAL_HEADER)),
                min_size=1, max_size=6),
       st.sets(st.sampled_from(CLINICAL_HEADER), max_size=2))
def test_clinical_loader_on_random_cells(rows, dropped):
    header = [c for c in CLINICAL_HEADER if c not in dropped]
    rows = [[cell for c, cell in zip(CLINICAL_HEADER, row) if c not in dropped] for row in rows]
    cohort = _only_data_errors(read_clinical_table, _csv(header, rows))
    if cohort is not None:  # what loads is usable: finite numbers, integer keys, known labels
        numeric = cohort.features[cohort.numeric_features].to_numpy(dtype=float)
        assert not np.isinf(numeric).any()
        assert set(cohort.y) <= {0, 1, 2}


def _valid_rows(rng_cells):
    """Mostly valid clinical rows with some cells replaced by generated ones."""
    rows = []
    for i, replaced in enumerate(rng_cells):
        row = [str(i), str(1 + i // 3), str(i % 3), "1", "60", "F", "2", "IPR"[i % 3]]
        for position, value in replaced:
            row[position % len(row)] = value
        rows.append(row)
    return rows


@given(st.lists(st.lists(st.tuples(st.integers(0, 7), CELLS), max_size=2), min_size=3, max_size=8))
def test_clinical_loader_on_mostly_valid_tables(changes):
    _only_data_errors(read_clinical_table, _csv(CLINICAL_HEADER, _valid_rows(changes)))


@given(st.lists(st.lists(st.one_of(NUMBERS, CELLS), min_size=len(BBOX_COLUMNS),
                         max_size=len(BBOX_COLUMNS)), min_size=1, max_size=5))
def test_bounding_box_reader_on_random_cells(rows):
    boxes = _only_data_errors(read_bounding_boxes, _csv(BBOX_COLUMNS, rows))
    if boxes is not None:
        assert (boxes["Xmin"] < boxes["Xmax"]).all() and (boxes["Ymin"] < boxes["Ymax"]).all()


@given(st.binary(max_size=300))
def test_bounding_box_reader_on_random_bytes(data):
    _only_data_errors(read_bounding_boxes, data)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 400, 10 ** 400),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["metadata", "thermal_map", "fixed", "trainable", "synthetic"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner,
                                                                       max_size=3)), max_leaves=8)
KEYS = st.one_of(st.sampled_from(list(ExperimentParams.model_fields)), st.text(max_size=10),
                 st.integers(), st.none())
SECTION_KEYS = [(section, key) for section, model in SECTIONS.items() for key in model.model_fields]


def _floats(value):
    """Every float leaf of a (nested) dumped value."""
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for sub in value.values():
            yield from _floats(sub)
    elif isinstance(value, (list, tuple)):
        for sub in value:
            yield from _floats(sub)


def _only_params_errors(raw):
    try:
        params = validate(raw, "params/x.yaml")
    except ParamsError as err:
        assert "\n" not in str(err) and str(err).startswith("params/x.yaml")
        return None
    assert all(math.isfinite(v) for v in _floats(params.to_dict()))   # every accepted float
    return params


@given(st.dictionaries(KEYS, VALUES, max_size=5))
def test_params_schema_on_random_mappings(raw):
    _only_params_errors(raw)


# Numbers (and lists of them) are where range checks hide: inf, nan and ints beyond float range.
NUMERIC_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                           st.integers(-10 ** 400, 10 ** 400),
                           st.lists(st.one_of(st.floats(), st.integers(-10 ** 400, 10 ** 400)),
                                    max_size=4))


@given(st.sampled_from(SECTION_KEYS), st.one_of(VALUES, NUMERIC_VALUES))
def test_params_schema_on_one_random_value(where, value):
    section, key = where
    _only_params_errors({"name": "x", section: {key: value}})


@given(st.sampled_from(list(SECTIONS)), VALUES)
def test_params_schema_on_random_sections(section, value):
    _only_params_errors({"name": "x", section: value})


@given(VALUES)
def test_params_schema_on_non_mappings(raw):
    if not isinstance(raw, dict):
        _only_params_errors(raw)
