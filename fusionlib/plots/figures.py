"""What every figure of :mod:`fusionlib.plots` shares:
pyplot-free figures, the colours, and the way out of Python (a base64 PNG, an ``<img>``
with alt text for the report, a notebook display with alt text).
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

# Matplotlib (and IPython's display) are imported inside the functions that draw or show a
# figure: importing fusionlib.report (the command line's `plan`, `report`) stays without them
# until the first figure.

RF_COLOR = "#1f77b4"
IMG_COLOR = "#ff7f0e"


def new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs):
    """A pyplot-free Figure (no global state, never auto-shown twice in notebooks)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def empty_figure(message: str, width: float = 5, height: float = 1.6):
    """A blank figure that says why there is nothing to draw."""
    fig, axes = new_figure(width, height)
    ax = axes[0, 0]
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="0.35",
            transform=ax.transAxes, wrap=True)
    return fig


def finite_values(values) -> np.ndarray:
    """The finite numbers among ``values`` (None counts as missing)."""
    array = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return array[np.isfinite(array)]


# --------------------------------------------------------------------------- output


def to_base64_png(fig, dpi: int = 100) -> str:
    """The figure as a base64 PNG string (for ``<img src="data:image/png;base64,...">``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def show_figure(fig, alt: str, dpi: int = 100) -> None:
    """Display ``fig`` in a notebook with alt text (an ``<img alt=...>``), not a bare PNG.

    The output carries the HTML (what JupyterLab and nbconvert render, so reports
    converted from executed notebooks have no image without a description) and
    the PNG itself (for tools that read ``image/png`` outputs).
    """
    from IPython.display import display

    png = to_base64_png(fig, dpi=dpi)
    display({"text/html": figure_html(fig, alt, png=png), "image/png": png}, raw=True,
            metadata={"image/png": {"alt": alt}})


def figure_html(fig, alt: str, css_class: str = "fl-figure", dpi: int = 100,
                png: str | None = None) -> str:
    """A figure as an ``<img>`` with alt text and an embedded base64 PNG (``png`` when already
    rendered); closes nothing."""
    png = png if png is not None else to_base64_png(fig, dpi=dpi)
    return (f'<figure class="{css_class}"><img alt="{html.escape(alt, quote=True)}" '
            f'src="data:image/png;base64,{png}"/>'
            f'<figcaption>{html.escape(alt)}</figcaption></figure>')
