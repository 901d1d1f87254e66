"""``fusionlib run``: parameter files to executed notebooks in ``runs/<name>/``.

- :mod:`.runner`: validate, plan, execute, summarise; run keys and the code version; one run
  under its lock through papermill.
- :mod:`.folders`: the runs folder's bookkeeping (``done.json``, owner files, stale
  temporary and set-aside folders).
- :mod:`.scheduling`: how runs are spread over a process pool or a Dask cluster; Ctrl-C and
  SIGTERM handling.
- :mod:`.tasks`: :class:`Task` (one run to execute) and :class:`Outcome` (what became of it),
  what travels between the runner and its workers.

Importing this package imports no TensorFlow, papermill or Dask: those load when a run
starts.
"""

from .runner import code_version, execute_run, load_all, run_all, run_key
from .tasks import Outcome, Task

__all__ = ["Outcome", "Task", "code_version", "execute_run", "load_all", "run_all", "run_key"]
