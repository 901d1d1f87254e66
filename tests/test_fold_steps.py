"""run_fold is its named steps: called one by one (as notebooks/explore.ipynb calls them) they
give the fold's fused probabilities, baselines and decisions exactly; and the two small public
steps the notebook needs (head_seed, validation_proba).

Fake cached branch outputs on a tiny generated cohort: no branch model is trained.
"""

from __future__ import annotations

import numpy as np
import pytest

from fusionlib import experiment
from fusionlib.baselines import fit_baselines
from fusionlib.experiment import (decide_sources, fit_fusion_head, fuse_per_model, head_seed,
                                  run_fold, split_training_rows, validation_proba)
from fusionlib.fusing import fuse_with_missing
from fusionlib.params import validate


@pytest.fixture(scope="module")
def fold_and_outputs(tmp_path_factory):
    from fusionlib.branches import BranchOutput
    from fusionlib.data import load_cohort
    from fusionlib.splits import patient_folds
    from fusionlib.synthetic import generate_cohort

    cohort = load_cohort(generate_cohort(tmp_path_factory.mktemp("c") / "c", n_patients=24,
                                         random_state=2, no_image_fraction=0.3))
    rng = np.random.default_rng(0)
    rf = rng.dirichlet([2, 2, 2], cohort.n_cases)
    img = rng.dirichlet([2, 2, 2], cohort.n_cases)
    img[~cohort.has_modality("thermal_map")] = np.nan
    fold = patient_folds(cohort.y, cohort.groups, 3, 0)[1]
    outputs = {m: BranchOutput(fold.train, fold.test, p[fold.train], p[fold.test])
               for m, p in (("metadata", rf), ("thermal_map", img))}
    return cohort, fold, outputs


@pytest.mark.parametrize("variant", ["trainable", "fixed"])
def test_the_named_steps_give_run_folds_fused_probabilities(fold_and_outputs, variant):
    cohort, fold, outputs = fold_and_outputs
    params = validate({"fusion": {"variant": variant}, "protocol": {"folds": 3, "seed": 4},
                       "head": {"max_epochs": 20, "patience": 5}})
    quiet = lambda *_: None  # noqa: E731

    data = split_training_rows(cohort, params, fold, outputs)
    head = fit_fusion_head(params, data, head_seed(params, fold), quiet)[0]
    # (module attribute: a name starting with test_ would be collected as a test)
    test = experiment.test_inputs(params, fold, outputs)
    proba = fuse_per_model(head, test.inputs)
    baselines, baseline_val = fit_baselines(params.data.modalities, data, test.probs, test.inputs)
    sources = {"fused": (proba, validation_proba(head, data)),
               **{name: (baselines[name], baseline_val[name]) for name in baselines}}
    preds, chosen = decide_sources(params.decision.rule, sources, data)

    result = run_fold(cohort, params, fold, outputs, log=quiet)
    np.testing.assert_array_equal(result.case_index, test.rows)
    np.testing.assert_allclose(result.proba, proba, rtol=0, atol=1e-7)
    assert set(result.baselines) == set(baselines)
    for name in baselines:
        np.testing.assert_allclose(result.baselines[name], baselines[name], atol=1e-7)
    for source in sources:
        np.testing.assert_array_equal(result.preds[source][params.decision.rule],
                                      preds[source][params.decision.rule])
    assert result.weights["decision"] == chosen


def test_head_seed_is_the_runs_seed_plus_the_folds_index(fold_and_outputs):
    fold = fold_and_outputs[1]
    assert fold.index == 1
    assert head_seed(validate({"protocol": {"seed": 4}}), fold) == 5
    assert head_seed(validate({}), fold) == 1


def test_validation_proba_fuses_the_inner_validation_rows(fold_and_outputs):
    from dataclasses import replace

    from fusionlib.models import build_fusion_head

    cohort, fold, outputs = fold_and_outputs
    params = validate({"protocol": {"folds": 3}})
    data = split_training_rows(cohort, params, fold, outputs)
    head = build_fusion_head(params.data.modalities, fusion="fixed")
    assert len(data.y_val) > 0
    val = validation_proba(head, data)
    assert val.shape == (len(data.y_val), 3)
    np.testing.assert_allclose(val, fuse_with_missing(head, data.x_val))
    # The fixed head: 0.70 clinical, 0.30 image.
    np.testing.assert_allclose(val, 0.7 * data.x_val[0] + 0.3 * data.x_val[1], atol=1e-6)
    empty = replace(data, x_val=[p[:0] for p in data.x_val], y_val=data.y_val[:0])
    assert validation_proba(head, empty).shape == (0, 3)


def test_replicate_names_its_parts(fold_and_outputs):
    """``replicate`` is one seed's parameters, subsample and outer folds, by name (it once
    returned a 4-tuple read as ``r[1]`` and ``r[3]``)."""
    cohort = fold_and_outputs[0]
    params = validate({"protocol": {"folds": 2, "seeds": [0, 5], "data_percentage": 50}})
    rep = experiment.replicate(cohort, params, 5)
    assert isinstance(rep, experiment.Replicate)
    assert rep.params.protocol.seed == 5 and rep.params.protocol.seeds is None
    assert rep.params == experiment.for_seed(params, 5)
    np.testing.assert_array_equal(rep.rows, experiment.subsample_rows(cohort, rep.params))
    assert rep.cohort.cases["case_id"].tolist() == \
        cohort.cases["case_id"].iloc[rep.rows].tolist()
    assert len(rep.rows) < cohort.n_cases          # half of the patients
    assert len(rep.folds) == 2 and all(f.test.max() < rep.cohort.n_cases for f in rep.folds)
    np.testing.assert_array_equal(np.sort(np.concatenate([f.test for f in rep.folds])),
                                  np.arange(rep.cohort.n_cases))
