"""The in-process papermill engine (fusionlib.running.inprocess): what a notebook run in this
process records, that each notebook starts from a fresh namespace, how a failing cell and
Ctrl-C end it, and when the runner picks it."""

import sys
import threading

import nbformat
import papermill as pm
import pytest
from papermill.exceptions import PapermillExecutionError

from fusionlib.running import inprocess, runner
from fusionlib.running.tasks import ENGINES


def notebook(folder, *sources, name="nb.ipynb"):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("greeting = 'hello'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(s) for s in sources)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = folder / name
    nbformat.write(nb, str(path))
    return path


def execute(path, out, **parameters):
    pm.execute_notebook(str(path), str(out), parameters=parameters, progress_bar=False,
                        engine_name=inprocess.register())
    return nbformat.read(str(out), as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_outputs_are_recorded_as_a_kernel_sends_them(tmp_path):
    path = notebook(
        tmp_path,
        "import sys, warnings\nprint(greeting)\nprint('to stderr', file=sys.stderr)\n"
        "print('again')",
        "from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))\n6 * 7",
        "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nNone",
    )
    stdout_before, main_before = sys.stdout, sys.modules["__main__"]
    nb = execute(path, tmp_path / "out.ipynb", greeting="bonjour")
    assert sys.stdout is stdout_before                    # restored after every cell
    # The process's __main__ is its own again (a spawned worker process re-imports it).
    assert sys.modules["__main__"] is main_before

    cells = code_cells(nb)
    injected = [c for c in cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "bonjour" in injected[0].source
    printing = cells[-3]
    # stdout, stderr, stdout again: in the order written, consecutive writes of one stream joined
    assert [(o.output_type, o.name) for o in printing.outputs] == [
        ("stream", "stdout"), ("stream", "stderr"), ("stream", "stdout")]
    assert printing.outputs[0].text == "bonjour\n"
    assert printing.outputs[2].text == "again\n"
    shown = cells[-2].outputs
    assert [o.output_type for o in shown] == ["display_data", "execute_result"]
    assert shown[0].data["text/html"] == "<b>bold</b>"
    assert shown[1].data["text/plain"] == "42"
    assert shown[1].execution_count == cells[-2].execution_count
    figure = cells[-1].outputs
    assert [o.output_type for o in figure] == ["display_data"]   # the inline backend's PNG
    assert "image/png" in figure[0].data
    counts = [c.execution_count for c in cells]
    assert counts == list(range(1, len(cells) + 1))
    assert all(c.metadata.papermill.status == "completed" for c in cells)


def test_each_notebook_starts_from_a_fresh_namespace(tmp_path):
    first = notebook(tmp_path, "left_behind = 1", name="first.ipynb")
    second = notebook(tmp_path, "print('left_behind' in dir())\n"
                                "import sys\nprint(sys.modules['__main__'].__spec__)",
                      name="second.ipynb")
    execute(first, tmp_path / "first-out.ipynb")
    nb = execute(second, tmp_path / "second-out.ipynb")
    # Not defined, and the cells run as an interactive __main__ (no spec to re-import)
    assert code_cells(nb)[-1].outputs[0].text == "False\nNone\n"
    assert code_cells(nb)[0].execution_count == 1              # counts start again too


def test_a_failing_cell_stops_the_notebook_with_papermills_error(tmp_path):
    path = notebook(tmp_path, "x = 1", "raise ValueError(f'bad value {x}')", "print('never')")
    out = tmp_path / "out.ipynb"
    with pytest.raises(PapermillExecutionError) as caught:
        execute(path, out)
    assert caught.value.ename == "ValueError"
    assert caught.value.evalue == "bad value 1"
    nb = nbformat.read(str(out), as_version=4)        # saved, with the error output
    failing, after = code_cells(nb)[-2:]
    assert failing.outputs[-1].output_type == "error"
    assert any("ValueError" in line for line in failing.outputs[-1].traceback)
    assert failing.metadata.papermill.status == "failed"
    assert after.outputs == [] and after.execution_count is None     # never ran
    # A syntax error is reported the same way.
    with pytest.raises(PapermillExecutionError) as caught:
        execute(notebook(tmp_path, "def (:", name="syntax.ipynb"), tmp_path / "syntax-out.ipynb")
    assert caught.value.ename == "SyntaxError"


def test_ctrl_c_in_a_cell_stops_the_command_not_just_the_cell(tmp_path):
    path = notebook(tmp_path, "raise KeyboardInterrupt", "print('never')")
    with pytest.raises(KeyboardInterrupt):
        execute(path, tmp_path / "out.ipynb")


def test_auto_runs_in_process_only_in_a_main_thread_outside_jupyter():
    assert set(ENGINES) == {"auto", "inprocess", "kernel"}
    assert runner.resolve_engine("kernel") == "kernel"
    assert runner.resolve_engine("inprocess") == "inprocess"
    assert runner.resolve_engine("auto") == "inprocess"           # pytest's main thread
    seen = []
    thread = threading.Thread(target=lambda: seen.append(runner.resolve_engine("auto")))
    thread.start()
    thread.join()
    assert seen == ["kernel"]                                     # e.g. a Dask worker's thread
    with pytest.raises(ValueError, match="must be one of auto, inprocess, kernel, got 'fast'"):
        runner.resolve_engine("fast")


def test_the_engine_refuses_a_thread(tmp_path):
    path = notebook(tmp_path, "print(1)")
    errors = []

    def work():
        try:
            execute(path, tmp_path / "out.ipynb")
        except RuntimeError as err:
            errors.append(str(err))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors and "needs the main thread" in errors[0]
