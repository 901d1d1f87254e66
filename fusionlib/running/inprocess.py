"""A papermill engine that executes a notebook's cells in this process, without a kernel.

``fusionlib run`` executes every experiment notebook with papermill. Papermill's own engine
starts a Jupyter kernel per notebook, and each kernel imports TensorFlow, scikit-learn and
matplotlib again before a run's few seconds of fold work: most of a fusion-only rerun's time.
This engine runs the cells in an IPython shell of the calling process instead (a worker
process of the pool, or the command line itself with ``--jobs 1``), so the imports are paid
once per process. Papermill still parameterises the notebook, saves it after every cell and
raises :class:`papermill.exceptions.PapermillExecutionError` for a failing cell, so the
executed notebook and the runner's messages are the same as with a kernel.

What a cell shows is recorded as the kernel would send it: ``print`` and warnings as
``stream`` outputs (in the order they were written, interleaved with displays), ``display``
calls as ``display_data``, a cell's last expression as ``execute_result``, an exception as an
``error`` output. Each notebook gets a fresh namespace (the shell is reset before it starts);
what lives in modules carries over to the next notebook of the process (imports, traced
TensorFlow functions, warning filters), which is the point, and why the runner's tests compare
its results with a kernel's byte for byte.
Not captured: output written by C code straight to the file descriptors (TensorFlow's log is
silenced by the environment anyway).

It needs the process to itself: the shell is IPython's singleton, ``sys.stdout`` is swapped
while a cell runs, and the notebook changes the working directory. :func:`available` says
when it can be used (the main thread, no other IPython shell, e.g. not inside a Jupyter
kernel); the runner falls back to the kernel otherwise (a Dask worker's threads).
"""

from __future__ import annotations

import contextlib
import sys
import threading

__all__ = ["ENGINE_NAME", "available", "register"]

ENGINE_NAME = "fusionlib-inprocess"
"""The name this engine is registered under with papermill (``engine_name=``)."""

_shell = None          # this process's one NotebookShell (_shell_class), made on first use
_Engine = None         # the papermill engine class (_engine_class), made on first use


def available() -> bool:
    """Whether notebooks can run in this process: in its main thread, and no IPython shell of
    another kind exists (inside JupyterLab the kernel's own shell does)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if _shell is not None:
        return True
    ipython = sys.modules.get("IPython")
    return ipython is None or ipython.get_ipython() is None


def register() -> str:
    """Register the engine with papermill (idempotent); returns its name."""
    from papermill.engines import papermill_engines

    papermill_engines.register(ENGINE_NAME, _engine_class())
    return ENGINE_NAME


def _engine_class():
    # Built on first use: papermill and IPython load only when a notebook is executed.
    global _Engine
    if _Engine is None:
        from papermill.engines import Engine

        class InProcessEngine(Engine):
            """Papermill engine: the cells run in this process's IPython shell."""

            @classmethod
            def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
                _execute(nb_man)

        _Engine = InProcessEngine
    return _Engine


def _execute(nb_man) -> None:
    """Run ``nb_man.nb``'s code cells in order; stop at the first failing one (after recording
    its error output, as a kernel's client does). Ctrl-C stops the whole command, not just
    the cell."""
    if not available():
        raise RuntimeError("the in-process notebook engine needs the main thread of a process "
                           "without another IPython shell; use the kernel engine here")
    shell = _get_shell()
    shell.reset(new_session=True)           # a fresh namespace per notebook, counts from 1
    # The cells run as ``__main__``, as in a kernel or the interactive interpreter (no spec, no
    # file: a process the notebook spawns does not re-import it); the process's own
    # ``__main__`` is back in place once the notebook is done.
    shell.user_ns["__spec__"] = None
    with _as_main(shell.user_module):
        for index, cell in enumerate(nb_man.nb.cells):
            if cell.get("cell_type") != "code":
                continue
            nb_man.cell_start(cell, index)
            cell.outputs = []
            cell.execution_count = shell.execution_count
            error = shell.run_notebook_cell(cell.source, cell.outputs)
            if error is not None:
                nb_man.cell_exception(cell, index)
                nb_man.cell_complete(cell, index)
                if isinstance(error, KeyboardInterrupt):
                    raise error
                return
            nb_man.cell_complete(cell, index)


@contextlib.contextmanager
def _as_main(module):
    """``sys.modules["__main__"]`` is ``module`` while the block runs."""
    real = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    try:
        yield
    finally:
        sys.modules["__main__"] = real


def _get_shell():
    global _shell
    if _shell is None:
        # IPython's shell makes itself this process's __main__ when it is created: put the
        # process's own back (multiprocessing's spawn reads it to start a worker).
        with _as_main(sys.modules.get("__main__")):
            _shell = _shell_class().instance(config=_quiet_config())
    return _shell


def _quiet_config():
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False       # no history.sqlite written per process
    config.InteractiveShell.colors = "nocolor"  # tracebacks in the notebook read as plain text
    return config


def _shell_class():
    """The shell and its output sinks (classes built on first use: IPython loads lazily)."""
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from nbformat.v4 import new_output

    class Sink:
        """Where the running cell's outputs go (``None`` between cells)."""

        outputs: list | None = None

        def add(self, output) -> None:
            if self.outputs is not None:
                self.outputs.append(output)

        def stream(self, name: str, text: str) -> None:
            if self.outputs is None or not text:
                return
            last = self.outputs[-1] if self.outputs else None
            if last is not None and last.output_type == "stream" and last.name == name:
                last.text += text               # consecutive writes form one output, as in Jupyter
            else:
                self.outputs.append(new_output("stream", name=name, text=text))

    class Stream:
        """``sys.stdout`` / ``sys.stderr`` while a cell runs. A library that kept a reference to
        it (a logging handler made during the cell) writes to the real stream once the cell is
        done."""

        encoding = "utf-8"
        errors = "strict"

        def __init__(self, sink: Sink, name: str, real):
            self._sink, self.name, self._real = sink, name, real

        def write(self, text) -> int:
            if self._sink.outputs is None:
                return self._real.write(text)
            self._sink.stream(self.name, str(text))
            return len(text)

        def writelines(self, lines) -> None:
            for line in lines:
                self.write(line)

        def flush(self) -> None:
            if self._sink.outputs is None:
                self._real.flush()

        def close(self) -> None:
            pass                                # the real stream is not this object's to close

        def fileno(self) -> int:
            return self._real.fileno()

        def isatty(self) -> bool:
            return False

        def writable(self) -> bool:
            return True

    class Publisher(DisplayPublisher):
        """``display(...)`` -> ``display_data``."""

        def publish(self, data, metadata=None, source=None, *, transient=None, update=False,
                    **kwargs):
            self.shell.sink.add(new_output("display_data", data=dict(data),
                                           metadata=dict(metadata or {})))

        def clear_output(self, wait=False):
            if self.shell.sink.outputs is not None:
                self.shell.sink.outputs.clear()

    class Hook(DisplayHook):
        """A cell's last expression -> ``execute_result``."""

        def start_displayhook(self):
            pass

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            self.shell.sink.add(new_output("execute_result", data=dict(format_dict),
                                           metadata=dict(md_dict or {}),
                                           execution_count=self.prompt_count))

        def finish_displayhook(self):
            pass

    class NotebookShell(InteractiveShell):
        """An IPython shell whose outputs become notebook outputs."""

        displayhook_class = Hook
        display_pub_class = Publisher

        def __init__(self, **kwargs):
            self.sink = Sink()
            super().__init__(**kwargs)

        def enable_gui(self, gui=None):
            """``%matplotlib inline`` asks for no event loop; a GUI backend is refused."""
            if gui not in (None, "inline"):
                raise RuntimeError(f"GUI event loop {gui!r} is not available when a notebook "
                                   "runs in-process; use the inline backend")

        def _showtraceback(self, etype, evalue, stb):
            self.sink.add(new_output("error", ename=etype.__name__, evalue=str(evalue),
                                     traceback=list(stb)))

        def run_notebook_cell(self, source: str, outputs: list):
            """Run one cell, its outputs appended to ``outputs``; the exception it raised
            (after its error output was recorded), or None."""
            self.sink.outputs = outputs
            saved = sys.stdout, sys.stderr
            sys.stdout = Stream(self.sink, "stdout", saved[0])
            sys.stderr = Stream(self.sink, "stderr", saved[1])
            try:
                result = self.run_cell(source, store_history=True)
            finally:
                sys.stdout, sys.stderr = saved
                self.sink.outputs = None
            return result.error_before_exec or result.error_in_exec

    return NotebookShell
