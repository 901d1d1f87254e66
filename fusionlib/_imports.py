"""Process settings for fusionlib's own processes (the command line and its worker pool).

:func:`skip_slow_optional_imports` and :func:`quick_exit` are called there, never on ``import
fusionlib``: a library must not change what a user's own session can import, nor how it ends.
"""

from __future__ import annotations

import atexit
import gc
import sys

SLOW_OPTIONAL_MODULES = ("rfc3987_syntax",)
"""Optional dependencies of our dependencies that cost seconds to import and are never used
here. ``rfc3987_syntax`` (installed through jupyter-events' ``jsonschema[format-nongpl]``)
builds a Lark grammar on import, 2.5 s of every process that imports nbformat (papermill,
nbconvert); jsonschema imports it only to check the ``iri`` string formats, which the notebook
schema does not use (docs/benchmarks.md, "Sweep")."""


def skip_slow_optional_imports() -> None:
    """Make the modules of :data:`SLOW_OPTIONAL_MODULES` unimportable in this process, so a
    library that tries them (inside ``try: import ... except ImportError``) goes on without.
    A module already imported is left alone."""
    for name in SLOW_OPTIONAL_MODULES:
        sys.modules.setdefault(name, None)


_QUICK_EXIT: list = []


def quick_exit() -> None:
    """End this process without the garbage collector's passes over every object it holds.

    When Python exits it collects the cyclic garbage of all live objects, module by module; a
    process that imported TensorFlow holds millions of them, and that takes about 2 s of every
    command (``python -c "import tensorflow"``: 8.5 s, 6.6 s with the objects frozen;
    docs/benchmarks.md, "Speed II"). An exit handler registered here, first so that it runs
    last, moves every object to the collector's permanent generation (:func:`gc.freeze`), which
    the passes at exit skip. Exit handlers registered later (logging's flush, temporary
    folders, multiprocessing's finalizers) still run before it, files written here are closed
    by their ``with`` blocks, and the operating system frees the memory. Registered once per
    process.
    """
    if not _QUICK_EXIT:
        atexit.register(gc.freeze)
        _QUICK_EXIT.append(True)
