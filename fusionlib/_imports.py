"""Import-time settings for fusionlib's own processes (the command line and its worker pool).

:func:`skip_slow_optional_imports` is called there, never on ``import fusionlib``: a library
must not change what a user's own session can import.
"""

from __future__ import annotations

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
