"""Experiment parameters: a typed schema, validated before any kernel starts.

One YAML file under ``params/`` describes one experiment. Every key is
checked here: an unknown key (with a did-you-mean), a wrong type or an
out-of-range value raises :class:`~fusionlib.errors.ParamsError` naming the
file and the key. The same names are the ``parameters`` cell of
``notebooks/experiment.ipynb``, so ``papermill -f params/x.yaml`` works too.
"""

from __future__ import annotations

import ast
import difflib
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .data import MODALITIES
from .errors import ParamsError
from .splits import SAMPLING_STRATEGIES

DATASETS = ("synthetic", "real", "real_synthetic_images")
MISSING_CASES = ("use", "exclude")
PENALTY_RULES = ("one_se", "min")
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
"""A usable run name: one folder name under runs/, short enough for every file system.

It cannot start with a dot, so it never collides with the runner's own ``.tmp-*``,
``.old-*`` folders; ``tmp-*`` and ``.failed`` are refused too, as older runners used
them for temporary folders and failed notebooks (``<name>.failed.ipynb``).
"""
NOTEBOOK_ONLY = ("output_dir", "cache_dir")
"""Parameters of the experiment notebook that are not experiment settings."""
REAL_DATA_ENV = "FUSIONLIB_DFU_DIR"
"""Environment variable naming the real data folder when ``data_dir`` is not given."""


@dataclass
class ExperimentParams:
    """All settings of one experiment (see docs/params.md for each key)."""

    name: str = "experiment"
    description: str = ""
    dataset: str = "synthetic"
    preset: str = "dfu_like"
    cohort_seed: int = 0
    data_dir: str | None = None
    image_signal: list = field(default_factory=lambda: [0.9, 0.9, 1.3])
    modalities: list = field(default_factory=lambda: ["metadata", "thermal_map"])
    fusion: str = "trainable"
    fusion_options: dict = field(default_factory=dict)
    data_percentage: float = 100.0
    folds: int = 5
    repeats: int = 1
    seed: int = 0
    sampling: str = "none"
    missing_cases: str = "use"
    image_size: int = 32
    crop_margin: float = 0.15
    backbone: str = "small_cnn"
    backbone_weights: str | None = None
    image_epochs: int = 25
    image_patience: int = 6
    image_inner_folds: int = 2
    rf_trees: int = 200
    rf_min_samples_leaf: int = 10
    rf_inner_folds: int = 5
    head_loss: str = "cross_entropy"
    head_class_weight: str | None = None
    head_optimizer: str = "sgd"
    head_learning_rate: float = 1.0
    head_max_epochs: int = 3000
    head_patience: int = 300
    head_monitor: str = "val_loss"
    head_penalty: list = field(default_factory=lambda: [0.0, 0.003, 0.01, 0.03])
    head_penalty_kind: str = "group"
    head_penalty_rule: str = "one_se"
    decision: str = "argmax"
    validation_fraction: float = 0.2
    stage2: bool = False
    stage2_epochs: int = 10
    stage2_learning_rate: float = 1e-4

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved_data_dir(self) -> Path | None:
        """The real data folder: ``data_dir``, else $FUSIONLIB_DFU_DIR, else ../shared/data/dfu.

        For ``real_synthetic_images`` this is where the real clinical table is read from.
        """
        if self.dataset not in ("real", "real_synthetic_images"):
            return Path(self.data_dir) if self.data_dir else None
        return Path(self.data_dir or os.environ.get(REAL_DATA_ENV) or "../shared/data/dfu")


_TYPES = {f.name: f.type for f in fields(ExperimentParams)}


def _fail(source, key, message):
    where = f"key {key!r}: " if key else ""
    raise ParamsError(f"{where}{message}", source)


def _check_type(source, key, value, expected):
    kinds = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,),
             "dict": (dict,), "str | None": (str, type(None))}
    allowed = kinds[expected]
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if not ok:
        _fail(source, key, f"expected {expected.replace(' | None', ' or null')}, "
                           f"got {type(value).__name__} {value!r}")


def _choice(source, key, value, options):
    if value not in options:
        hint = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
        _fail(source, key, f"unknown value {value!r}; expected one of {', '.join(map(str, options))}"
                           + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _finite(value) -> bool:
    """True for a finite number; an int too large for a float counts as not finite."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_finite_leaves(source, key, value):
    """ParamsError for any inf/nan float inside a (nested) mapping or list."""
    if isinstance(value, float) and not _finite(value):
        _fail(source, key, f"must hold finite numbers only, got {value!r}")
    if isinstance(value, dict):
        for sub in value.values():
            _check_finite_leaves(source, key, sub)
    elif isinstance(value, list):
        for sub in value:
            _check_finite_leaves(source, key, sub)


def check_run_name(name: str, source: str | Path = "<params>") -> None:
    """Raise ParamsError unless ``name`` is a usable run folder name (:data:`RUN_NAME_RE`).

    The one rule shared by ``fusionlib validate``, ``fusionlib run`` and the notebook.
    """
    if not isinstance(name, str) or not RUN_NAME_RE.match(name) or name.lower().startswith("tmp-") \
            or ".failed" in name.lower():
        shown = name if not isinstance(name, str) or len(name) <= 60 else \
            f"{name[:40]}... ({len(name)} characters)"
        _fail(source, "name", f"{shown!r} is not a usable run name: 1 to 100 letters, digits, "
                              "'_', '-' or '.', starting with a letter or digit, not starting "
                              "with 'tmp-' and not containing '.failed'")


def validate(raw: dict, source: str | Path = "<params>") -> ExperimentParams:
    """Check a parameter mapping against the schema and return typed parameters."""
    if not isinstance(raw, dict):
        raise ParamsError(f"expected a mapping of parameter names to values, got "
                          f"{type(raw).__name__}", source)
    for key in raw:
        if key not in _TYPES:
            hint = difflib.get_close_matches(str(key), list(_TYPES), n=1)
            _fail(source, key, "unknown parameter" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    for key, value in raw.items():
        _check_type(source, key, value, _TYPES[key])
        # YAML's .inf/.nan are floats: range checks like "> 0" let inf through, and an
        # infinite learning rate silently leaves the head at its start.
        if _TYPES[key] == "float" and not _finite(value):
            _fail(source, key, f"must be a finite number, got {value!r}")
    _check_finite_leaves(source, "fusion_options", raw.get("fusion_options", {}))
    params = ExperimentParams(**raw)
    check_run_name(params.name, source)
    params.data_percentage = float(params.data_percentage)
    _choice(source, "dataset", params.dataset, DATASETS)
    _choice(source, "sampling", params.sampling, SAMPLING_STRATEGIES)
    _choice(source, "missing_cases", params.missing_cases, MISSING_CASES)
    from .synthetic import PRESETS
    from .fusion import FUSIONS
    from .training import LOSSES, MONITORS, OPTIMIZERS, PENALTIES

    _choice(source, "fusion", params.fusion, list(FUSIONS))
    _choice(source, "head_loss", params.head_loss, LOSSES)
    _choice(source, "head_optimizer", params.head_optimizer, OPTIMIZERS)
    _choice(source, "head_monitor", params.head_monitor, MONITORS)
    _choice(source, "head_class_weight", params.head_class_weight, [None, "balanced"])
    if params.dataset == "synthetic":
        _choice(source, "preset", params.preset, list(PRESETS))
    if not 0 < params.data_percentage <= 100:
        _fail(source, "data_percentage", f"must be in (0, 100], got {params.data_percentage:g}")
    if params.folds < 2:
        _fail(source, "folds", f"must be at least 2, got {params.folds}")
    for key, low in (("repeats", 1), ("image_size", 8), ("image_epochs", 1), ("image_patience", 1),
                     ("image_inner_folds", 2), ("rf_trees", 1), ("rf_min_samples_leaf", 1),
                     ("rf_inner_folds", 2), ("head_max_epochs", 1), ("head_patience", 1),
                     ("stage2_epochs", 1), ("seed", 0), ("cohort_seed", 0)):
        if getattr(params, key) < low:
            _fail(source, key, f"must be at least {low}, got {getattr(params, key)}")
    for key in ("crop_margin",):
        if not 0 <= getattr(params, key) <= 1:
            _fail(source, key, f"must be in [0, 1], got {getattr(params, key)}")
    if not 0 < params.validation_fraction < 0.5:
        _fail(source, "validation_fraction", f"must be in (0, 0.5), got {params.validation_fraction}")
    if not params.head_penalty or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                      or not _finite(v) or v < 0 for v in params.head_penalty):
        _fail(source, "head_penalty", f"must be a non-empty list of numbers >= 0, got {params.head_penalty}")
    _choice(source, "head_penalty_kind", params.head_penalty_kind, PENALTIES)
    _choice(source, "head_penalty_rule", params.head_penalty_rule, PENALTY_RULES)
    from .decision import DECISIONS

    _choice(source, "decision", params.decision, list(DECISIONS))
    for key in ("head_learning_rate", "stage2_learning_rate"):
        if not getattr(params, key) > 0:
            _fail(source, key, f"must be > 0, got {getattr(params, key)}")
    signal = params.image_signal
    if len(signal) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                   and _finite(v) and v >= 0 for v in signal):
        _fail(source, "image_signal", f"expected three non-negative numbers (I, P, R), got {signal!r}")
    params.image_signal = [float(v) for v in signal]
    if not params.modalities:
        _fail(source, "modalities", "must name at least one modality")
    for m in params.modalities:
        _choice(source, "modalities", m, ["metadata", *MODALITIES])
    if len(set(params.modalities)) != len(params.modalities):
        _fail(source, "modalities", f"lists a modality twice: {params.modalities}")
    if params.modalities[0] != "metadata" and "metadata" in params.modalities:
        _fail(source, "modalities", "'metadata' must come first when present")
    if len(params.modalities) < 2 and params.fusion != "fixed":
        _fail(source, "fusion", "a single modality has nothing to fuse; use fusion: fixed")
    return params


def load_params(path: str | Path) -> ExperimentParams:
    """Read and validate one YAML parameter file; ``name`` defaults to the file's stem."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ParamsError("parameter file not found", path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"not valid YAML{where}: {getattr(err, 'problem', err)}", path) from None
    except UnicodeDecodeError:
        raise ParamsError("not a UTF-8 text file", path) from None
    if raw is None:
        raise ParamsError("parameter file is empty", path)
    if isinstance(raw, dict):
        raw.setdefault("name", path.stem)
    return validate(raw, path)


def _assigned_names(source: str) -> list[str]:
    """Names assigned at the top level of a cell's source (papermill's cells are plain assignments)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def injected_names(namespace: dict) -> list[str]:
    """The names set by papermill's injected-parameters cell, read from IPython's input history.

    Papermill writes that cell as ``# Parameters`` followed by one assignment per
    parameter and runs it right after the notebook's own parameters cell; outside
    papermill (JupyterLab) there is none and this returns ``[]``.
    """
    for source in reversed(list(namespace.get("_ih") or [])[:-1]):
        if str(source).split("\n", 1)[0].strip() == "# Parameters":
            return _assigned_names(str(source))
    return []


def from_notebook(namespace: dict, injected: list[str] | None = None,
                  source: str = "notebook parameters") -> ExperimentParams:
    """Validated parameters from a notebook's globals.

    Every :class:`ExperimentParams` field found in ``namespace`` is used (the schema
    is read here, so new keys need no notebook change). Names injected by papermill
    (``injected``, default :func:`injected_names`) that are neither schema fields nor
    the notebook's own :data:`NOTEBOOK_ONLY` raise ParamsError with a did-you-mean,
    as an unknown key in a parameter file does (``-p foldz 2`` must not run 5 folds).
    """
    injected = injected_names(namespace) if injected is None else list(injected)
    known = [f.name for f in fields(ExperimentParams)]
    for name in injected:
        if name not in known and name not in NOTEBOOK_ONLY:
            hint = difflib.get_close_matches(name, known + list(NOTEBOOK_ONLY), n=1)
            _fail(source, name, "unknown parameter" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return validate({name: namespace[name] for name in known if name in namespace}, source=source)
