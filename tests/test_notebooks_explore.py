"""notebooks/explore.ipynb runs end to end with small parameters and shows the learned weights."""

import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"
SMALL = {"data_percentage": 30.0, "n_folds": 3, "image_epochs": 2, "image_inner_folds": 2,
         "rf_trees": 30, "head_max_epochs": 200, "n_samples": 3}


def test_explore_has_tagged_parameters():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for key in SMALL:
        assert f"{key} =" in tagged[0].source, key


@pytest.mark.slow
def test_explore_notebook_runs(tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "explore.ipynb"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters=SMALL, cwd=str(NOTEBOOK.parent),
                               progress_bar=False, kernel_name="python3")
    nb = nbformat.read(str(out), as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    weights = [c for c in nb.cells if "weights" in c.metadata.get("tags", [])]
    assert weights, "no cell tagged 'weights'"
    pngs = [o for o in weights[0].outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 2, "the weights cell shows no plots"
    text = "".join(o.get("text", "") for o in weights[0].outputs if o.get("output_type") == "stream")
    assert "effective RF share" in text
    all_pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if "image/png" in o.get("data", {})]
    assert len(all_pngs) >= 5  # class mix, thermal maps, training curve, confusion, weights
