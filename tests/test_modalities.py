"""A modality is one record (issue 21, point 5): validation refuses an image modality the
dataset cannot provide, and Stage 2 with other than one image modality, in one line naming
the file, before any kernel starts (it used to fail inside the notebook after the clinical
branch had trained, or Stage 2 was silently skipped)."""

from pathlib import Path

import pytest
import yaml

from fusionlib.data import (BBOX_FILENAMES, DEFAULT_IMAGE_DIRS, GENERATED_MODALITIES,
                            IMAGE_MODALITIES, MODALITIES, MODALITY_CAMERA)
from fusionlib.datasets import DataSettings, data_folder
from fusionlib.errors import ParamsError
from fusionlib.params import load_params
from helpers import REPO, cli_here, one_error_line



def _params(folder: Path, name: str, content: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.fixture
def real_folder(tmp_path):
    """A real-layout data folder with thermal maps and depth-camera photographs only."""
    folder = tmp_path / "dfu"
    for modality in ("thermal_map", "depth_rgb"):
        (folder / IMAGE_MODALITIES[modality].folder).mkdir(parents=True)
        (folder / IMAGE_MODALITIES[modality].folder / "1_P00101_1BTMW.png").write_bytes(b"")
    (folder / IMAGE_MODALITIES["depth_map"].folder).mkdir()       # a folder, but no PNG in it
    (folder / IMAGE_MODALITIES["depth_map"].folder / "notes.txt").write_text("empty")
    return folder


# --------------------------------------------------------------------------- the records


def test_old_names_are_views_of_the_records_with_their_old_contents():
    assert MODALITIES == ("thermal_map", "depth_rgb", "depth_map", "thermal_rgb")
    # In the old order too: the folders are scanned in it, and the image rows' order enters
    # Cohort.fingerprint.
    assert list(DEFAULT_IMAGE_DIRS.items()) == [
        ("thermal_map", "Thermal_Map_IMG"), ("thermal_rgb", "Thermal_RGB"),
        ("depth_rgb", "Depth_RGB"), ("depth_map", "Depth_Map_IMG")]
    assert MODALITY_CAMERA == {"thermal_map": "thermal", "depth_rgb": "depth",
                               "depth_map": "depth", "thermal_rgb": "thermal"}
    assert BBOX_FILENAMES == {"thermal": "bounding_box_thermal.csv",
                              "depth": "bounding_box_depth.csv"}
    with pytest.raises(AttributeError):
        IMAGE_MODALITIES["thermal_map"].generated = False          # frozen


def test_modalities_of_one_camera_share_its_box_table():
    tables = {}
    for modality in IMAGE_MODALITIES.values():
        assert tables.setdefault(modality.camera, modality.box_table) == modality.box_table, \
            f"{modality.name}: camera {modality.camera} has two box tables"


def test_the_generator_writes_exactly_the_generated_modalities():
    folder = data_folder(DataSettings())        # the default cohort (conftest generated it)
    written = {m.name for m in IMAGE_MODALITIES.values() if (folder / m.folder).is_dir()}
    assert written == set(GENERATED_MODALITIES) == {"thermal_map"}
    assert {m.box_table for m in IMAGE_MODALITIES.values() if m.generated} == \
        {p.name for p in folder.glob("bounding_box_*.csv")}


# --------------------------------------------------------------------------- validate and run


@pytest.mark.parametrize("modality", ["depth_map", "depth_rgb", "thermal_rgb"])
def test_validate_refuses_a_modality_the_synthetic_data_lacks(modality, tmp_path):
    path = _params(tmp_path, f"with_{modality}", {"data": {"modalities": ["metadata", modality]},
                                                  "fusion": {"variant": "fixed"}})
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value) == (
        f"{path}: key 'data.modalities': the synthetic dataset has no {modality} images "
        f"({IMAGE_MODALITIES[modality].label}): its generator makes thermal_map only; "
        "available: metadata, thermal_map")


def test_validate_and_run_refuse_it_before_anything_starts(tmp_path, capsys):
    good = _params(tmp_path, "good", {"fusion": {"variant": "fixed"}, "protocol": {"folds": 2}})
    bad = _params(tmp_path, "depth", {"data": {"modalities": ["metadata", "thermal_map", "depth_map"]}})
    validate_line = one_error_line(cli_here(capsys, "validate", bad), bad)
    assert validate_line == (f"fusionlib: error: {bad}: key 'data.modalities': the synthetic "
                             "dataset has no depth_map images (depth-camera depth maps): its "
                             "generator makes thermal_map only; available: metadata, thermal_map")
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    run = cli_here(capsys, "run", good, bad, "--runs-dir", runs, "--cache-dir", cache)
    assert one_error_line(run, bad) == validate_line
    assert not runs.exists() and not cache.exists()


def test_real_synthetic_images_has_only_the_generated_modalities(tmp_path):
    path = _params(tmp_path, "rsi", {"data": {"dataset": "real_synthetic_images",
                                              "modalities": ["metadata", "thermal_rgb"]}})
    with pytest.raises(ParamsError, match=r"key 'data.modalities': the real_synthetic_images "
                                          r"dataset has no thermal_rgb images .*; available: "
                                          r"metadata, thermal_map$"):
        load_params(path)


def test_real_folder_provides_the_modalities_whose_folder_holds_pngs(real_folder, tmp_path,
                                                                       capsys):
    assert DataSettings(dataset="real", data_dir=str(real_folder)).available_modalities() == \
        ["thermal_map", "depth_rgb"]
    ok = _params(tmp_path, "real_two", {"data": {"dataset": "real", "data_dir": str(real_folder),
                                                 "modalities": ["metadata", "thermal_map", "depth_rgb"]}})
    assert load_params(ok).data.modalities == ["metadata", "thermal_map", "depth_rgb"]
    bad = _params(tmp_path, "real_depth", {"data": {"dataset": "real", "data_dir": str(real_folder),
                                                    "modalities": ["metadata", "depth_map"]}})
    line = one_error_line(cli_here(capsys, "validate", bad), bad)
    assert line.endswith(f"key 'data.modalities': the real data folder {real_folder} has no "
                         f"depth_map images (depth-camera depth maps: no PNG files in its "
                         f"Depth_Map_IMG/); available: metadata, thermal_map, depth_rgb")


def test_absent_real_folder_provides_no_image_modality(tmp_path):
    absent = tmp_path / "nowhere"
    path = _params(tmp_path, "absent", {"data": {"dataset": "real", "data_dir": str(absent),
                                                 "modalities": ["metadata", "thermal_map"]}})
    with pytest.raises(ParamsError, match=f"the real data folder {absent} does not exist, so it "
                                          "has no thermal_map images; available: metadata$"):
        load_params(path)
    # The clinical table alone validates as before (the run reports a missing table itself).
    path.write_text(yaml.safe_dump({"data": {"dataset": "real", "data_dir": str(absent),
                                             "modalities": ["metadata"]},
                                    "fusion": {"variant": "fixed"}}))
    assert load_params(path).data.modalities == ["metadata"]


@pytest.mark.parametrize("modalities", [["metadata", "thermal_map", "depth_rgb"], ["metadata"],
                                        ["thermal_map"]])
def test_stage2_needs_metadata_and_exactly_one_image_modality(modalities, real_folder, tmp_path):
    path = _params(tmp_path, "stage2", {"data": {"dataset": "real", "data_dir": str(real_folder),
                                                 "modalities": modalities},
                                        "fusion": {"variant": "fixed"},
                                        "stage2": {"enabled": True}})
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value) == (
        f"{path}: key 'stage2.enabled': Stage 2 needs the metadata branch and exactly one image "
        f"modality, got data.modalities {modalities}; set stage2: {{enabled: false}} or list one "
        "image modality")
    # Without Stage 2 the same modalities are valid.
    path.write_text(path.read_text().replace("enabled: true", "enabled: false"))
    assert load_params(path).data.modalities == modalities


def test_stage2_with_two_image_modalities_is_refused_by_validate(real_folder, tmp_path, capsys):
    path = _params(tmp_path, "stage2_two", {
        "data": {"dataset": "real", "data_dir": str(real_folder),
                 "modalities": ["metadata", "thermal_map", "depth_rgb"]},
        "stage2": {"enabled": True}})
    line = one_error_line(cli_here(capsys, "validate", path), path)
    assert "key 'stage2.enabled'" in line and "exactly one image modality" in line


def test_valid_files_still_pass(tmp_path, capsys):
    stage2 = _params(tmp_path, "stage2_ok", {"stage2": {"enabled": True}})
    images_only = _params(tmp_path, "images_only", {"data": {"modalities": ["thermal_map"]},
                                                    "fusion": {"variant": "fixed"}})
    proc = cli_here(capsys, "validate", stage2, images_only, REPO / "params" / "trainable_100.yaml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok  ") == 3 and proc.stderr == ""
