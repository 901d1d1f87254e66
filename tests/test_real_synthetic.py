"""Real labels + synthetic thermal images: the folder synthesize_thermal_images writes, the
dataset real_synthetic_images and its image_signal parameter, and the params/real/ files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fusionlib.synthetic import generate_cohort, synthesize_thermal_images
from fusionlib.data import CLINICAL_FILENAME, load_cohort, read_clinical_table
from fusionlib.errors import DataError, ParamsError
from fusionlib.params import load_params, validate

REPO = Path(__file__).resolve().parents[1]
FUSIONLIB = str(Path(sys.executable).parent / "fusionlib")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A clinical table in the study's format standing in for the real one (kept small)."""
    folder = generate_cohort(tmp_path_factory.mktemp("tbl") / "c", n_patients=14, random_state=4)
    return folder / CLINICAL_FILENAME


def test_folder_pairs_the_table_with_images_from_the_true_labels(tmp_path, table):
    out = synthesize_thermal_images(table, tmp_path / "synth", image_signal=(0.9, 0.9, 1.3),
                                    random_state=1, no_image_fraction=0.2)
    source = read_clinical_table(table)
    cohort = load_cohort(out, strict=True)
    assert cohort.name == "real+synthetic-thermal"
    np.testing.assert_array_equal(cohort.y, source.y)                  # the table's own labels
    assert (out / CLINICAL_FILENAME).read_bytes() == table.read_bytes()
    has = cohort.has_modality("thermal_map")
    assert 0 < (~has).sum() < cohort.n_cases and cohort.images["xmin"].notna().all()
    meta = json.loads((out / "cohort.json").read_text())
    assert meta["summary"]["images"] == ("thermal images are SYNTHETIC, rendered from the true "
                                         "labels at signal (I,P,R)=(0.9, 0.9, 1.3)")
    assert "SYNTHETIC" in cohort.summary()
    # Deterministic for one seed; a folder of user data is never overwritten.
    again = synthesize_thermal_images(table, tmp_path / "again", image_signal=(0.9, 0.9, 1.3),
                                      random_state=1, no_image_fraction=0.2)
    for png in sorted((out / "Thermal_Map_IMG").glob("*.png")):
        assert (again / "Thermal_Map_IMG" / png.name).read_bytes() == png.read_bytes()
    user = tmp_path / "user"
    user.mkdir()
    (user / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="refusing to overwrite"):
        synthesize_thermal_images(table, user)
    with pytest.raises(ValueError, match="image_signal"):
        synthesize_thermal_images(table, tmp_path / "bad", image_signal=(1, -1, 1))


def test_image_signal_changes_how_separable_the_images_are(tmp_path, table):
    """Wound centre minus surrounding skin (colour) separates I (hot) from R with signal only."""
    from fusionlib.images import cohort_image_arrays

    gaps = []
    for signal in ((0, 0, 0), (2, 2, 2)):
        cohort = load_cohort(synthesize_thermal_images(table, tmp_path / f"s{signal[0]}",
                                                       image_signal=signal, no_image_fraction=0.0))
        wound, idx = cohort_image_arrays(cohort, "thermal_map", size=16, margin=0.0)
        around, _ = cohort_image_arrays(cohort, "thermal_map", size=16, margin=1.0)
        skin = np.concatenate([around[:, :, :2].reshape(len(around), -1),
                               around[:, :, -2:].reshape(len(around), -1)], axis=1).mean(axis=1)
        value = wound[:, 6:10, 6:10].mean(axis=(1, 2, 3)) - skin
        y = cohort.y[idx]
        gaps.append((value[y == 0].mean() - value[y == 2].mean()) / value.std())
    assert abs(gaps[0]) < 0.4 and gaps[1] > 0.8


def test_dataset_real_synthetic_images_and_its_parameter(tmp_path, table, monkeypatch):
    from fusionlib.datasets import data_fingerprint, load_dataset

    monkeypatch.setenv("FUSIONLIB_DATA_DIR", str(tmp_path / "generated"))
    params = validate({"data": {"dataset": "real_synthetic_images", "data_dir": str(table.parent),
                                "image_signal": [1, 0.5, 2]}}).data
    assert params.image_signal == [1.0, 0.5, 2.0]
    cohort = load_dataset(params)
    assert cohort.name == "real+synthetic-thermal" and cohort.root.parent == tmp_path / "generated"
    assert "(1, 0.5, 2)" in cohort.summary()
    stamp = (cohort.root / "cohort.json").stat().st_mtime_ns
    assert load_dataset(params).fingerprint() == cohort.fingerprint()    # reused, not rebuilt
    assert (cohort.root / "cohort.json").stat().st_mtime_ns == stamp
    # The runner's cheap fingerprint: stable, and it rebuilds nothing either.
    assert data_fingerprint(params) == data_fingerprint(params)
    assert (cohort.root / "cohort.json").stat().st_mtime_ns == stamp
    for bad in ([1, 1], [1, -0.5, 1], [1, "x", 1], [1, True, 1]):
        with pytest.raises(ParamsError, match="image_signal"):
            validate({"data": {"image_signal": bad}})
    missing = validate({"data": {"dataset": "real_synthetic_images",
                                 "data_dir": str(tmp_path / "nowhere")}}).data
    with pytest.raises(DataError, match="clinical table not found"):
        load_dataset(missing)
    with pytest.raises(DataError, match="clinical table not found"):
        data_fingerprint(missing)


def test_real_params_validate_and_stay_out_of_the_default_sweep():
    files = sorted((REPO / "params" / "real").glob("*.yaml"))
    assert {f.stem for f in files} == {"real_metadata_only", "real_synth_fixed_100",
                                       "real_synth_trainable_100",
                                       "real_synth_trainable_minrule_100"}
    for path in files:
        params = load_params(path)
        assert params.name == path.stem and params.description.strip()
        raw = yaml.safe_load(path.read_text())
        if params.data.dataset == "real":
            assert params.data.modalities == ["metadata"] and params.fusion.variant == "fixed"
        else:
            assert params.data.dataset == "real_synthetic_images" and "SYNTHETIC" in params.description
            assert raw["data"]["image_signal"] == [0.9, 0.9, 1.3]
    assert not [p for p in (REPO / "params").glob("*.yaml") if "real" in p.read_text().split("dataset:")[-1][:20]]
    proc = subprocess.run([FUSIONLIB, "validate", *map(str, files)], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
