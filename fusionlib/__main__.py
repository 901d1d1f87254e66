"""``python -m fusionlib``: the command line (:func:`fusionlib.cli.main`).

Importing ``fusionlib`` and ``fusionlib.cli`` is light (nothing heavy at module level), so a
Ctrl-C reaches :func:`~fusionlib.cli.main`, which ends it with one line and exit status 130;
the guard here covers the few milliseconds before it.
"""

import sys

try:
    from .cli import main
except KeyboardInterrupt:
    # fusionlib.cli.INTERRUPTED: that module may be the one whose import was interrupted.
    print("fusionlib: interrupted; finished runs are kept, rerun to continue", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
