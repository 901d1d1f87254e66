"""Atomic file writes: readers see the old file or the new one, never half of one.

Every generated file (cohort CSVs and PNGs, crop and branch caches, run results,
HTML reports) goes through :func:`atomic_open`, so an interrupted run never
leaves a truncated file behind; whole folders (a generated cohort, a run's
results) are built aside and put in place by :func:`swap_into_place`. :func:`jsonable` makes
values ready for the JSON files both write (run results, branch-cache info).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None):
    """Open a temporary file beside ``path``; on success it replaces ``path``, on error it goes.

    The result is readable by others (0644): mkstemp's 0600 suits secrets, not results.
    A failing write (a full disk) raises an OSError naming ``path``: a ``write()`` error
    carries no file name of its own.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None and err.errno is not None:
            err.filename = str(path)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


_OS_ERROR_WORDS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
DISK_FULL_ERRNOS = frozenset(_OS_ERROR_WORDS)
"""A write failed because the disk (or the user's quota) is full."""


def os_error_text(err: OSError, path: str | Path | None = None) -> str:
    """One line for a failed file operation: ``<file>: <problem>``, e.g.
    ``runs/x/done.json: no space left on device``.

    ``path`` names the file when the error does not (a failing ``write()`` carries no file
    name). The problem is the system's wording (``strerror``), lower-case for a full disk.
    """
    problem = _OS_ERROR_WORDS.get(err.errno) or err.strerror or str(err) or type(err).__name__
    where = err.filename if err.filename is not None else path
    return " ".join(f"{where}: {problem}".split()) if where is not None else problem


def writable_folder(folder: str | Path, what: str) -> Path:
    """Create ``folder`` if needed and prove it writable; else FusionlibError naming it, one line.

    A real write is tried: root passes ``os.access`` checks even on read-only folders.
    """
    from .errors import FusionlibError

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FusionlibError(f"{what} must be a folder, but this is a file", folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise FusionlibError(f"{what} is not writable: {err.strerror or err}", folder) from None
    return folder


@contextmanager
def file_lock(path: str | Path, blocking: bool = True):
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if needed) for the ``with`` body.

    Yields True once held, or False without waiting when ``blocking`` is False and
    another process holds it. The lock file is removed on release, so nothing is
    left behind; a waiter that then locks the removed file notices (its inode is no
    longer the one at ``path``) and locks the new one instead.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)                        # locked a file its holder has just removed: retry
    try:
        yield True
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)


OLD_PREFIX = ".old-"
"""Name prefix of the folder a swap sets aside: ``.old-<name>-<8 hex>``, beside the target.

Hidden, and recognisable after a crash between the swap's two renames (the runner's
``clean_stale`` moves such a complete folder back when ``<name>`` is missing)."""


def swap_into_place(tmp: str | Path, final: str | Path) -> None:
    """Replace the folder ``final`` by the finished folder ``tmp`` (same parent) with renames.

    Readers see the old folder or the new one, never a mix: the old one is renamed
    aside to ``.old-<name>-<hex>``, ``tmp`` is renamed to ``final``, then the old one
    is deleted. If the second rename fails, the old folder is renamed back and the
    error raised, so a failed swap leaves ``final`` as it was (unless another process
    put a folder there meanwhile; then its folder stays and ours is dropped).
    ``tmp`` is made readable by others first (``mkdtemp`` creates it 0700; results
    and cohorts are meant to be shared), keeping any further permission bits.
    """
    tmp, final = Path(tmp), Path(final)
    os.chmod(tmp, os.stat(tmp).st_mode & 0o7777 | 0o755)
    old = None
    if final.exists():
        old = final.parent / f"{OLD_PREFIX}{final.name}-{secrets.token_hex(4)}"
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            try:
                os.rename(old, final)
            except OSError:
                shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(final: str | Path):
    """A fresh temporary folder beside ``final`` to fill; when the block ends without error it
    replaces ``final`` (:func:`swap_into_place`), otherwise it is removed and ``final`` stays."""
    final = Path(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
        swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- notes

NOTES_ENV = "FUSIONLIB_NOTES_FILE"
"""Environment variable naming a file that :func:`note` appends its lines to: ``fusionlib run``
sets it for each run's kernel (:mod:`fusionlib.running.runner`) and prints the lines on its screen."""

_collectors: list[list[str]] = []


def note(text: str) -> None:
    """Record one line the user of ``fusionlib run`` should see (e.g. a cache entry that was
    unreadable and recomputed); the caller logs it as well, which only the notebook shows.

    The line goes to every :func:`collected_notes` list open in this process, and is appended to
    the file named by ``$FUSIONLIB_NOTES_FILE`` when set. That file is the runner's sidecar, read
    once the kernel is done: one ``write`` of one line in append mode (lines of concurrent
    writers never mix), and a failing write is dropped (the log has the line already).
    """
    line = " ".join(str(text).split())
    for notes in list(_collectors):
        notes.append(line)
    target = os.environ.get(NOTES_ENV)
    if not target:
        return
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
        finally:
            os.close(fd)
    except OSError:
        pass


@contextmanager
def collected_notes():
    """The lines :func:`note` records in this process while the block runs (a list)."""
    notes: list[str] = []
    _collectors.append(notes)
    try:
        yield notes
    finally:
        _collectors.remove(notes)


def read_notes(path: str | Path) -> list[str]:
    """The lines a run's notes file holds (none when it is missing or unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()]


def jsonable(value):
    """``value`` ready for ``json.dumps`` (run results, branch-cache info): numpy scalars and
    arrays as Python numbers and lists, paths as text, non-finite floats as None (JSON has no
    NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, Path):
        return str(value)
    return value
