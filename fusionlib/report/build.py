"""Writing the report: :func:`build_report` / :func:`write_report`.

``index.html`` is :mod:`.page`'s sections rendered in this process (one self-contained page:
images embedded as base64 PNG, no script, nothing fetched from the network); one page per run
is converted from its ``executed.ipynb`` (nbconvert, code hidden) in a second process
meanwhile. This module builds on :mod:`.page`, which builds on :mod:`.html`.
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .._io import atomic_write_text, writable_folder
from ..errors import FusionlibError
from ..results import load_runs
from .conclusions import DEFAULT_SETTINGS
from .page import render_page, report_content

logger = logging.getLogger("fusionlib")


# --------------------------------------------------------------------------- building


_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
"""


def html_exporter():
    """nbconvert's lab HTML exporter with code and prompts hidden and no network scripts
    (require.js, MathJax, Mermaid and widget loaders are left out; images stay embedded)."""
    import jinja2
    from nbconvert import HTMLExporter

    # embed_images stays off: the notebooks' figures are base64 already, and the embedding
    # pass re-parses the whole page with BeautifulSoup (most of a conversion's time).
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=False,
                            extra_loaders=[jinja2.DictLoader({"fusionlib_report.html.j2": _TEMPLATE})])
    exporter.template_file = "fusionlib_report.html.j2"
    return exporter


def notebook_to_html(notebook, title: str | None = None, exporter=None) -> str:
    """An executed notebook (path or NotebookNode) as self-contained HTML, code hidden
    (``exporter``: one :func:`html_exporter` to reuse across notebooks)."""
    import nbformat

    if not hasattr(notebook, "cells"):
        notebook = nbformat.read(str(notebook), as_version=4)
    resources = {"metadata": {"name": title or notebook.metadata.get("title", "report")}}
    body, _ = (exporter or html_exporter()).from_notebook_node(notebook, resources=resources)
    return body


@dataclass
class BuiltReport:
    """What :func:`write_report` wrote: the page's ``path`` and the ``answers`` in words (the
    same sentences as the page's first screen)."""

    path: Path
    answers: list[str]


def build_report(runs_dir: str | Path = "runs", out_dir: str | Path = "reports",
                 n_boot: int = 2000, settings=None) -> Path:
    """Write ``out_dir/index.html`` over the finished runs in ``runs_dir`` and return its path
    (:func:`write_report`)."""
    return write_report(runs_dir, out_dir, n_boot, settings).path


def write_report(runs_dir: str | Path = "runs", out_dir: str | Path = "reports",
                 n_boot: int = 2000, settings=None) -> BuiltReport:
    """Write ``out_dir/index.html`` (:mod:`.page`'s sections over the finished runs in
    ``runs_dir``) and ``out_dir/runs/<name>.html`` for every run with an ``executed.ipynb``.

    Every file is written atomically, so an earlier report stays whole until the new one
    replaces it. Raises :class:`FusionlibError` when there is no finished run or the output
    folder cannot be written (one line naming it)."""
    runs_dir = Path(runs_dir).resolve()
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():      # before any work or warning
        writable_folder(out_dir, "the report output folder (--out)")
    left_out: list = []
    runs = load_runs(runs_dir, left_out=left_out)
    if not runs:
        raise FusionlibError(f"no finished runs in {runs_dir}; run `fusionlib run params/*.yaml` first")
    try:
        return _build(runs, left_out, runs_dir, out_dir, n_boot, settings or DEFAULT_SETTINGS)
    except OSError as err:
        # A read-only or full output folder: one line naming the path; earlier files stay
        # (every write is atomic).
        if err.errno not in _WRITE_ERRNOS:
            raise
        raise FusionlibError(f"cannot write the report here: {err.strerror}",
                             err.filename or out_dir) from None


_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                 errno.EEXIST}


def write_run_pages(jobs: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """Convert each ``(executed notebook, title, page path)`` and write the page atomically;
    returns the notebooks that could not be converted, with the reason (a broken notebook must
    not block the whole report). A write error (read-only or full folder) is raised."""
    exporter, failed = None, []
    for notebook, title, page in jobs:
        try:
            exporter = exporter or html_exporter()
            text = notebook_to_html(notebook, title=title, exporter=exporter)
        except Exception as err:
            failed.append((notebook, f"{type(err).__name__}: {err}"))
            continue
        atomic_write_text(Path(page), text)
    return failed


def _start_run_pages(jobs):
    """The run pages converted in a second process while this one computes the statistics
    (nbconvert parses every page with BeautifulSoup: seconds for a sweep). Returns a callable
    that waits for them; where no process can be started, they are converted here."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if not jobs:
        return lambda: []
    try:
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        future = pool.submit(write_run_pages, jobs)
    except (OSError, NotImplementedError, RuntimeError) as err:
        logger.debug("run pages converted in this process: %s", err)
        return lambda: write_run_pages(jobs)

    def wait():
        try:
            return future.result()
        finally:
            pool.shutdown(cancel_futures=True)
    return wait


_WORK_FOLDER = re.compile(r"\.report-[a-z0-9_]{8}")
"""``tempfile.mkdtemp(prefix=".report-")``'s names: the work folders that reports made in the
output folder before the page was built in memory; an interrupted one stayed behind."""
_EMPTY_GRACE_SECONDS = 600
_FULL_GRACE_SECONDS = 24 * 3600


def _remove_stale_work_folders(out_dir: Path) -> list[str]:
    """Remove the ``.report-*`` work folders interrupted reports left in ``out_dir``; returns
    their names.

    A report still running (an older fusionlib's) could own one, and nothing in the folder
    names its process, so only leftovers are removed: a folder that is empty and was created
    (or last changed) over 10 minutes ago, since such a report fills its folder right after
    creating it; or one whose files were all last changed over a day ago, since a running report
    keeps writing. Anything else, and anything not named like such a folder, is kept.
    """
    removed = []
    now = time.time()
    try:
        candidates = [p for p in out_dir.iterdir() if _WORK_FOLDER.fullmatch(p.name)]
    except OSError:
        return removed
    for folder in candidates:
        try:
            if folder.is_symlink() or not folder.is_dir():
                continue
            entries = list(folder.rglob("*"))
            newest = max([folder.lstat().st_mtime, *(p.lstat().st_mtime for p in entries)])
            if not entries and now - newest > _EMPTY_GRACE_SECONDS:
                folder.rmdir()
            elif entries and now - newest > _FULL_GRACE_SECONDS:
                shutil.rmtree(folder)
            else:
                continue
        except OSError as err:          # gone meanwhile, or not ours to remove: leave it
            logger.debug("kept %s: %s", folder, err)
            continue
        logger.info("removed %s, left by an interrupted report", folder)
        removed.append(folder.name)
    return removed


def _build(runs, left_out, runs_dir: Path, out_dir: Path, n_boot: int, settings) -> BuiltReport:
    writable_folder(out_dir, "the report output folder (--out)")
    _remove_stale_work_folders(out_dir)
    jobs = [(str(run.executed_notebook), f"run {run.name}", str(out_dir / "runs" / f"{run.name}.html"))
            for run in runs if run.executed_notebook.is_file()]
    pages = _start_run_pages(jobs)
    try:
        content = report_content(runs, left_out, runs_dir, n_boot, settings)
    finally:
        # Run pages before index.html, so the index never links to a page not there yet.
        failed = pages()
    for notebook, reason in failed:
        logger.warning("could not convert %s: %s", notebook, reason)
    index = out_dir / "index.html"
    atomic_write_text(index, render_page(content))
    # Left by the notebook-based report of earlier versions.
    (out_dir / "report-failed.ipynb").unlink(missing_ok=True)
    return BuiltReport(index, content.answers)
