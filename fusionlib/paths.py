"""Where the source checkout is, for relative paths that mean the same from everywhere.

A small module of its own so the experiment notebook needs nothing from the runner.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def project_root() -> Path:
    """The source checkout holding ``fusionlib/`` (editable install), else the current folder.

    The experiment notebook changes into this folder first, so relative paths in
    parameters (``cache_dir``, ``output_dir``, ``data.data_dir``) mean the same thing
    whether it runs from ``fusionlib run`` (cwd = repo root), from papermill in any
    folder, or in JupyterLab (cwd = notebooks/).
    """
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "fusionlib").is_dir():
        return REPO_ROOT
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "notebooks" / "experiment.ipynb").is_file():
            return folder
    return Path.cwd()
