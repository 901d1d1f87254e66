"""What the runner hands a worker and gets back: one run's :class:`Task` and its :class:`Outcome`.

Both are plain dataclasses of strings, numbers, lists and dicts, so they travel to worker
processes and Dask workers by pickle; the runner builds the tasks, :func:`.runner.execute_run`
turns each into an outcome, :func:`.scheduling.report_outcome` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


ENGINES = ("auto", "inprocess", "kernel")
"""How ``fusionlib run`` executes a notebook: ``inprocess`` runs its cells in the worker process
(:mod:`.inprocess`: no kernel start, the imports paid once per process),
``kernel`` in a Jupyter kernel of its own (papermill's engine: a run cannot touch the worker's
state), ``auto`` in-process where that engine can run (a process's main thread outside
Jupyter), else in a kernel (Dask's worker threads, a call from inside a notebook)."""


@dataclass(frozen=True)
class Task:
    """One run to execute: its parameters (``params``: the validated file as a dict), where it
    goes and what its ``done.json`` will record (``key``: the run key; ``code_version`` and
    ``data_fingerprint`` it was made of). ``force``: execute even when done with that key;
    ``engine``: how the notebook runs (:data:`ENGINES`)."""

    name: str
    params: dict
    key: str
    runs_dir: str
    cache_dir: str
    notebook: str
    cwd: str
    params_file: str
    code_version: str
    data_fingerprint: str
    force: bool = False
    engine: str = "auto"


STATUSES = ("ok", "failed", "skipped", "not run")


@dataclass
class Outcome:
    """What became of one run: ``status`` (one of :data:`STATUSES`), its time, its mean QWK
    over folds (None when it has none), a one-line ``message`` (why it failed or was skipped),
    ``notes`` for the screen (images the loader dropped, cache entries recomputed) and, for a
    failed run, where its failed notebook was kept."""

    name: str
    status: str
    seconds: float = 0.0
    qwk: float | None = None
    message: str | None = None
    notes: list[str] = field(default_factory=list)
    failed_notebook: str | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"outcome status must be one of {', '.join(STATUSES)}, "
                             f"got {self.status!r}")
