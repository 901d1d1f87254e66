"""notebooks/experiment.ipynb: its parameters cell, and direct execution with papermill."""

import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import nbformat
import pytest
import yaml

from fusionlib.params import ExperimentParams

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "experiment.ipynb"
PAPERMILL = str(Path(sys.executable).parent / "papermill")


def _parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    return cells[0]


def test_parameters_cell_holds_every_field_with_its_default():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    namespace = {}
    exec(_parameters_cell(nb).source, namespace)
    names = {k for k in namespace if not k.startswith("__")}
    schema = {f.name for f in fields(ExperimentParams)}
    assert names == schema | {"output_dir", "cache_dir"}
    defaults = ExperimentParams()
    for name in schema:
        assert namespace[name] == getattr(defaults, name), name
    assert namespace["output_dir"] is None and namespace["cache_dir"] == ".cache"
    for cell in nb.cells:                   # committed clean
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow
def test_direct_papermill_from_the_notebooks_folder(tmp_path):
    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump({"name": "nb_tiny", "fusion": "convex", "data_percentage": 30,
                                      "folds": 3, "image_inner_folds": 2, "rf_trees": 20,
                                      "head_max_epochs": 50}))
    out_nb, out_dir = tmp_path / "out.ipynb", tmp_path / "result"
    # cwd notebooks/ as in JupyterLab; -p overrides win over -f.
    proc = subprocess.run([PAPERMILL, "experiment.ipynb", str(out_nb), "-f", str(params),
                           "-p", "folds", "2", "-p", "image_epochs", "2",
                           "-p", "cache_dir", str(tmp_path / "cache"),
                           "-p", "output_dir", str(out_dir), "--no-progress-bar"],
                          cwd=REPO / "notebooks", capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    nb = nbformat.read(out_nb, as_version=4)
    html = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code"
            for o in c.outputs if "text/html" in o.get("data", {})]
    table = next(h for h in html if "stage1_val_qwk" in h)
    for column in ("qwk", "accuracy", "macro_f1", "f1_I", "f1_P", "f1_R", "thermal_map_val_qwk",
                   "stage1_best_epoch"):
        assert f">{column}<" in table, column
    assert table.count("<tr") >= 3                          # header + 2 folds
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2                                 # confusion matrix, weights
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    # Every figure has alt text (nbconvert warns about images without it in the report).
    figures = [o["data"]["text/html"] for o in images if "text/html" in o["data"]]
    assert len(figures) == len(images) and all('<img alt="' in f for f in figures)
    # The images the loader dropped are on screen, one line (0 when none or not recorded).
    stdout = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                     if o.get("name") == "stdout")
    assert re.search(r"^dropped images: \d+", stdout, re.M), stdout

    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["summary"]["name"] == "nb_tiny" and metrics["summary"]["n_folds"] == 2
    assert metrics["summary"]["fusion"] == "convex"
    assert {"rf_share", "rf_share_I"} <= set(metrics["folds"][0])
    assert (tmp_path / "cache" / "branches").is_dir()


def test_unknown_injected_parameter_fails_with_did_you_mean(tmp_path):
    """`papermill ... -p foldz 2` used to run the default 5 folds and exit 0."""
    out_nb = tmp_path / "out.ipynb"
    proc = subprocess.run([PAPERMILL, str(NOTEBOOK), str(out_nb), "-p", "foldz", "2",
                           "-p", "output_dir", str(tmp_path / "result"), "--no-progress-bar"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "ParamsError" in proc.stderr
    assert "key 'foldz': unknown parameter (did you mean 'folds'?)" in proc.stderr
    assert not (tmp_path / "result").exists()


def test_from_notebook_reads_the_schema_and_papermills_injected_cell():
    from fusionlib.errors import ParamsError
    from fusionlib.params import NOTEBOOK_ONLY, from_notebook, injected_names

    schema = [f.name for f in fields(ExperimentParams)]
    # Every schema field (including any added later) and the notebook's own names are accepted.
    history = ["", "# Parameters (defaults)\nfolds = 5\n",
               "# Parameters\n" + "".join(f"{n} = None\n" for n in [*schema, *NOTEBOOK_ONLY]), "cell"]
    assert injected_names({"_ih": history}) == [*schema, *NOTEBOOK_ONLY]
    params = from_notebook({"_ih": history[:2] + ["# Parameters\nfolds = 3\n", "cell"], "folds": 3})
    assert params.folds == 3
    with pytest.raises(ParamsError, match=r"key 'head_patiense': unknown parameter \(did you mean "
                                          r"'head_patience'\?\)"):
        from_notebook({"_ih": ["", "# Parameters\nhead_patiense = 3\n", "cell"], "head_patiense": 3})
    # JupyterLab: no injected cell, nothing to check beyond the schema.
    assert injected_names({"_ih": ["", "x = 1", "cell"]}) == []
