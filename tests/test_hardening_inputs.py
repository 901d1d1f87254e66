"""Hardening II (issue 20), inputs: a rewritten image with restored size and mtime is no
longer "up to date", odd entries in an image folder are counted as dropped, and a UTF-16
clinical table (Excel's "Unicode text") loads like the UTF-8 one."""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import time

import pandas as pd
import pytest

from fusionlib import datasets
from fusionlib.data import CLINICAL_FILENAME, load_cohort, read_clinical_table
from fusionlib.errors import DataError
from fusionlib.synthetic import generate_cohort

FOLDER = "Thermal_Map_IMG"


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return generate_cohort(tmp_path_factory.mktemp("inputs") / "c", n_patients=8,
                           random_state=3, no_image_fraction=0.0)


@pytest.fixture
def folder(tmp_path, small_folder):
    return shutil.copytree(small_folder, tmp_path / "c")


# --------------------------------------------------- 1. the runner's cheap data fingerprint


def _fingerprint(root):
    return datasets.data_fingerprint(datasets.DataSettings(dataset="real", data_dir=str(root)))


def _rewrite_same_size_and_mtime(path):
    """Other bytes under the same name and size; the old mtime put back (os.utime)."""
    before = path.stat()
    path.write_bytes(bytes(255 - b for b in path.read_bytes()))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_rewritten_image_with_restored_mtime_changes_the_fingerprint(folder):
    """Right after a write (timestamps may not have ticked): the file is hashed."""
    first = _fingerprint(folder)
    assert _fingerprint(folder) == first                  # stable while nothing changes
    _rewrite_same_size_and_mtime(sorted((folder / FOLDER).glob("*.png"))[0])
    assert _fingerprint(folder) != first                  # was: equal, the run "up to date"


def test_rewrite_seen_by_ctime_when_files_are_not_recent(folder, monkeypatch):
    """Files older than the racy window are listed by stat; the ctime catches the rewrite."""
    monkeypatch.setattr(datasets, "_RACY_NS", 0, raising=False)
    first = _fingerprint(folder)
    assert _fingerprint(folder) == first
    time.sleep(0.05)                                      # past the timestamp tick
    _rewrite_same_size_and_mtime(sorted((folder / FOLDER).glob("*.png"))[1])
    assert _fingerprint(folder) != first


def test_image_swapped_in_by_rename_changes_the_fingerprint(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_RACY_NS", 0, raising=False)
    target = sorted((folder / FOLDER).glob("*.png"))[2]
    stat = target.stat()
    swap = tmp_path / "swap.tmp"                          # outside the data folder
    swap.write_bytes(bytes(255 - b for b in target.read_bytes()))
    os.utime(swap, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    time.sleep(0.05)
    first = _fingerprint(folder)
    os.replace(swap, target)                              # rename keeps the swap's stat
    assert _fingerprint(folder) != first


# --------------------------------------------------- 2. odd entries in an image folder


def _valid_name(root):
    """A conventional image name for a case in the table that no file has yet."""
    existing = sorted((root / FOLDER).glob("*.png"))
    name = existing[0].name
    number = max(int(p.name.split("_")[0]) for p in existing) + 1
    return f"{number}_{name.split('_', 1)[1]}"


def _make_dangling(path):
    path.symlink_to(path.parent / "gone.png")


def _make_loop(path):
    path.symlink_to(path.name)                            # x.png -> x.png


def _make_folder(path):
    path.mkdir()


def _make_fifo(path):
    os.mkfifo(path)                                       # opening it would block


@pytest.mark.parametrize("make, kind", [(_make_dangling, "broken_link"), (_make_loop, "broken_link"),
                                        (_make_folder, "not_a_file"), (_make_fifo, "not_a_file")],
                         ids=["dangling-symlink", "symlink-loop", "folder-named-png", "fifo"])
def test_odd_entries_are_counted_as_dropped(folder, small_folder, make, kind, caplog):
    if make is _make_fifo and not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    clean = load_cohort(small_folder)
    name = _valid_name(folder)
    make(folder / FOLDER / name)
    with caplog.at_level(logging.WARNING, logger="fusionlib"):
        cohort = load_cohort(folder)
    assert cohort.meta["dropped_images"] == {"count": 1, "by_reason": {kind: 1}}
    assert cohort.meta["problems"]["examples"][kind] == [f"{FOLDER}/{name}"]
    assert len(cohort.images) == len(clean.images)        # the good images all load
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(lines) == 1 and "1 image dropped" in lines[0]
    with pytest.raises(DataError, match=f"1 data-folder problem .*first: {FOLDER}/{name}"):
        load_cohort(folder, strict=True)


def test_plain_subfolders_and_good_links_are_not_problems(folder, small_folder):
    (folder / FOLDER / "originals").mkdir()               # not named as an image: ignored
    target = sorted((folder / FOLDER).glob("*.png"))[0]
    moved = folder / "elsewhere.png"
    target.rename(moved)
    target.symlink_to(moved)                              # a working link loads as before
    cohort = load_cohort(folder)
    assert cohort.meta["dropped_images"] == {"count": 0, "by_reason": {}}
    assert len(cohort.images) == len(load_cohort(small_folder).images)


# --------------------------------------------------- 3. UTF-16 clinical tables


def _as_tab_separated(text):
    rows = list(csv.reader(io.StringIO(text)))
    out = io.StringIO()
    csv.writer(out, delimiter="\t", lineterminator="\r\n").writerows(rows)
    return out.getvalue()


@pytest.mark.parametrize("encoding, tabs", [("utf-16", True), ("utf-16", False),
                                            ("utf-16-be", True), ("utf-32", False)],
                         ids=["utf16-tabs", "utf16-commas", "utf16be-tabs", "utf32"])
def test_utf16_clinical_table_loads_like_the_utf8_one(folder, small_folder, encoding, tabs):
    source = small_folder / CLINICAL_FILENAME
    reference = read_clinical_table(source)
    text = source.read_text(encoding="utf-8-sig")
    if tabs:                                              # Excel's "Unicode text" export
        text = _as_tab_separated(text)
    target = folder / CLINICAL_FILENAME
    bom = b"\xfe\xff" if encoding == "utf-16-be" else b""   # "utf-16"/"utf-32" write their own
    target.write_bytes(bom + text.encode(encoding))
    assert target.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    table = read_clinical_table(target)                   # was: "binary content"
    pd.testing.assert_frame_equal(table.cases, reference.cases)
    pd.testing.assert_frame_equal(table.features, reference.features)
    cohort = load_cohort(folder)
    assert cohort.fingerprint() == load_cohort(small_folder).fingerprint()


def test_utf16_without_byte_order_mark_says_how_to_convert(tmp_path, small_folder):
    text = (small_folder / CLINICAL_FILENAME).read_text(encoding="utf-8-sig")
    path = tmp_path / "table.csv"
    path.write_bytes(text.encode("utf-16-le"))
    with pytest.raises(DataError) as info:
        read_clinical_table(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "UTF-16" in message and "iconv -f UTF-16LE -t UTF-8" in message
    path.write_bytes(b"\x00" * 600)                       # zeros are not UTF-16 text
    with pytest.raises(DataError, match="binary content"):
        read_clinical_table(path)
    path.write_bytes(b"\xff\xfe" + b"\x00\xd8")           # a lone surrogate after the mark
    with pytest.raises(DataError, match="not UTF-16 text despite its UTF-16 byte-order mark"):
        read_clinical_table(path)
