"""fusionlib._io.swap_into_place: the one folder swap used by the generator and the runner."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from fusionlib import _io
from fusionlib._io import OLD_PREFIX, swap_into_place


def _folder(path, text):
    path.mkdir()
    (path / "f.txt").write_text(text)
    return path


def test_swap_into_an_absent_target(tmp_path):
    tmp = _folder(tmp_path / ".tmp-a", "new")
    swap_into_place(tmp, tmp_path / "a")
    assert (tmp_path / "a" / "f.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_swap_replaces_the_old_folder_and_leaves_nothing_behind(tmp_path):
    _folder(tmp_path / "a", "old")
    swap_into_place(_folder(tmp_path / ".tmp-a", "new"), tmp_path / "a")
    assert (tmp_path / "a" / "f.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_swapped_folder_is_readable_by_others(tmp_path):
    tmp = tempfile.mkdtemp(dir=tmp_path)           # 0700, as mkdtemp makes it
    os.chmod(tmp, 0o770)                           # extra bits are kept
    swap_into_place(tmp, tmp_path / "a")
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o775


def test_a_failed_swap_keeps_the_old_folder(tmp_path, monkeypatch):
    _folder(tmp_path / "a", "old")
    tmp = _folder(tmp_path / ".tmp-a", "new")
    real = os.rename

    def failing(src, dst):
        if str(src) == str(tmp):
            raise OSError("disk gone")
        return real(src, dst)

    monkeypatch.setattr(_io.os, "rename", failing)
    with pytest.raises(OSError, match="disk gone"):
        swap_into_place(tmp, tmp_path / "a")
    assert (tmp_path / "a" / "f.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-a", "a"]   # the caller drops tmp


def test_the_set_aside_name_is_one_the_runner_restores(tmp_path, monkeypatch):
    """A crash between the two renames leaves ``.old-<name>-<hex>``: runner.clean_stale puts it back."""
    from fusionlib.running import runner

    runs = tmp_path / "runs"
    runs.mkdir()
    _folder(runs / "r", "old")
    new = _folder(runs / ".tmp-r-1", "new")
    (new / runner.DONE_FILE).write_text('{"status": "ok"}')   # a complete run, as the runner swaps
    renames = []
    real = os.rename
    monkeypatch.setattr(_io.os, "rename", lambda src, dst: (renames.append(Path(dst)), real(src, dst)))
    swap_into_place(new, runs / "r")
    aside = renames[0]
    assert aside.parent == runs and aside.name.startswith(f"{OLD_PREFIX}r-")
    assert runner.OLD_PREFIX == OLD_PREFIX
    # A crash between the renames leaves a complete folder set aside and none in place.
    os.rename(runs / "r", aside)
    assert runner.clean_stale(runs) == ["restored r"]
    assert (runs / "r" / "f.txt").read_text() == "new"


def test_staged_folder_replaces_on_success_and_leaves_the_old_folder_on_failure(tmp_path):
    from fusionlib._io import staged_folder

    final = tmp_path / "cohort"
    final.mkdir()
    (final / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(final) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("writer failed")
    assert (final / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]   # no temporary folder left
    with staged_folder(final) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (final / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]
