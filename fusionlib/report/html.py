"""The report as HTML: tables and figures as HTML, the banners, and the page built with nbconvert.

:func:`build_report` executes ``notebooks/report.ipynb`` with papermill and converts it to
one self-contained HTML page (code hidden, images embedded as base64 PNG, no script or
stylesheet fetched from the network), plus one page per run from its ``executed.ipynb``.
"""

from __future__ import annotations

import errno
import html
import logging
import tempfile
from pathlib import Path

import pandas as pd

from .._io import atomic_write_text, writable_folder
from ..errors import FusionlibError
from ..figures import figure_html  # noqa: F401 - fusionlib.report.figure_html
from ..results import Run, load_runs
from .tables import fmt

logger = logging.getLogger("fusionlib")

REPORT_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "report.ipynb"


def _never_trained_folds(run: Run) -> int:
    """Folds whose fusion head kept its start weights (0 for runs made before it was counted)."""
    try:
        return int(run.summary.get("head_never_trained_folds") or 0)
    except (TypeError, ValueError):
        return 0


# --------------------------------------------------------------------------- HTML helpers


def html_table(frame: pd.DataFrame, table_id: str, caption: str | None = None,
               float_digits: int = 3) -> str:
    """A DataFrame as an HTML table with a stable ``id`` (for browsers and tests) and caption."""
    formatters = {c: (lambda v, d=float_digits: fmt(v, d)) for c in frame.columns
                  if pd.api.types.is_float_dtype(frame[c])}
    text = frame.to_html(table_id=table_id, index=False, border=0, classes="fl-table",
                         formatters=formatters, na_rep="–", escape=True)
    if caption:
        text = text.replace("<thead>", f"<caption>{html.escape(caption)}</caption>\n  <thead>", 1)
    # Text columns read left-aligned, numbers right-aligned.
    text_columns = [i + 1 for i, c in enumerate(frame.columns)
                    if not pd.api.types.is_numeric_dtype(frame[c])
                    and not frame[c].astype(str).str.match(r"^[\s\d.,+\-–±\[\]%]*$").all()]
    rules = "".join(f"#{table_id} td:nth-child({i}), #{table_id} th:nth-child({i}) "
                    f"{{text-align: left;}}" for i in text_columns)
    style = f"<style>{rules}</style>" if rules else ""
    return f'{style}<div class="fl-table-wrap">{text}</div>'


REPORT_CSS = """
<style>
.fl-table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1.2em 0; }
.fl-table caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0; }
.fl-table th, .fl-table td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; }
.fl-table th { background: #f3f5f8; }
.fl-table td { white-space: nowrap; }
.fl-table-wrap { overflow-x: auto; max-width: 100%; }
.fl-table td:first-child, .fl-table th:first-child { text-align: left; }
.fl-figure { margin: 0.4em 0 1.2em 0; }
.fl-figure img { max-width: 100%; height: auto; }
.fl-figure figcaption { font-size: 11px; color: #666; }
.fl-banner { background: #fff4d6; border: 1px solid #e0b400; padding: 8px 12px; margin: 8px 0;
             border-radius: 4px; }
.fl-synthetic { background: #ffe08a; padding: 0 4px; border-radius: 3px; font-weight: 600; }
.fl-note { color: #555; font-size: 12px; }
</style>
"""


def synthetic_banner(runs: list[Run]) -> str:
    """A warning box naming the runs whose data is synthetic ('' when none is)."""
    synthetic = [r for r in runs if r.synthetic]
    if not synthetic:
        return ""
    names = sorted({r.data_name for r in synthetic})
    return (f'<div class="fl-banner" id="synthetic-banner"><strong>SYNTHETIC DATA.</strong> '
            f"{len(synthetic)} of {len(runs)} runs use synthetic data "
            f"({html.escape(', '.join(names))}), not real patients: their numbers test the "
            f"pipeline and say nothing about real wound healing.</div>")


def head_warning_banner(runs: list[Run]) -> str:
    """A warning box naming the runs with folds whose fusion head never left its start ('' if none).

    Such a fold's "trainable" result is the initial head, not a learned one.
    """
    items = [f"<li><strong>{html.escape(r.name)}</strong>: fusion head never trained in "
             f"{_never_trained_folds(r)} of {r.summary.get('n_folds', '?')} folds</li>"
             for r in runs if _never_trained_folds(r) > 0]
    if not items:
        return ""
    return ('<div class="fl-banner" id="head-never-trained-banner"><strong>WARNING: fusion head '
            "never trained.</strong> In these runs some folds kept the head's starting weights, so "
            "their scores are not those of a learned fusion:<ul>" + "".join(items) + "</ul></div>")


def left_out_html(left_out: list) -> str:
    """The run folders :func:`load_runs` left out, with the reason ('' when none was)."""
    if not left_out:
        return ""
    items = "".join(f"<li><code>{html.escape(str(name))}</code>: {html.escape(str(reason))}</li>"
                    for name, reason in left_out)
    return (f'<div class="fl-banner" id="left-out-runs"><strong>Runs left out ({len(left_out)}).'
            f"</strong> These folders are not in the tables below:<ul>{items}</ul></div>")


def run_links(runs: list[Run], prefix: str = "runs/") -> str:
    """Links to the per-run pages (only runs with an executed notebook)."""
    items = [f'<li><a href="{html.escape(prefix + r.name)}.html">{html.escape(r.name)}</a>'
             f"{' <span class=fl-synthetic>synthetic</span>' if r.synthetic else ''}</li>"
             for r in runs if r.executed_notebook.is_file()]
    if not items:
        return '<p class="fl-note">No per-run notebooks (executed.ipynb) found.</p>'
    return '<p>Per-run notebooks (code hidden):</p><ul id="run-links">' + "".join(items) + "</ul>"


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

    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True,
                            extra_loaders=[jinja2.DictLoader({"fusionlib_report.html.j2": _TEMPLATE})])
    exporter.template_file = "fusionlib_report.html.j2"
    return exporter


def notebook_to_html(notebook, title: str | None = None, strip_stderr: bool = False) -> str:
    """An executed notebook (path or NotebookNode) as self-contained HTML, code hidden
    (``strip_stderr`` also drops warnings and log lines written to stderr)."""
    import nbformat

    if not hasattr(notebook, "cells"):
        notebook = nbformat.read(str(notebook), as_version=4)
    for cell in notebook.cells:
        if strip_stderr and cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", [])
                               if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    resources = {"metadata": {"name": title or notebook.metadata.get("title", "report")}}
    body, _ = html_exporter().from_notebook_node(notebook, resources=resources)
    return body


def build_report(runs_dir: str | Path = "runs", out_dir: str | Path = "reports",
                 notebook: str | Path | None = None, kernel_name: str | None = None,
                 n_boot: int = 2000, settings=None) -> Path:
    """Execute the report notebook over ``runs_dir`` and write ``out_dir/index.html``.

    Also writes ``out_dir/runs/<name>.html`` for every run with an
    ``executed.ipynb``. Every file is written atomically. Returns the path of
    ``index.html``. Raises :class:`FusionlibError` when there is no finished run
    or the notebook fails (its partly executed copy is kept next to the report).
    """
    runs_dir = Path(runs_dir).resolve()
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():      # before any work or warning
        writable_folder(out_dir, "the report output folder (--out)")
    runs = load_runs(runs_dir)
    if not runs:
        raise FusionlibError(f"no finished runs in {runs_dir}; run `fusionlib run params/*.yaml` first")
    notebook = Path(notebook) if notebook is not None else REPORT_NOTEBOOK
    if not notebook.is_file():
        raise FusionlibError(f"report notebook not found: {notebook}")
    try:
        return _build(runs, runs_dir, out_dir, notebook, kernel_name, n_boot, settings)
    except OSError as err:
        # A read-only or full output folder: one line naming the path; earlier files stay
        # (every write is atomic).
        if err.errno not in _WRITE_ERRNOS:
            raise
        raise FusionlibError(f"cannot write the report here: {err.strerror}",
                             err.filename or out_dir) from None


_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                 errno.EEXIST}


def _build(runs, runs_dir: Path, out_dir: Path, notebook: Path, kernel_name, n_boot,
           settings=None) -> Path:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from ..runner import QUIET_KERNEL_ARGS

    writable_folder(out_dir, "the report output folder (--out)")

    # Per-run pages first, so index.html never links to a page that is not there yet.
    for run in runs:
        if run.executed_notebook.is_file():
            try:
                page = notebook_to_html(run.executed_notebook, title=f"run {run.name}")
            except Exception as err:  # a broken notebook must not block the whole report
                logger.warning("could not convert %s: %s", run.executed_notebook, err)
                continue
            atomic_write_text(out_dir / "runs" / f"{run.name}.html", page)

    with tempfile.TemporaryDirectory(prefix=".report-", dir=out_dir) as tmp:
        executed = Path(tmp) / "report.ipynb"
        from ..runner import quiet_kernel_channel_races

        quiet_kernel_channel_races()
        try:
            papermill.execute_notebook(
                str(notebook), str(executed),
                parameters={"runs_dir": str(runs_dir), "n_boot": int(n_boot),
                            **({"qwk_margin": settings.qwk_margin,
                                "log_loss_margin": settings.log_loss_margin} if settings else {})},
                kernel_name=kernel_name, cwd=str(notebook.parent), progress_bar=False,
                log_output=False, request_save_on_cell_execute=False,
                extra_arguments=QUIET_KERNEL_ARGS)
        except PapermillExecutionError as err:
            kept = out_dir / "report-failed.ipynb"
            if executed.is_file():
                atomic_write_text(kept, executed.read_text(encoding="utf-8"))
            raise FusionlibError(f"report notebook failed in cell {err.exec_count}: {err.ename}: "
                                 f"{err.evalue} (executed copy: {kept})") from err
        page = notebook_to_html(executed, title="fusionlib report", strip_stderr=True)
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    (out_dir / "report-failed.ipynb").unlink(missing_ok=True)
    return index
