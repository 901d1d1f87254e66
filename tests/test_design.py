"""The package's import structure as docs/design.md states it (scripts/import_graph.py)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "import_graph.py"

spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
import_graph = importlib.util.module_from_spec(spec)
sys.modules["import_graph"] = import_graph   # dataclasses look their module up by name
spec.loader.exec_module(import_graph)


def test_no_import_circles():
    assert import_graph.analyse(REPO).circles() == []


def test_no_module_imports_another_modules_private_names():
    found = [f"{i.source}:{i.line} {i.names} from {i.target}"
             for i in import_graph.analyse(REPO).underscore_imports()]
    assert found == []


def test_the_head_package_is_layered():
    """settings <- objective <- optimisers <- penalty: each imports only those before it."""
    layers = ["settings", "objective", "optimisers", "penalty"]
    edges = import_graph.analyse(REPO).edges()
    for i, layer in enumerate(layers):
        inside = {t.rpartition(".")[2] for t in edges[f"fusionlib.head.{layer}"]
                  if t.startswith("fusionlib.head.")}
        assert inside <= set(layers[:i]), (layer, inside)


def _package(root: Path, files: dict) -> Path:
    for name, text in {"__init__.py": "", **files}.items():
        path = root / "fusionlib" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_circles_through_functions_type_checking_and_packages(tmp_path):
    root = _package(tmp_path, {
        "a.py": "def f():\n    from .b import g\n",                   # inside a function
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n",
        "pkg/__init__.py": "from .inner import x\n",
        "pkg/inner.py": "from ..c import y\nx = 1\n",
        "c.py": "from .pkg.inner import x\ny = 2\n",                  # runs pkg/__init__ too
        "d.py": "from .e import _helper, public\n",
        "e.py": "def _helper(): pass\ndef public(): pass\n",
        "f.py": "from . import _io\nfrom ._io import write\n",      # a private module: allowed
        "_io.py": "def write(): pass\n"})
    graph = import_graph.analyse(root)
    assert graph.circles() == [["fusionlib.a", "fusionlib.b"],
                               ["fusionlib.c", "fusionlib.pkg", "fusionlib.pkg.inner"]]
    assert [(i.source, i.names) for i in graph.underscore_imports()] == [
        ("fusionlib.d", ("_helper", "public"))]
    assert [(m, line) for m, line, _ in graph.function_imports] == [("fusionlib.a", 2)]


def test_the_script_prints_the_counts(tmp_path):
    root = _package(tmp_path, {"a.py": "from .b import x\n", "b.py": "from .a import y\n",
                               "sub/__init__.py": ""})
    done = subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("modules: 4 in all; top level: 2 flat modules, 1 packages (sub/)")
    assert lines[1:3] == ["import circles: 1", "  fusionlib.a <-> fusionlib.b"]
    wrong = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nowhere")],
                           capture_output=True, text=True)
    assert wrong.returncode == 2 and "has no fusionlib/__init__.py" in wrong.stderr
