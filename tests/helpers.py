"""Small shared test helpers (imported by test modules; not a test module itself)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLI_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}


def cli(*args, timeout=120, preexec_fn=None):
    """``python -m fusionlib ...`` from this checkout (so the fusionlib under test runs)."""
    return subprocess.run([sys.executable, "-m", "fusionlib", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=CLI_ENV, timeout=timeout, preexec_fn=preexec_fn)


def cli_here(capsys, *args):
    """``fusionlib ...`` in this process: :func:`fusionlib.cli.main`, what the console script and
    ``python -m fusionlib`` call, with its exit status and what it printed, as :func:`cli` gives
    them (without the seconds of a new interpreter's imports). Tests of a command's messages use
    it; each command keeps a real ``python -m fusionlib`` test too (:func:`cli`)."""
    from fusionlib._imports import SLOW_OPTIONAL_MODULES
    from fusionlib.cli import main

    blocked = [name for name in SLOW_OPTIONAL_MODULES if name not in sys.modules]
    capsys.readouterr()                                 # drop what the test printed before
    try:
        returncode = main([str(a) for a in args])
    finally:
        for name in blocked:        # main() blocks these for its process: not for the tests'
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["fusionlib", *map(str, args)], returncode, out, err)


def one_error_line(proc, path) -> str:
    """The command's one stderr line about ``path`` (exit 2, no traceback, nothing on stdout)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"fusionlib: error: {path}: "), lines[0]
    assert proc.stdout == ""
    return lines[0]


def random_probabilities(rng, y, strength):
    """Class probabilities whose true-class logit is raised by ``strength`` over N(0, 1) noise."""
    logits = rng.normal(0, 1, (len(y), 3))
    logits[np.arange(len(y)), y] += strength
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)
