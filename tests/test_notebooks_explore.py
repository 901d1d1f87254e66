"""notebooks/explore.ipynb walks one fold through run_fold's own named steps (it defines no
function of its own), runs end to end with small parameters, shows the learned weights and
checks that run_fold gives the same fused probabilities."""

import ast
import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"
SMALL = {"protocol": {"data_percentage": 30.0, "folds": 3},
         "image": {"epochs": 2, "inner_folds": 2},
         "clinical": {"options": {"n_estimators": 30}},
         "head": {"max_epochs": 200},
         "n_samples": 3}
# The steps of fusionlib.experiment.run_fold (and of run_experiment before it), in order.
STEPS = ["load_dataset", "replicate", "build_branches", "branch_outputs", "split_training_rows",
         "fit_fusion_head", "test_inputs", "fuse_per_model", "fit_baselines", "decide_sources",
         "explain_weights", "run_fold"]


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_explore_has_tagged_parameters():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for key in [*SMALL, "data", "fusion", "fold_index"]:
        assert f"{key} =" in tagged[0].source, key
    # The sections of the experiment's schema, none of the old flat names.
    namespace = {}
    exec(tagged[0].source, namespace)
    from fusionlib.params import LEGACY_KEYS, validate

    sections = {k: v for k, v in namespace.items() if isinstance(v, dict) and k != "__builtins__"}
    validate({"name": namespace["name"], **sections})
    assert not set(namespace) & set(LEGACY_KEYS) - {"fusion"}


def test_explore_calls_the_library_steps_and_defines_nothing():
    """No function of its own (a copy of library code would drift): every step is a call."""
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    code = _code(nb)
    assert not any("def " in source for source in code)
    assert not any("lambda" in source for source in code)
    calls = []
    for source in code:
        tree = ast.parse("\n".join(line for line in source.splitlines()
                                   if not line.startswith("%")))
        calls += [n.func.id for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    missing = [step for step in STEPS if step not in calls]
    assert not missing, missing
    first = [calls.index(step) for step in STEPS]
    assert first == sorted(first), "the steps are called out of run_fold's order"
    joined = "\n".join(code)
    assert "from_notebook(globals()" in joined
    assert "np.allclose(result.proba, proba)" in joined


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
    stdout = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")
    # The small parameters were used: 3 folds of 30% of the patients, 2 image epochs.
    assert "30% of patients, 3 folds; image epochs 2" in stdout
    weights = [c for c in nb.cells if "weights" in c.metadata.get("tags", [])]
    assert weights, "no cell tagged 'weights'"
    pngs = [o for o in weights[0].outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 2, "the weights cell shows no plots"
    text = "".join(o.get("text", "") for o in weights[0].outputs if o.get("output_type") == "stream")
    assert "share" in text and "influence" in text
    all_pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if "image/png" in o.get("data", {})]
    assert len(all_pngs) >= 5  # class mix, thermal maps, training curve, confusion, weights
    # The baselines table beside the fused scores, and run_fold's own check passed.
    html = "".join(o["data"]["text/html"] for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if "text/html" in o.get("data", {}))
    for row in ("fused", "fixed mix", "stacking", "metadata_only"):
        assert f">{row}<" in html, row
    assert "run_fold matches the steps" in stdout


def test_explore_is_committed_clean():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
