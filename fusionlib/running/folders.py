"""The runner's folders under ``runs/``: what a finished run left, and the leftovers of
interrupted ones.

- ``runs/<name>/done.json`` (:func:`read_done`) says a run is finished and with which key;
- ``runs/.tmp-<name>-<random>/`` is a run being executed; its ``.owner.json`` names the
  process (pid, host) so :func:`clean_stale` removes it only once that process is gone;
- ``runs/.old-<name>-<random>/`` is a swap interrupted between its two renames
  (:func:`fusionlib._io.swap_into_place`); :func:`clean_stale` puts it back;
- ``runs/.lock-<name>`` is the run's lock file (``fcntl.flock``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from .._io import OLD_PREFIX, atomic_write_text
from ..results.files import DONE_FILE

TMP_PREFIX = ".tmp-"
LOCK_PREFIX = ".lock-"
OWNER_FILE = ".owner.json"
_STALE_FOREIGN_SECONDS = 2 * 24 * 3600


def read_done(run_dir: Path) -> dict | None:
    try:
        done = json.loads((Path(run_dir) / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) else None


def qwk_mean(run_dir: Path):
    """The run's mean QWK from its ``metrics.json``, or None."""
    try:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
        return metrics["summary"]["qwk"]["mean"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_owner(tmp: Path, started: float) -> None:
    """Mark a temporary run folder as this process's (see :func:`clean_stale`)."""
    # Atomic like every file the runner writes: a full disk is an OSError naming the file.
    atomic_write_text(tmp / OWNER_FILE, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                    "started": started}))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(folder: Path) -> bool:
    """A temporary folder whose owner process is gone (or has no owner at all)."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return True
    if owner.get("host") == socket.gethostname():
        return not _pid_alive(int(owner.get("pid", -1)))
    try:
        return time.time() - folder.stat().st_mtime > _STALE_FOREIGN_SECONDS
    except OSError:
        return False


def clean_stale(runs_dir: Path) -> list[str]:
    """Remove the leftovers of interrupted runs; returns what was removed or restored.

    * ``.tmp-*`` folders whose owner process is dead are deleted;
    * ``.old-<name>-*`` folders (a swap interrupted between its two renames) are
      moved back to ``<name>`` when that is missing and they are complete, else deleted.
    """
    actions = []
    if not runs_dir.is_dir():
        return actions
    for folder in sorted(runs_dir.iterdir()):
        if not folder.is_dir():
            continue
        if folder.name.startswith(TMP_PREFIX) and _is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            actions.append(f"removed {folder.name}")
        elif folder.name.startswith(OLD_PREFIX):
            name = folder.name[len(OLD_PREFIX):].rsplit("-", 1)[0]
            target = runs_dir / name
            if not target.exists() and read_done(folder) is not None:
                try:
                    os.rename(folder, target)
                    actions.append(f"restored {name}")
                    continue
                except OSError:
                    pass
            shutil.rmtree(folder, ignore_errors=True)
            actions.append(f"removed {folder.name}")
    return actions
