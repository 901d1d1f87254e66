"""The slow optional import skipped in fusionlib's own processes only (fusionlib._imports)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "experiment.ipynb"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("rfc3987_syntax") is None,
                                reason="rfc3987_syntax is not installed: nothing to skip")


def python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_fusionlib_leaves_a_users_imports_alone():
    assert python("import fusionlib, fusionlib.running.runner, fusionlib.report, rfc3987_syntax; "
                  "print(rfc3987_syntax.__name__)") == "rfc3987_syntax"


def test_the_command_line_and_its_workers_skip_it_and_still_validate_notebooks():
    code = f"""
import sys
from fusionlib import cli
from fusionlib.running import scheduling
assert cli.main(["validate", "params/fixed_100.yaml"]) == 0
scheduling.worker_init()                  # what each worker of the process pool runs first
import nbformat, papermill
nbformat.validate(nbformat.read({str(NOTEBOOK)!r}, as_version=4))
print(sys.modules["rfc3987_syntax"], "jsonschema" in sys.modules)
"""
    assert python(code).splitlines()[-1] == "None True"


def test_a_module_already_imported_is_left_alone():
    code = """
import sys, rfc3987_syntax
from fusionlib._imports import skip_slow_optional_imports
skip_slow_optional_imports()
print(sys.modules["rfc3987_syntax"] is rfc3987_syntax)
"""
    assert python(code) == "True"
