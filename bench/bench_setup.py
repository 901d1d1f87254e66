"""Set-up time: the lock installed by pip and by uv, each into a new virtual environment from
an empty package cache, in one run.

Usage::

    .venv/bin/python bench/bench_setup.py [--keep DIR]

For each installer, in turn: ``python3 -m venv`` a new environment, then install
``requirements.lock`` and the project itself (editable, ``--no-deps``), as ``make setup`` does:

* pip: ``pip install --no-cache-dir -r requirements.lock`` (pip's configuration as the machine
  has it: its indexes, find-links and constraints apply);
* uv: first uv itself (``pip install uv==<Makefile's UV_VERSION>`` into a new venv, no pip
  cache), then ``uv pip install --compile-bytecode -r requirements.lock`` (as ``make setup``:
  pip writes the bytecode at install too) with ``UV_CACHE_DIR`` set to a new empty folder.

Prints the seconds of each (venv creation included) and the ratio uv / pip, with and
without uv's own installation (a fresh clone pays it once). Both download
from the same places where the machine's configuration allows, so the ratio is about the
installer, not the network; still, it moves with the network's speed: run it twice.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _timed(commands: list[list[str]], env: dict) -> float:
    started = time.perf_counter()
    for command in commands:
        # pip's warnings about the machine's configured indexes would bury the figures: shown
        # only when a step fails.
        done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def pip_setup(work: Path) -> float:
    venv = work / "venv-pip"
    py = str(venv / "bin" / "python")
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1"}
    return _timed([["python3", "-m", "venv", str(venv)],
                   [py, "-m", "pip", "install", "--quiet", "--no-cache-dir", "-r", "requirements.lock"],
                   [py, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--no-deps", "-e", "."]],
                  env)


def uv_setup(work: Path, uv_version: str) -> tuple[float, float]:
    """(seconds to install uv itself, seconds to install the lock with it), as `make setup` on
    a fresh clone: uv from PyPI at the pinned version into its own venv, then the lock."""
    tool = work / "venv-uvtool"
    bootstrap = _timed([["python3", "-m", "venv", str(tool)],
                        [str(tool / "bin" / "python"), "-m", "pip", "install", "--quiet",
                         "--no-cache-dir", f"uv=={uv_version}"]],
                       {**os.environ, "PIP_NO_CACHE_DIR": "1"})
    uv = str(tool / "bin" / "uv")
    venv = work / "venv-uv"
    py = str(venv / "bin" / "python")
    cache = work / "uv-cache"
    cache.mkdir()
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_LINK_MODE": "copy"}
    return bootstrap, _timed([["python3", "-m", "venv", str(venv)],
                              [uv, "pip", "install", "--quiet", "--compile-bytecode",
                               "--python", py, "-r", "requirements.lock"],
                              [uv, "pip", "install", "--quiet", "--python", py, "--no-deps",
                               "-e", "."]], env)


def makefile_uv_version() -> str:
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith("UV_VERSION"):
            return line.split("=")[-1].strip()
    raise SystemExit("Makefile: no UV_VERSION line")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temp folder)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-setup-"))
    work.mkdir(parents=True, exist_ok=True)
    uv_version = makefile_uv_version()
    try:
        pip_s = pip_setup(work)
        print(f"pip: {pip_s:6.1f} s  (venv + lock + project)", flush=True)
        boot_s, uv_s = uv_setup(work, uv_version)
        print(f"uv:  {boot_s + uv_s:6.1f} s  (uv {uv_version} itself {boot_s:.1f} s, "
              f"venv + lock + project {uv_s:.1f} s)", flush=True)
        print(f"uv / pip: {(boot_s + uv_s) / pip_s:.2f} with uv's own install, "
              f"{uv_s / pip_s:.2f} without")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
