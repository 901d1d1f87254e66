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
