"""Hardening II (issue 20), the runner's cases: a full disk during a sweep, Ctrl-C while the
command line still imports, the report's leftover ``.report-*`` folders, and what a run's
notebook says about dropped images and recomputed cache entries shown on the screen of
``fusionlib run``.

The sweeps execute a stub notebook (``run_all(notebook=...)``): a real kernel and papermill, a
few lines of code instead of an experiment, so each run takes seconds.
"""

import contextlib
import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from fusionlib import _io
from fusionlib.running import Outcome, Task, runner, scheduling

REPO = Path(__file__).resolve().parents[1]
FUSIONLIB = str(Path(sys.executable).parent / "fusionlib")
INTERRUPTED = "fusionlib: interrupted; finished runs are kept, rerun to continue"

# The stub's behaviour is chosen by words in the run's description.
STUB_CODE = '''
import json, pathlib
out = pathlib.Path(output_dir)
if "raise" in description:
    raise ValueError("boom from the notebook")
if "kernel-disk-full" in description:
    raise OSError(28, "No space left on device", str(out / "metrics.json"))
dropped = {"count": 0, "by_reason": {}}
if "dropped" in description:
    dropped = {"count": 2, "by_reason": {"unreadable": 1, "zero-byte": 1}}
if "corrupt-caches" in description:
    import numpy as np
    from PIL import Image
    from fusionlib.branches import BranchOutput
    from fusionlib.branches.cache import BranchCache
    from fusionlib.images import load_images
    root = pathlib.Path(cache_dir)
    image = root / "stub.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(image)
    load_images([image], size=8, cache_dir=root / "crops")
    for entry in (root / "crops").glob("*.npy"):
        entry.write_bytes(b"not an array")                   # a damaged crop cache entry
    load_images([image], size=8, cache_dir=root / "crops")   # recomputed
    (root / "branches").mkdir(exist_ok=True)
    (root / "branches" / "entry.npz").write_bytes(b"garbage")  # a damaged branch cache entry
    zeros = np.zeros((2, 3))
    BranchCache(root / "branches").get_or_compute(
        "entry", lambda: BranchOutput(np.arange(2), np.arange(2), zeros, zeros, {}))
summary = {"name": name, "qwk": {"mean": 0.5}, "dropped_images": dropped}
(out / "metrics.json").write_text(json.dumps({"summary": summary, "folds": []}))
for file in ("predictions.csv", "weights.json", "provenance.json"):
    (out / file).write_text("{}")
'''


def stub_notebook(folder: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    sections = "".join(f"{key} = None\n" for key in ("data", "clinical", "image", "fusion", "head",
                                                     "protocol", "decision", "stage2"))
    params = nbformat.v4.new_code_cell("name = 'stub'\ndescription = ''\noutput_dir = None\n"
                                       "cache_dir = None\n" + sections)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(STUB_CODE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = folder / "stub.ipynb"
    nbformat.write(nb, str(path))
    return path


def write_params(folder: Path, name: str, description: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "description": description or f"run {name}",
                                    "fusion": {"variant": "fixed"},
                                    "protocol": {"data_percentage": 30, "folds": 2}}))
    return path


def sweep(tmp_path: Path, runs: dict, **kwargs) -> tuple[int, str, str]:
    """``run_all`` over ``{name: description}`` with the stub notebook: (rc, stdout, stderr)."""
    paths = [write_params(tmp_path / "params", name, text) for name, text in runs.items()]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = runner.run_all(paths, runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache",
                            notebook=stub_notebook(tmp_path), **kwargs)
    return rc, out.getvalue(), err.getvalue()


def summary_of(stdout: str) -> dict:
    lines = stdout.splitlines()
    start = lines.index("summary:")
    return {line.split()[0]: line.split()[1] for line in lines[start + 1:] if line.strip()}


def screen_lines(text: str) -> list[str]:
    """The lines written above the progress bar (its frames, between carriage returns, dropped)."""
    return [line for line in re.split(r"[\r\n]", text)
            if line.strip() and not line.startswith("runs:")]


def lines_with(text: str, part: str) -> list[str]:
    return [line for line in screen_lines(text) if part in line]


# --------------------------------------------------------------------------- a full disk


def test_a_full_disk_fails_its_run_in_one_line_and_the_sweep_goes_on(tmp_path, monkeypatch):
    """ENOSPC where the runner keeps a failed notebook, where it writes ``done.json``, and in the
    kernel: one line per run naming the file and the notebook's own error, the other runs
    finish, the summary is printed, exit status 1, earlier results untouched."""
    runs_dir = tmp_path / "runs"
    earlier = runs_dir / "c_done_full"              # an earlier complete result of one run
    earlier.mkdir(parents=True)
    (earlier / "done.json").write_text('{"key": "earlier", "status": "ok"}')
    (earlier / "metrics.json").write_text('{"summary": {"qwk": {"mean": 0.25}}}')
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    (runs_dir / "b_raise.failed.ipynb").write_text("the earlier failed notebook")

    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    # Keeping b_raise's failed notebook finds the disk full (whether it is copied or renamed).
    real_copyfile, real_replace = shutil.copyfile, os.replace

    def copyfile(src, dst, *args, **kwargs):
        if str(dst).endswith("failed.ipynb") and "b_raise" in str(src):
            disk_full(dst)
        return real_copyfile(src, dst, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("failed.ipynb") and "b_raise" in str(src):
            disk_full(dst)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    monkeypatch.setattr(os, "replace", replace)
    # c_done_full's done.json: the write itself fails inside the atomic writer.
    real_write = runner.atomic_write_text

    def atomic_write_text(path, text):
        if Path(path).name == "done.json" and "c_done_full" in str(path):
            with _io.atomic_open(path, "w", encoding="utf-8"):
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, text)

    monkeypatch.setattr(runner, "atomic_write_text", atomic_write_text)

    rc, out, err = sweep(tmp_path, {"a_ok": "", "b_raise": "raise", "c_done_full": "",
                                    "d_kernel_full": "kernel-disk-full", "e_ok": ""})
    assert rc == 1
    assert "Traceback" not in out + err, err
    assert summary_of(out) == {"a_ok": "ok", "b_raise": "failed", "c_done_full": "failed",
                               "d_kernel_full": "failed", "e_ok": "ok"}

    [line] = lines_with(err, "run b_raise FAILED")
    assert "ValueError: boom from the notebook" in line            # the notebook's own error
    assert f"{runs_dir / 'b_raise.failed.ipynb'}: no space left on device" in line, line
    assert (runs_dir / "b_raise.failed.ipynb").read_text() == "the earlier failed notebook"

    [line] = lines_with(err, "run c_done_full FAILED")
    assert line.startswith(f"run c_done_full FAILED: {runs_dir}/.tmp-c_done_full-"), line
    assert line.endswith("/done.json: no space left on device"), line
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before

    [line] = lines_with(err, "run d_kernel_full FAILED")
    assert line.startswith("run d_kernel_full FAILED in cell ")
    assert f": OSError: {runs_dir}/.tmp-d_kernel_full-" in line, line
    assert line.endswith("/metrics.json: no space left on device"), line
    assert (runs_dir / "d_kernel_full.failed.ipynb").is_file()      # kept: a rename needs no space

    for name in ("a_ok", "e_ok"):
        assert json.loads((runs_dir / name / "done.json").read_text())["status"] == "ok"
    assert not list(runs_dir.glob(".tmp-*")) and not list(runs_dir.glob(".lock-*"))


def test_an_error_escaping_one_run_fails_only_that_run(tmp_path, monkeypatch):
    """An OSError out of the per-run function itself (here before any kernel starts) is that
    run's one line, as from a worker process; the runs after it still execute."""
    def execute_run(task):
        if task.name == "first":
            raise OSError(errno.ENOSPC, "No space left on device", f"{task.runs_dir}/.lock-first")
        return Outcome(task.name, "ok", seconds=0.1, qwk=0.5)

    monkeypatch.setattr(runner, "execute_run", execute_run)
    rc, out, err = sweep(tmp_path, {"first": "", "second": ""})
    assert rc == 1 and "Traceback" not in err
    assert summary_of(out) == {"first": "failed", "second": "ok"}
    assert lines_with(err, "run first FAILED") == [
        f"run first FAILED: {tmp_path / 'runs'}/.lock-first: no space left on device"]
    assert lines_with(err, "run second: ok in")


def _task(tmp_path) -> Task:
    return Task("x", {"name": "x"}, "k" * 64, runs_dir=str(tmp_path / "runs"),
                cache_dir=str(tmp_path / "cache"), notebook="nb", cwd=str(tmp_path),
                params_file="x.yaml", code_version="v", data_fingerprint="f")


@pytest.mark.parametrize("err", [OSError(errno.EACCES, "Permission denied", "/somewhere/.owner"),
                                 OSError(errno.ENOSPC, "No space left on device"),
                                 OSError("an OSError without errno")], ids=repr)
def test_the_runners_own_failed_write_is_the_line_of_a_failed_worker(tmp_path, monkeypatch, err):
    """An OSError of the runner's own writes and one escaping a worker are said by one helper."""
    def write_owner(folder, started):
        raise err

    monkeypatch.setattr(runner, "write_owner", write_owner)
    result = runner._execute_unlocked(_task(tmp_path))
    assert result.status == "failed"
    assert result.message == scheduling.failed_outcome("x", err).message
    assert result.message == f"run x FAILED: {scheduling.error_text(err)}"
    assert list((tmp_path / "runs").iterdir()) == []         # its temporary folder removed


@pytest.mark.parametrize("err, kept", [
    (RuntimeError("Kernel died before replying"), True),
    (OSError(errno.ENOSPC, "No space left on device"), False),
    (OSError(errno.ENOSPC, "No space left on device", "/elsewhere/file"), False),
], ids=["kernel-died", "disk-full-no-file", "disk-full-named-file"])
def test_a_failed_notebook_is_kept_unless_the_disk_filled_outside_a_cell(tmp_path, monkeypatch,
                                                                          err, kept):
    """Papermill failing outside a cell: the executed notebook is kept as <name>.failed.ipynb,
    except after a full disk (it may be cut short); a full disk naming no file names the
    notebook papermill was writing."""
    import papermill

    def execute_notebook(source, output, **kwargs):
        Path(output).write_text("{}")
        raise err

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    runs_dir = tmp_path / "runs"
    result = runner._execute_unlocked(_task(tmp_path))
    assert result.status == "failed"
    failed_nb = runs_dir / "x.failed.ipynb"
    assert failed_nb.is_file() == kept and (result.failed_notebook is not None) == kept
    if isinstance(err, RuntimeError):
        assert result.message == "run x FAILED: RuntimeError: Kernel died before replying"
    elif err.filename is None:
        assert re.fullmatch(rf"run x FAILED: {re.escape(str(runs_dir))}/\.tmp-x-\w+/"
                            r"executed\.ipynb: no space left on device", result.message)
    else:
        assert result.message == "run x FAILED: /elsewhere/file: no space left on device"
    assert sorted(p.name for p in runs_dir.iterdir()) == (["x.failed.ipynb"] if kept else [])


# --------------------------------------------------------------------------- what the notebook saw


def test_dropped_images_and_recomputed_cache_entries_are_on_the_screen(tmp_path):
    rc, out, err = sweep(tmp_path, {"notes": "dropped corrupt-caches", "quiet": ""})
    assert rc == 0, err
    lines = screen_lines(err)
    start = lines.index(next(line for line in lines if line.startswith("run notes: ok in")))
    block = []                          # the run's line and its indented notes
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        block.append(line.strip())
    assert block, "no line under the run's own"
    assert block[0] == "dropped images: 2 (unreadable 1, zero-byte 1)", block
    crops = [line for line in block if line.startswith("crop cache entry ")]
    branches = [line for line in block if line.startswith("branch cache entry ")]
    assert len(crops) == 1 and crops[0].endswith(" was unreadable (ValueError); recomputed")
    assert str(tmp_path / "cache" / "crops") in crops[0]
    assert branches == [f"branch cache entry {tmp_path / 'cache' / 'branches' / 'entry.npz'} "
                        "was unreadable (ValueError); recomputed"], block
    # A run with nothing to say gets no extra line; no sidecar is left in the run folders.
    quiet = lines.index(next(line for line in lines if line.startswith("run quiet: ok in")))
    assert quiet + 1 == len(lines) or not lines[quiet + 1].startswith("  ")
    assert "dropped images" not in err.replace(block[0], "", 1)
    for name in ("notes", "quiet"):
        assert not (tmp_path / "runs" / name / runner.NOTES_FILE).exists()


def test_branch_sets_trained_before_the_runs_report_recomputed_entries(tmp_path, monkeypatch):
    """``--jobs 2``: the branch sets are trained in the runner's workers (prefill_one); an
    unreadable branch cache entry met there is on the screen too."""
    import numpy as np

    from fusionlib.branches import BranchOutput
    from fusionlib.branches.cache import BranchCache

    cache = tmp_path / "cache" / "branches"
    cache.mkdir(parents=True)
    (cache / "entry.npz").write_bytes(b"garbage")

    def prefill_branches(params, seed, cache_dir):
        branches = BranchCache(Path(cache_dir) / "branches")
        zeros = np.zeros((2, 3))
        branches.get_or_compute("entry", lambda: BranchOutput(np.arange(2), np.arange(2),
                                                              zeros, zeros, {}))
        return {"hits": branches.hits, "misses": branches.misses}

    monkeypatch.setattr(runner, "prefill_branches", prefill_branches)   # what prefill_one calls
    item = {"params": {"name": "p"}, "seed": 0, "cache_dir": str(tmp_path / "cache"),
            "label": "100 % seed 0"}
    result = runner.prefill_one(item)

    class Bar:
        lines = []

        def write(self, text, file=None):
            self.lines.append(text)

    bar = Bar()
    runner._branches_line(bar)(item, result)
    assert bar.lines[0].startswith("branches 100 % seed 0: trained in ")
    assert bar.lines[1:] == [f"branches 100 % seed 0: branch cache entry {cache / 'entry.npz'} "
                             "was unreadable (ValueError); recomputed"]


# --------------------------------------------------------------------------- Ctrl-C at start-up


def _as_from_a_terminal():
    """SIGINT handled by default and not blocked, as a terminal's Ctrl-C finds it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _importing_numpy(pid: int) -> bool:
    """Whether the process has mapped NumPy's extension: it is importing its heavy modules
    (NumPy first), past the interpreter's own start-up, which no program code can guard."""
    try:
        return "_multiarray_umath" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
@pytest.mark.parametrize("command,delay", [((sys.executable, "-m", "fusionlib"), 0.0),
                                           ((sys.executable, "-m", "fusionlib"), 0.3),
                                           ((sys.executable, "-m", "fusionlib"), 1.0),
                                           ((FUSIONLIB,), 0.2)])
def test_ctrl_c_while_starting_up_is_one_line_and_exit_130(tmp_path, command, delay):
    """Ctrl-C while the command still imports (NumPy, pandas, scikit-learn, papermill,
    TensorFlow: its first seconds): one line and exit status 130, never a KeyboardInterrupt
    traceback. The signal goes ``delay`` seconds after the process starts importing NumPy."""
    path = write_params(tmp_path / "params", "startup")
    proc = subprocess.Popen([*command, "run", str(path), "--runs-dir", str(tmp_path / "runs"),
                             "--cache-dir", str(tmp_path / "cache")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_as_from_a_terminal)
    try:
        deadline = time.time() + 60
        while not _importing_numpy(proc.pid):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.005)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)          # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.rstrip().splitlines()[-1] == INTERRUPTED, err


# --------------------------------------------------------------------------- the report's leftovers


def _hand_made_run(runs: Path, name: str) -> None:
    """A finished run folder written by hand (no training), as tests/test_report.py's."""
    import numpy as np
    import pandas as pd

    folder = runs / name
    folder.mkdir(parents=True)
    n = 24
    proba = np.random.default_rng(0).dirichlet(np.ones(3), n)
    pd.DataFrame({"repeat": 0, "fold": np.arange(n) % 2, "case_id": [f"c{i}" for i in range(n)],
                  "patient": [f"p{i // 2}" for i in range(n)], "label": np.arange(n) % 3,
                  "pred": proba.argmax(axis=1), "p_I": proba[:, 0], "p_P": proba[:, 1],
                  "p_R": proba[:, 2]}).to_csv(folder / "predictions.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({
        "summary": {"name": name, "fusion": "fixed", "data_percentage": 100.0, "n_folds": 2,
                    "n_cases": n, "qwk": {"mean": 0.4, "sd": 0.1, "ci95": [0.2, 0.6]}},
        "folds": [{"repeat": 0, "fold": k, "qwk": 0.4, "rf_share": 0.7} for k in (0, 1)]}))
    (folder / "provenance.json").write_text(json.dumps(
        {"params": {"fusion": {"variant": "fixed"}, "protocol": {"seed": 0, "folds": 2},
                    "data": {"cohort_seed": 7}}, "data": {"name": "hand-made", "fingerprint": "f"}}))
    (folder / "weights.json").write_text("[]")
    (folder / "done.json").write_text(json.dumps({"status": "ok"}))


def test_report_removes_the_work_folders_interrupted_reports_left(tmp_path):
    """Empty ``.report-*`` folders of interrupted reports go at the next build; one that a report
    may still be using (created a moment ago, or still being written) stays."""
    from fusionlib import report

    runs = tmp_path / "runs"
    _hand_made_run(runs, "fixed_ok")
    out = tmp_path / "reports"
    out.mkdir()
    an_hour_ago = time.time() - 3600
    left = [out / name for name in (".report-abcd1234", ".report-x_9y8z7w", ".report-00000000")]
    for folder in left:
        folder.mkdir()
        os.utime(folder, (an_hour_ago, an_hour_ago))
    young = out / ".report-young123"                 # just created by a running report
    young.mkdir()
    busy = out / ".report-busy1234"                  # a running report writing into it
    busy.mkdir()
    (busy / "report.ipynb").write_text("{}")
    os.utime(busy, (an_hour_ago, an_hour_ago))
    mine = out / ".report-notes"                     # not a name a report gives its folder
    mine.mkdir()
    os.utime(mine, (an_hour_ago, an_hour_ago))

    report.build_report(runs, out, n_boot=50)
    assert (out / "index.html").is_file()
    assert not [folder for folder in left if folder.exists()]
    assert young.is_dir() and mine.is_dir() and (busy / "report.ipynb").is_file()


def test_a_task_error_logged_after_the_interrupt_line_is_not_shown():
    """After Ctrl-C the kernel dies too, and asyncio logs nbclient's unretrieved DeadKernelError
    with a traceback when its task is collected, after the one line (seen on CI): silenced."""
    code = """
import asyncio, gc, sys
from fusionlib import cli

async def cell():
    raise RuntimeError("Kernel died")

def interrupted_run(argv):
    global task
    loop = asyncio.new_event_loop()
    task = loop.create_task(cell())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    raise KeyboardInterrupt

cli._main = interrupted_run
rc = cli.main([])
del task
gc.collect()
sys.exit(rc)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [INTERRUPTED], done.stderr
