"""notebooks/experiment.ipynb: its parameters cell, and direct execution with papermill."""

import json
import re
import subprocess
import sys
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
    """One assignment per section, generated from the schema (`python -m fusionlib.params`)."""
    from fusionlib.params import parameters_cell

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert _parameters_cell(nb).source == parameters_cell(), \
        "the parameters cell is stale: run `python -m fusionlib.params`"
    namespace = {}
    exec(_parameters_cell(nb).source, namespace)
    names = {k for k in namespace if not k.startswith("__")}
    schema = set(ExperimentParams.model_fields)
    assert names == schema | {"output_dir", "cache_dir"}
    defaults = ExperimentParams().to_dict()
    for name in schema:
        assert namespace[name] == defaults[name], name
    assert namespace["output_dir"] is None and namespace["cache_dir"] == ".cache"
    for cell in nb.cells:                   # committed clean
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow
def test_direct_papermill_from_the_notebooks_folder(tmp_path):
    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump({"name": "nb_tiny", "fusion": {"variant": "convex"},
                                      "protocol": {"data_percentage": 30, "folds": 3},
                                      "image": {"inner_folds": 2},
                                      "clinical": {"options": {"n_estimators": 20}},
                                      "head": {"max_epochs": 50}}))
    out_nb, out_dir = tmp_path / "out.ipynb", tmp_path / "result"
    # cwd notebooks/ as in JupyterLab; -p overrides win over -f.
    proc = subprocess.run([PAPERMILL, "experiment.ipynb", str(out_nb), "-f", str(params),
                           "-y", "protocol: {data_percentage: 30, folds: 2}",
                           "-y", "image: {inner_folds: 2, epochs: 2}",
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
    assert len(images) >= 2                                 # confusion matrix, clinical share
    # Each fold's learned weights as a coloured table, side by side in the notebook.
    [weights] = [h for h in html if 'class="fl-heatmaps"' in h]
    assert weights.count('<table class="fl-heat">') == 2 and "display:flex" in weights
    assert "<caption>s0 fold 0</caption>" in weights and "background:rgb(" in weights
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
    assert {"clinical_share", "clinical_share_I"} <= set(metrics["folds"][0])
    assert (tmp_path / "cache" / "branches").is_dir()


def test_unknown_injected_parameter_fails_with_did_you_mean(tmp_path):
    """`papermill ... -p foldz 2` used to run the default 5 folds and exit 0; a flat name of
    the old schema (`-p folds 2`) says where it moved instead of running 5 folds.

    One real papermill run: the notebook checks what papermill injected. The words for every
    other injected name (`-p protocl 2`, ...) are fusionlib.params.from_notebook's, checked
    without a kernel in test_from_notebook_reads_the_schema_and_papermills_injected_cell."""
    out_nb = tmp_path / "out.ipynb"
    proc = subprocess.run([PAPERMILL, str(NOTEBOOK), str(out_nb), "-p", "folds", "2",
                           "-p", "output_dir", str(tmp_path / "result"), "--no-progress-bar"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "ParamsError" in proc.stderr
    assert "key 'folds': moved: write protocol.folds" in proc.stderr
    assert not (tmp_path / "result").exists()


def test_from_notebook_reads_the_schema_and_papermills_injected_cell():
    from fusionlib.errors import ParamsError
    from fusionlib.params import NOTEBOOK_ONLY, from_notebook, injected_names

    schema = list(ExperimentParams.model_fields)
    # Every top-level name (including any section added later) and the notebook's own names.
    history = ["", "# Parameters (defaults)\nprotocol = {}\n",
               "# Parameters\n" + "".join(f"{n} = None\n" for n in [*schema, *NOTEBOOK_ONLY]), "cell"]
    assert injected_names({"_ih": history}) == [*schema, *NOTEBOOK_ONLY]
    params = from_notebook({"_ih": history[:2] + ["# Parameters\nprotocol = {'folds': 3}\n", "cell"],
                            "protocol": {"folds": 3}})
    assert params.protocol.folds == 3 and params.protocol.seed == 0
    with pytest.raises(ParamsError, match=r"key 'protocl': unknown parameter \(did you mean "
                                          r"'protocol'\?\)"):
        from_notebook({"_ih": ["", "# Parameters\nprotocl = {}\n", "cell"], "protocl": {}})
    # A flat name of the old schema (a stale papermill command line) says where it moved.
    with pytest.raises(ParamsError, match=r"key 'head_patience': moved: write head.patience "):
        from_notebook({"_ih": ["", "# Parameters\nhead_patience = 3\n", "cell"], "head_patience": 3})
    with pytest.raises(ParamsError, match=r"key 'folds': moved: write protocol.folds "):
        from_notebook({"_ih": ["", "# Parameters\nfolds = 2\n", "cell"], "folds": 2})
    # A name injected as a string (`-p protocl 2`) is refused as well as one set to a mapping.
    with pytest.raises(ParamsError, match=r"key 'protocl': unknown parameter \(did you mean "
                                          r"'protocol'\?\)"):
        from_notebook({"_ih": ["", "# Parameters\nprotocl = 2\n", "cell"], "protocl": 2})
    with pytest.raises(ParamsError, match=r"key 'head.patiense': unknown parameter \(did you mean "
                                          r"'patience'\?\)"):
        from_notebook({"head": {"patiense": 3}}, injected=[])
    # A near miss of a flat name (`-p foldz 2`) suggests it and says how to set it now.
    with pytest.raises(ParamsError, match=r"key 'foldz': unknown parameter \(did you mean 'folds'\? "
                                          r"it is protocol.folds now: -y \"protocol: \{folds: "):
        from_notebook({"foldz": 2}, injected=["foldz"])
    # JupyterLab: no injected cell, nothing to check beyond the schema.
    assert injected_names({"_ih": ["", "x = 1", "cell"]}) == []
    # A notebook's own parameters (explore.ipynb's fold_index) are allowed where it names them.
    explore = {"_ih": ["", "# Parameters\nfold_index = 2\nprotocol = {'folds': 3}\n", "cell"],
               "fold_index": 2, "protocol": {"folds": 3}}
    assert from_notebook(explore, own=("fold_index", "n_samples")).protocol.folds == 3
    with pytest.raises(ParamsError, match=r"key 'fold_index': unknown parameter"):
        from_notebook(explore)
    with pytest.raises(ParamsError, match=r"key 'fold_indx': unknown parameter \(did you mean "
                                          r"'fold_index'\?\)"):
        from_notebook({"fold_indx": 2}, injected=["fold_indx"], own=("fold_index",))


def test_params_doc_is_generated_from_the_schema():
    from fusionlib.params import SECTIONS, params_doc

    text = (REPO / "docs" / "params.md").read_text(encoding="utf-8")
    assert text == params_doc(), "docs/params.md is stale: run `python -m fusionlib.params`"
    for name, model in SECTIONS.items():
        for key, info in model.model_fields.items():
            assert info.description, f"{name}.{key} has no description"
            assert f"| `{name}.{key}` |" in text


def test_notebook_imports_nothing_from_the_runner():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any("fusionlib.running" in c.source for c in nb.cells)
