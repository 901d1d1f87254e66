"""Image reading: crop geometry, aspect-preserving resize with padding, errors, the crop cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from fusionlib.data import load_cohort
from fusionlib.errors import DataError
from fusionlib.images import cohort_image_arrays, crop_bounds, load_image, load_images


def _pattern(width: int, height: int) -> np.ndarray:
    """uint8 (height, width, 3): R encodes x, G encodes y, B constant."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 5, yy * 5, np.full_like(xx, 100)], axis=-1).astype(np.uint8)


@pytest.fixture
def pattern_png(tmp_path):
    array = _pattern(40, 30)
    path = tmp_path / "pattern.png"
    Image.fromarray(array).save(path)
    return path, array


def test_crop_without_margin_gives_the_box_pixels(pattern_png):
    path, array = pattern_png
    out = load_image(path, box=(10, 5, 20, 15), size=10, margin=0.0)
    assert out.dtype == np.float32 and out.shape == (10, 10, 3)
    np.testing.assert_array_equal(out, array[5:15, 10:20].astype(np.float32) / 255.0)


def test_margin_enlarges_the_box_on_each_side(pattern_png):
    path, array = pattern_png
    # 10x10 box, margin 0.2 -> 2 px each side -> a 14x14 crop.
    assert crop_bounds((10, 5, 20, 15), 40, 30, 0.2) == (8, 3, 22, 17)
    out = load_image(path, box=(10, 5, 20, 15), size=14, margin=0.2)
    np.testing.assert_array_equal(out, array[3:17, 8:22].astype(np.float32) / 255.0)


def test_margin_is_clamped_at_the_image_border(pattern_png):
    path, array = pattern_png
    assert crop_bounds((0, 0, 10, 10), 40, 30, 0.5) == (0, 0, 15, 15)
    out = load_image(path, box=(0, 0, 10, 10), size=15, margin=0.5)
    np.testing.assert_array_equal(out, array[0:15, 0:15].astype(np.float32) / 255.0)
    # Bottom-right corner: the crop stops at the image edge (not square any more).
    assert crop_bounds((30, 20, 40, 30), 40, 30, 0.5) == (25, 15, 40, 30)
    out = load_image(path, box=(30, 20, 40, 30), size=15, margin=0.5)
    np.testing.assert_array_equal(out, array[15:30, 25:40].astype(np.float32) / 255.0)


def test_no_box_or_nan_box_uses_the_whole_image(pattern_png):
    path, array = pattern_png
    whole = load_image(path, box=None, size=40, margin=0.15)
    # 40x30 -> longer side already 40: no resize, padded 5 rows top and bottom.
    np.testing.assert_array_equal(whole[5:35], array.astype(np.float32) / 255.0)
    assert not whole[:5].any() and not whole[35:].any()
    nan_box = load_image(path, box=(np.nan, np.nan, np.nan, np.nan), size=40)
    np.testing.assert_array_equal(whole, nan_box)


def test_resize_keeps_aspect_and_pads_centred(tmp_path):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (40, 20), (200, 100, 50)).save(wide)
    out = load_image(wide, size=20)
    assert out.shape == (20, 20, 3)
    colour = np.array([200, 100, 50], dtype=np.float32) / 255.0
    np.testing.assert_allclose(out[5:15], np.broadcast_to(colour, (10, 20, 3)), atol=1e-6)
    assert not out[:5].any() and not out[15:].any()

    tall = tmp_path / "tall.png"
    Image.new("RGB", (10, 30), (255, 255, 255)).save(tall)
    out = load_image(tall, size=12)
    # 10x30 -> 4x12, centred horizontally at columns 4..7.
    np.testing.assert_allclose(out[:, 4:8], 1.0)
    assert not out[:, :4].any() and not out[:, 8:].any()
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_greyscale_and_rgba_become_rgb(tmp_path):
    grey = tmp_path / "grey.png"
    Image.new("L", (8, 8), 128).save(grey)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 8), (10, 20, 30, 40)).save(rgba)
    np.testing.assert_allclose(load_image(grey, size=8), 128 / 255.0)
    np.testing.assert_allclose(load_image(rgba, size=8)[0, 0], np.array([10, 20, 30]) / 255.0)


def test_corrupt_png_is_a_data_error_naming_the_file(tmp_path, pattern_png):
    junk = tmp_path / "12_P001011BTMW.png"
    junk.write_bytes(b"this is not a PNG at all")
    with pytest.raises(DataError, match="not a readable PNG image") as err:
        load_image(junk)
    assert "12_P001011BTMW.png" in str(err.value)

    path, _ = pattern_png
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match="truncated.png.*not a readable PNG image"):
        load_image(truncated)
    with pytest.raises(DataError, match="truncated.png"):
        load_images([path, truncated], [None, None], size=8, margin=0.1)

    with pytest.raises(DataError, match="missing.png.*not found"):
        load_image(tmp_path / "missing.png")


def test_bad_arguments_are_value_errors(pattern_png):
    path, _ = pattern_png
    with pytest.raises(ValueError, match="size"):
        load_image(path, size=0)
    with pytest.raises(ValueError, match="margin"):
        load_image(path, margin=-0.1)
    with pytest.raises(ValueError, match="four numbers"):
        load_image(path, box=(1, 2, 3))
    with pytest.raises(ValueError, match="2 paths but 1 boxes"):
        load_images([path, path], [None], size=8, margin=0.1)


def test_cache_hit_returns_identical_arrays_without_decoding(tmp_path, pattern_png, monkeypatch):
    path, _ = pattern_png
    other = tmp_path / "other.png"
    Image.fromarray(_pattern(40, 30)[::-1].copy()).save(other)
    boxes = np.array([[10, 5, 20, 15], [np.nan] * 4], dtype=float)
    cache = tmp_path / "cache"

    first = load_images([path, other], boxes, size=16, margin=0.15, cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 2
    np.testing.assert_array_equal(first, load_images([path, other], boxes, 16, 0.15))

    def no_decoding(*args, **kwargs):
        raise AssertionError("PIL.Image.open called on a cache hit")

    monkeypatch.setattr(Image, "open", no_decoding)
    second = load_images([path, other], boxes, size=16, margin=0.15, cache_dir=cache)
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32

    # A different box, size or margin is a different key, so it must decode.
    for changed in ({"boxes": np.array([[11, 5, 20, 15], [np.nan] * 4])},
                    {"size": 17}, {"margin": 0.2}):
        kwargs = {"boxes": boxes, "size": 16, "margin": 0.15, **changed}
        with pytest.raises(AssertionError, match="cache hit"):
            load_images([path, other], cache_dir=cache, **kwargs)


def test_cache_notices_a_changed_file(tmp_path, pattern_png):
    path, array = pattern_png
    cache = tmp_path / "cache"
    before = load_images([path], None, size=8, margin=0.0, cache_dir=cache)
    Image.fromarray(255 - array).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000_000))
    after = load_images([path], None, size=8, margin=0.0, cache_dir=cache)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, load_images([path], None, size=8, margin=0.0))


def test_unreadable_cache_file_is_recomputed(tmp_path, pattern_png):
    path, _ = pattern_png
    cache = tmp_path / "cache"
    first = load_images([path], None, size=8, margin=0.0, cache_dir=cache)
    (entry,) = cache.glob("*.npy")
    entry.write_bytes(b"garbage")
    again = load_images([path], None, size=8, margin=0.0, cache_dir=cache)
    np.testing.assert_array_equal(first, again)
    assert np.array_equal(np.load(entry), first[0])


def test_cohort_image_arrays_on_a_generated_cohort(tmp_path):
    from fusionlib.synthetic import generate_cohort

    cohort = load_cohort(generate_cohort(tmp_path / "c", n_patients=8, random_state=3))
    rows = cohort.images_of("thermal_map")
    X, case_index = cohort_image_arrays(cohort, "thermal_map", size=24, margin=0.15,
                                        cache_dir=tmp_path / "cache")
    assert X.shape == (len(rows), 24, 24, 3) and X.dtype == np.float32
    assert 0.0 <= X.min() and X.max() <= 1.0
    assert case_index.dtype.kind == "i" and len(case_index) == len(rows)
    np.testing.assert_array_equal(cohort.cases["case_id"].to_numpy()[case_index],
                                  rows["case_id"].to_numpy())
    assert np.all(np.diff(case_index) >= 0)
    first = rows.iloc[0]
    np.testing.assert_array_equal(
        X[0], load_image(first["path"], first[["xmin", "ymin", "xmax", "ymax"]].to_numpy(float),
                         24, 0.15))
    X2, index2 = cohort_image_arrays(cohort, "thermal_map", size=24, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(case_index, index2)

    empty, none = cohort_image_arrays(cohort, "depth_rgb", size=24)
    assert empty.shape == (0, 24, 24, 3) and none.shape == (0,)
    with pytest.raises(ValueError, match="unknown modality 'thermal'"):
        cohort_image_arrays(cohort, "thermal")
