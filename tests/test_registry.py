"""One registry type (issue 21): the type itself, and one new entry of each of the six kinds --
fusion variant, metric, clinical model, decision rule, baseline, dataset -- each added with ONE
register call in a test and then usable. Every registration is undone after its test."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.tree import DecisionTreeClassifier

from fusionlib.baselines import BASELINES, Baseline, baseline_sources, fit_baselines
from fusionlib.branches import CLINICAL_MODELS, ClinicalBranch
from fusionlib.branches.clinical import TabularModel
from fusionlib.data import Cohort, case_id
from fusionlib.datasets import DATASETS, Dataset, DataSettings, data_fingerprint, load_dataset
from fusionlib.decision import DECISIONS, DecisionRule, decide, get_decision
from fusionlib.errors import ParamsError
from fusionlib.fusing import FoldData
from fusionlib.fusion import FUSIONS, FusionSpec, get_fusion
from fusionlib.fusion import options as opt
from fusionlib.metrics import confusion_counts
from fusionlib.params import validate
from fusionlib.registry import Registry, UnknownName
from fusionlib.report import paired_comparisons, verdict_sentences, verdict_table
from fusionlib.results import METRICS, ExperimentResult, FoldResult, Metric, load_runs
from fusionlib.synthetic import ensure_default_cohort
from fusionlib.report.study_tables import cross_validate_clinical


@pytest.fixture
def register():
    """``register(registry, entry)``: one register call, undone after the test."""
    added = []

    def _register(registry, entry):
        out = registry.register(entry)
        added.append((registry, registry._name(entry)))
        return out

    yield _register
    for registry, name in reversed(added):
        registry.unregister(name)


# --------------------------------------------------------------------------- the type


def test_a_registry_refuses_a_name_twice_unless_told_to_replace():
    reg = Registry("colour", [SimpleNamespace(name="red"), SimpleNamespace(name="green")])
    with pytest.raises(ValueError, match="colour 'red' is already registered; pass replace=True"):
        reg.register(SimpleNamespace(name="red"))
    blue_red = SimpleNamespace(name="red", summary="new")
    reg.register(blue_red, replace=True)
    assert reg["red"] is blue_red and reg.names() == ["red", "green"]   # replaced in place


def test_an_unknown_name_lists_the_known_ones_with_a_did_you_mean():
    reg = Registry("colour", [SimpleNamespace(name="red"), SimpleNamespace(name="green")])
    with pytest.raises(UnknownName) as err:
        reg["gren"]
    assert str(err.value) == "unknown colour 'gren'; expected one of red, green (did you mean 'green'?)"
    # A KeyError for mapping code, a ValueError for the get_* functions' callers.
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    assert reg.get("gren") is None and "gren" not in reg and {"a": 1} not in reg
    with pytest.raises(ValueError, match="unknown fusion 'trainabel'.*did you mean 'trainable'"):
        get_fusion("trainabel")
    with pytest.raises(ValueError, match="unknown decision rule 'argmx'.*did you mean 'argmax'"):
        get_decision("argmx")


def test_describe_is_written_from_the_entries():
    reg = Registry("colour", [SimpleNamespace(name="red", summary="warm"),
                              SimpleNamespace(name="green", summary="")])
    assert reg.describe() == "`red` (warm), `green`"
    assert reg.describe("one of {choices}; see X") == "one of `red` (warm), `green`; see X"
    reg.register(SimpleNamespace(name="blue", summary="cold"))
    assert reg.describe().endswith("`blue` (cold)")
    # The parameter schema's descriptions (and so docs/params.md) come from the registries.
    from fusionlib.params import params_doc

    doc = params_doc()
    for registry in (FUSIONS, CLINICAL_MODELS, DECISIONS, DATASETS):
        assert all(f"`{name}`" in doc for name in registry), registry.kind


def test_a_registry_is_a_mapping_and_checks_parameter_values():
    reg = Registry("colour", [SimpleNamespace(name="red")])
    assert list(reg) == ["red"] and len(reg) == 1 and dict(reg.items())["red"].name == "red"
    with pytest.raises(ValueError, match="registered as 'blue' is named 'red'"):
        reg["blue"] = reg["red"]
    assert reg.check("red") == "red"
    with pytest.raises(Exception, match="unknown value 'rde'; expected one of red"):
        reg.check("rde")


# --------------------------------------------------------------------------- fusion variant


def test_a_new_fusion_variant_is_one_register_call(register):
    register(FUSIONS, FusionSpec("half_mix", ".fixed:FixedFusion", "w = 0.5",
                                 {"weights": ([0.5, 0.5], opt.weights), "random_state": (0, opt.seed)}))
    params = validate({"fusion": {"variant": "half_mix"}})
    assert params.fusion.variant == "half_mix"
    assert get_fusion("half_mix").check(["metadata", "thermal_map"])[1]["weights"] == [0.5, 0.5]
    with pytest.raises(ParamsError, match="half_mx.*did you mean 'half_mix'"):
        validate({"fusion": {"variant": "half_mx"}})


# --------------------------------------------------------------------------- metric


def _error_rate_from_confusion(conf):
    conf = np.asarray(conf, dtype=float)
    return 1.0 - conf[..., [0, 4, 8]].sum(axis=-1) / conf.sum(axis=-1)


ERROR_RATE = Metric("error_rate", "error rate", "share of wrongly decided cases",
                    higher_is_better=False,
                    compute=lambda y, p, d: float(np.mean(np.asarray(y) != np.asarray(d))),
                    headline=True, of_confusion=_error_rate_from_confusion, margin=0.05)


def _toy_run(folder, fusion: str, quality: float, seed: int):
    """A 2-fold, one-seed run of 120 cases (40 patients) saved by the real writer: with
    probability ``quality`` a case's probabilities point to its true phase."""
    rng = np.random.default_rng(seed)
    params = validate({"name": f"{fusion}_100", "fusion": {"variant": fusion}})
    n = 120
    cases = pd.DataFrame({"case_id": [f"c{i:03d}" for i in range(n)],
                          "patient": [i // 3 for i in range(n)]})
    cohort = SimpleNamespace(n_cases=n, meta={}, cases=cases,
                             has_modality=lambda m: np.ones(n, bool))
    folds = []
    for k, rows in enumerate(np.array_split(np.arange(n), 2)):
        y = (rows * 7) % 3
        proba = rng.dirichlet([1, 1, 1], len(rows))
        right = rng.random(len(rows)) < quality
        proba[right] = 0.1
        proba[right, y[right]] = 0.8
        pred = proba.argmax(axis=1)
        from fusionlib.results import classification_scores

        folds.append(FoldResult(
            k, 0, rows, y, proba, {"metadata": proba, "thermal_map": proba}, {},
            classification_scores(y, proba, pred), {"stage1_val_qwk": 0.5},
            {"rf_share": 0.7, "rf_share_per_class": [0.7, 0.7, 0.7]},
            preds={"fused": {"argmax": pred}}))
    ExperimentResult(params, cohort, folds, {"trainable_fusion_params": 0}).save(folder)
    (folder / "done.json").write_text(json.dumps({"status": "ok"}))


def test_a_new_headline_metric_reaches_the_verdict_and_paired_tables(register, tmp_path):
    register(METRICS, ERROR_RATE)
    _toy_run(tmp_path / "fixed_100", "fixed", 0.3, seed=1)
    _toy_run(tmp_path / "trainable_100", "trainable", 0.9, seed=2)
    runs = load_runs(tmp_path)

    table = verdict_table(runs, n_boot=200)
    row, compare = table.iloc[0], table.attrs["compare"][0]
    assert {"Δerror rate", "Δerror rate interval", "error rate verdict"} <= set(table.columns)
    # Fewer errors: a negative difference, and "better" (its direction honoured).
    assert row["Δerror rate"] < -0.2 and compare["error_rate"]["verdict"] == "better"
    assert compare["error_rate"]["margin"] == 0.05
    assert compare["qwk"]["verdict"] == "better"
    assert "Error rate better: Δerror rate -0." in verdict_sentences(table)[0]

    paired = paired_comparisons(runs, n_boot=200, baselines=False)
    prow = paired.iloc[0]
    assert prow["error rate diff"] < -0.2 and prow["error rate CI high"] < 0
    assert "error rate: better" in prow["verdict"]
    assert prow["QWK diff"] > 0 and "QWK: better" in prow["verdict"]


def test_a_headline_metric_must_say_how_it_is_compared():
    with pytest.raises(ValueError, match="exactly one of of_confusion= or per_case="):
        Metric("bad", "bad", "no pairing", compute=lambda y, p, d: 0.0, headline=True)
    # Its vectorised form agrees with the metric itself; the pairing keeps the direction.
    y, d = [0, 1, 2, 2], [0, 1, 1, 2]
    assert _error_rate_from_confusion(confusion_counts(y, d).ravel()) == pytest.approx(0.25)
    paired = ERROR_RATE.paired
    assert paired.score(y, d) == 0.25 and not paired.higher_is_better and paired.decided


# --------------------------------------------------------------------------- clinical model


@pytest.fixture(scope="module")
def small_cohort():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(40), 3)
    y = rng.choice(3, size=len(patients), p=[0.3, 0.5, 0.2])
    cases = pd.DataFrame({"case_id": [case_id(p, a % 3, 1) for a, p in enumerate(patients)],
                          "patient": patients, "appt": np.arange(len(patients)) % 3, "dfu": 1,
                          "label": y})
    features = pd.DataFrame({"Age": rng.normal(60, 8, len(y)) + 3 * y,
                             "Side (Left:0, Right:1)": pd.Series(
                                 rng.choice(["Left", "Right"], len(y)), dtype="str")})
    return Cohort(cases, features, name="toy")


def test_a_new_clinical_model_by_registering_it(register, small_cohort):
    register(CLINICAL_MODELS, TabularModel("shallow_tree", "sklearn.tree:DecisionTreeClassifier",
                                           {"max_depth": 2}, summary="a depth-2 tree"))
    params = validate({"clinical": {"model": "shallow_tree", "options": {"min_samples_leaf": 3}}})
    branch = ClinicalBranch.from_settings(params.clinical)
    oof, scores = cross_validate_clinical(small_cohort, branch, n_splits=3)
    assert oof.shape == (small_cohort.n_cases, 3) and 0 <= scores["accuracy"] <= 1
    assert branch.settings()["branch"] == "clinical_shallow_tree"
    assert branch.settings()["max_depth"] == 2
    with pytest.raises(ParamsError, match="'n_estimators' is no option of DecisionTreeClassifier"):
        validate({"clinical": {"model": "shallow_tree", "options": {"n_estimators": 3}}})


def test_a_clinical_model_as_module_class_from_a_parameter_file(small_cohort):
    params = validate({"clinical": {"model": "sklearn.tree:DecisionTreeClassifier",
                                    "options": {"max_depth": 3}}})
    branch = ClinicalBranch.from_settings(params.clinical)
    oof, _ = cross_validate_clinical(small_cohort, branch, n_splits=3)
    assert np.allclose(oof.sum(axis=1), 1)
    assert branch.settings()["branch"] == "clinical_sklearn.tree:DecisionTreeClassifier"
    for model, message in (
            ("sklearn.tree:DecisionTreeClassifer", "has no 'DecisionTreeClassifer' "
                                                   "\\(did you mean 'DecisionTreeClassifier'\\?\\)"),
            ("no_such_module:Tree", "cannot import module 'no_such_module'"),
            ("sklearn.svm:LinearSVC", "is no scikit-learn-compatible classifier: it lacks "
                                      "predict_proba"),
            ("sklearn.tree:DecisionTreeClassifier()", "expected an estimator as 'module:Class'")):
        with pytest.raises(ParamsError, match=f"key 'clinical.model': .*{message}"):
            validate({"clinical": {"model": model}})
    with pytest.raises(ParamsError, match="'depth' is no option of DecisionTreeClassifier"):
        validate({"clinical": {"model": "sklearn.tree:DecisionTreeClassifier",
                               "options": {"depth": 3}}})


class _Majority(ClassifierMixin, BaseEstimator):
    """A classifier defined in a test (not importable by path): the training prevalence."""

    def __init__(self, smoothing=1.0):
        self.smoothing = smoothing

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        counts = np.array([(y == c).sum() for c in self.classes_]) + self.smoothing
        self.prior_ = counts / counts.sum()
        return self

    def predict_proba(self, X):
        return np.tile(self.prior_, (len(X), 1))


def test_a_clinical_model_as_an_estimator_object(small_cohort):
    params = validate({"clinical": {"model": _Majority(smoothing=2.0)}})
    branch = ClinicalBranch.from_settings(params.clinical)
    oof, _ = cross_validate_clinical(small_cohort, branch, n_splits=3)
    assert np.allclose(oof, oof[0], atol=0.2)          # every case gets (about) the prior
    assert params.clinical.model.__dict__ == {"smoothing": 2.0}   # fitted clones, not it
    # Keyed by class path and options: another object never shares its cache entries.
    key = branch.settings()
    assert key["branch"] == f"clinical_{__name__}:_Majority" and key["smoothing"] == 2.0
    assert ClinicalBranch(_Majority(smoothing=1.0)).settings() != ClinicalBranch(
        _Majority(smoothing=2.0)).settings()
    tree = ClinicalBranch(DecisionTreeClassifier(max_depth=2)).settings()
    assert tree["branch"].endswith(":DecisionTreeClassifier") and tree["max_depth"] == 2
    json.dumps(key)                                    # the cached entry's info is JSON
    with pytest.raises(ParamsError, match="lacks predict_proba"):
        validate({"clinical": {"model": SimpleNamespace(fit=lambda *a: None,
                                                        get_params=dict, set_params=dict)}})
    with pytest.raises(ParamsError, match="not the class _Majority"):
        validate({"clinical": {"model": _Majority}})


# --------------------------------------------------------------------------- decision rule


class _Humble(DecisionRule):
    """Always the middle phase (P): a rule of its own for this test."""

    name = "humble"
    summary = "always P"

    def predict(self, proba):
        return np.ones(len(proba), dtype=int)


def test_a_new_decision_rule_is_one_register_call(register):
    register(DECISIONS, _Humble)
    assert validate({"decision": {"rule": "humble"}}).decision.rule == "humble"
    proba = np.array([[0.9, 0.05, 0.05], [np.nan, np.nan, np.nan]])
    assert decide(proba, get_decision("humble").fit([0, 1, 2])).tolist() == [1, -1]
    assert "`humble` (always P)" in DECISIONS.describe()


# --------------------------------------------------------------------------- baseline


def test_a_new_baseline_is_one_register_call(register):
    def uniform(modalities, data, test_probs, test_inputs):
        return {"uniform": (np.full((len(test_probs[0]), 3), 1 / 3),
                            np.full((len(data.y_val), 3), 1 / 3))}

    register(BASELINES, Baseline("uniform", uniform, lambda modalities: ["uniform"]))
    rng = np.random.default_rng(0)
    x = [rng.dirichlet([1, 1, 1], 30), rng.dirichlet([1, 1, 1], 30)]
    y = np.arange(30) % 3
    data = FoldData(np.arange(20), np.arange(20, 30), [p[:20] for p in x], y[:20],
                    [p[20:] for p in x], y[20:], np.arange(10), y)
    test, validation = fit_baselines(["metadata", "thermal_map"], data, x, [x])
    assert list(test) == ["stacking", "metadata_only", "thermal_map_only", "uniform"]
    assert validation["uniform"].shape == (10, 3)
    assert baseline_sources(["metadata", "thermal_map"])[-1] == "uniform"


# --------------------------------------------------------------------------- dataset


def test_a_new_dataset_is_one_register_call(register):
    register(DATASETS, Dataset("default_copy", "the default synthetic cohort under another name",
                               lambda data: ensure_default_cohort(), cohort_name="copy"))
    data = validate({"data": {"dataset": "default_copy"}}).data
    cohort = load_dataset(data)
    assert cohort.name == "copy" and cohort.n_cases == load_dataset(DataSettings()).n_cases
    assert len(data_fingerprint(data)) == 16
    assert data_fingerprint(data) != data_fingerprint(DataSettings())   # named by its dataset
    with pytest.raises(ParamsError, match="applies to the `synthetic` dataset only, not "
                                          "'default_copy'"):
        validate({"data": {"dataset": "default_copy", "n_patients": 50}})
