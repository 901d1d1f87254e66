"""The report as a reader sees it: measured in headless Chromium at a given window size.

:func:`measure` loads a copy of a report page with a small measuring script in Debian's
``chromium`` (``--dump-dom``), and returns what the page itself reports: the window's size, the
page's scroll width, the bottom edge of the answers and of the verdict figure, and, with every
``<details>`` opened, the page's scroll width and the widest overflow of any table. Used by the
browser test and by ``python -m fusionlib.report.browser reports/index.html``.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]

_PROBE = """
<script>
window.addEventListener("load", function () {
  function bottom(sel) {
    var el = document.querySelector(sel);
    return el ? el.getBoundingClientRect().bottom + window.scrollY : -1;
  }
  function overflow() {
    var worst = 0, where = "";
    document.querySelectorAll(".fl-table-wrap, .fl-heatmaps, figure, main").forEach(function (el) {
      var extra = el.scrollWidth - el.clientWidth;
      if (extra > worst) {
        worst = extra;
        var t = el.querySelector("table");
        where = (t && t.id) || el.id || el.className;
      }
    });
    return [worst, where];
  }
  var out = {
    window_width: window.innerWidth, window_height: window.innerHeight,
    scroll_width: document.scrollingElement.scrollWidth,
    answers_bottom: bottom("#verdict-answers"), figure_bottom: bottom(".fl-verdict-figure"),
    verdict_table_top: document.getElementById("verdict-table") ?
      document.getElementById("verdict-table").getBoundingClientRect().top + window.scrollY : -1,
    nav_links: document.querySelectorAll("#report-nav a").length,
    images: document.images.length,
    broken_images: Array.prototype.filter.call(document.images, function (i) {
      return !(i.complete && i.naturalWidth > 0); }).length
  };
  var closed = overflow();
  out.table_overflow_closed = closed[0];
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  out.details = document.querySelectorAll("details").length;
  out.scroll_width_open = document.scrollingElement.scrollWidth;
  var opened = overflow();
  out.table_overflow_open = opened[0];
  out.widest = opened[1];
  var pre = document.createElement("pre");
  pre.id = "fl-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, None when there is none."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def run_probe(page: str | Path, script: str, width: int = 1280, height: int = 800,
              chromium: str | None = None, timeout: float = 120) -> dict:
    """Load a copy of ``page`` with ``script`` added before ``</body>`` (written next to it, so
    that relative links resolve) at ``width`` x ``height`` in headless Chromium and return the
    JSON the script leaves in a ``<pre id="fl-probe">``. Raises RuntimeError without Chromium
    or without that output."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("chromium not installed (Debian: apt-get install chromium)")
    page = Path(page).resolve()
    text = page.read_text(encoding="utf-8")
    probe = page.parent / f".probe-{page.name}"
    probe.write_text(text.replace("</body>", script + "</body>", 1), encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory(prefix="fl-chromium-") as profile:
            result = subprocess.run(
                [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                 "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                capture_output=True, text=True, timeout=timeout)
    finally:
        probe.unlink(missing_ok=True)
    match = re.search(r'<pre id="fl-probe">(.*?)</pre>', result.stdout, re.S)
    if not match:
        raise RuntimeError(f"no measurement from chromium; stderr: {result.stderr[-1500:]}")
    return json.loads(html.unescape(match.group(1)))


def measure(page: str | Path, width: int = 1280, height: int = 800,
            chromium: str | None = None, timeout: float = 120) -> dict:
    """The page's own measurements at ``width`` x ``height`` (the module docstring lists
    them), by :func:`run_probe`."""
    return run_probe(page, _PROBE, width, height, chromium, timeout)


def screenshot(page: str | Path, out: str | Path, width: int = 1280, height: int = 800,
               chromium: str | None = None, timeout: float = 120) -> Path:
    """A PNG of the first ``height`` pixels of ``page`` at ``width``."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("chromium not installed (Debian: apt-get install chromium)")
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="fl-chromium-") as profile:
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}",
                        f"--window-size={width},{height}", f"--screenshot={out}",
                        Path(page).resolve().as_uri()],
                       capture_output=True, text=True, timeout=timeout)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {page}")
    return out


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fusionlib.report.browser",
                                     description="measure a report page in headless Chromium")
    parser.add_argument("page", nargs="?", default="reports/index.html")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args(argv)
    try:
        figures = measure(args.page, args.width, args.height)
    except (RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for key, value in figures.items():
        print(f"{key}: {value}")
    ok = (figures["scroll_width"] <= args.width and figures["scroll_width_open"] <= args.width
          and figures["table_overflow_open"] <= 1 and 0 <= figures["answers_bottom"] <= args.height)
    print("fits the first screen, no horizontal overflow" if ok else "DOES NOT FIT")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
