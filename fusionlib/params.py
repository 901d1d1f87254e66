"""Experiment parameters: sections owned by the components, composed and validated here.

One YAML file under ``params/`` describes one experiment::

    name: trainable_100
    data:     {dataset: synthetic, modalities: [metadata, thermal_map]}
    clinical: {model: random_forest, options: {n_estimators: 200}}
    fusion:   {variant: trainable}
    head:     {penalty_rule: min}
    protocol: {data_percentage: 100, folds: 5}

Each section is a pydantic model declared by the component that uses it (see
:data:`SECTIONS`); a key left out keeps its default. Every problem raises
:class:`~fusionlib.errors.ParamsError` as one line naming the file and the dotted key
(``head.learning_rate``), with a did-you-mean for unknown keys; a key of the old flat
schema (``rf_trees``) gets a line saying where it moved. The notebook's ``parameters``
cell (one assignment per section) and docs/params.md are generated from this schema
(``python -m fusionlib.params``; tests check both are current). Validating imports no
TensorFlow.
"""

from __future__ import annotations

import ast
import difflib
import errno
import functools
import re
import stat
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from .branches.clinical import ClinicalSettings
from .branches.image import ImageSettings
from .datasets import DataSettings
from .decision import DecisionSettings
from .errors import ParamsError
from .fusion.options import CLINICAL
from .fusion.settings import FusionSettings
from .head import HeadSettings
from .settings import Settings, clip, did_you_mean, shown
from .splits import ProtocolSettings
from .stage2 import Stage2Settings

RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
"""A usable run name: one folder name under runs/, short enough for every file system.

It cannot start with a dot, so it never collides with the runner's own ``.tmp-*``,
``.old-*`` folders; ``tmp-*`` and ``.failed`` are refused too, as older runners used
them for temporary folders and failed notebooks (``<name>.failed.ipynb``).
"""
NOTEBOOK_ONLY = ("output_dir", "cache_dir")
"""Parameters of the experiment notebook that are not experiment settings."""


class ExperimentParams(Settings):
    """All settings of one experiment: a name, a description and one section per component."""

    name: str = Field("experiment", description=(
        "run folder name (`runs/<name>/`; default: the file's stem): 1-100 letters, digits, "
        "`_`, `-`, `.`, starting with a letter or digit, not `tmp-*`, no `.failed`"))
    description: str = Field("", description="a line for the report")
    data: DataSettings = Field(default_factory=DataSettings)
    clinical: ClinicalSettings = Field(default_factory=ClinicalSettings)
    image: ImageSettings = Field(default_factory=ImageSettings)
    fusion: FusionSettings = Field(default_factory=FusionSettings)
    head: HeadSettings = Field(default_factory=HeadSettings)
    protocol: ProtocolSettings = Field(default_factory=ProtocolSettings)
    decision: DecisionSettings = Field(default_factory=DecisionSettings)
    stage2: Stage2Settings = Field(default_factory=Stage2Settings)

    def to_dict(self) -> dict:
        return self.model_dump(mode="python")


SECTIONS = {name: info.annotation for name, info in ExperimentParams.model_fields.items()
            if isinstance(info.annotation, type) and issubclass(info.annotation, Settings)}
"""Section name -> its settings class (declared by the component that uses it)."""
TOP_LEVEL = [name for name in ExperimentParams.model_fields if name not in SECTIONS]

LEGACY_KEYS = {
    **{k: f"data.{k}" for k in ("dataset", "preset", "cohort_seed", "data_dir", "image_signal",
                                "modalities")},
    "fusion": "fusion.variant", "fusion_options": "fusion.options",
    **{k: f"protocol.{k}" for k in ("data_percentage", "folds", "repeats", "seed", "sampling",
                                    "missing_cases", "validation_fraction")},
    "image_size": "image.size", "crop_margin": "image.crop_margin", "backbone": "image.backbone",
    "backbone_weights": "image.backbone_weights", "image_epochs": "image.epochs",
    "image_patience": "image.patience", "image_inner_folds": "image.inner_folds",
    "rf_trees": "clinical.options.n_estimators",
    "rf_min_samples_leaf": "clinical.options.min_samples_leaf",
    "rf_inner_folds": "clinical.inner_folds",
    **{f"head_{k}": f"head.{k}" for k in ("loss", "class_weight", "optimizer", "learning_rate",
                                          "max_epochs", "patience", "monitor", "penalty",
                                          "penalty_kind", "penalty_rule")},
    "decision": "decision.rule",
    "stage2": "stage2.enabled", "stage2_epochs": "stage2.epochs",
    "stage2_learning_rate": "stage2.learning_rate",
}
"""Key of the flat schema (before the sections) -> its place now, for the migration message."""


MAX_MESSAGE = 1000
"""At most this many characters of a message after the file and key (values are shown cut)."""


def _fail(source, key, message):
    where = f"key {shown(key, 120)}: " if key else ""
    message = str(message)
    if len(message) > MAX_MESSAGE:
        message = f"{message[:MAX_MESSAGE]}... ({len(message)} characters)"
    raise ParamsError(f"{where}{message}", source)


def _legacy(source, key, value):
    """ParamsError saying where a flat-schema key moved, with the YAML to write."""
    path = LEGACY_KEYS[key].split(".")
    example = _yaml_value(value)
    if len(example) > 60:
        example = "..."
    for part in reversed(path[1:]):
        example = "{" + f"{part}: {example}" + "}"
    _fail(source, key, f"moved: write {'.'.join(path)} (`{path[0]}: {example}`); "
                       "the sections are listed in docs/params.md")


def _is_legacy(key, value) -> bool:
    # `fusion`, `decision` and `stage2` are section names now; as a scalar they are the old keys.
    if key in SECTIONS and isinstance(value, dict):
        return False
    return key in LEGACY_KEYS


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


_TYPE_NAMES = {"int_type": "int", "float_type": "float", "string_type": "str", "bool_type": "bool",
               "list_type": "list", "dict_type": "mapping", "model_type": "mapping",
               "model_attributes_type": "mapping", "int_from_float": "int"}


def _model_at(loc) -> type | None:
    """The settings class that holds the last key of ``loc`` (for did-you-mean candidates)."""
    model = ExperimentParams
    for part in loc[:-1]:
        annotation = model.model_fields.get(part).annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, Settings)):
            return None
        model = annotation
    return model


def _one_line(error: dict) -> tuple[str, str]:
    """(dotted key, message) of one pydantic error, in this module's wording."""
    loc = list(error["loc"])
    ctx = error.get("ctx") or {}
    if ctx.get("subkey"):
        loc.append(ctx["subkey"])
    key = ".".join(str(p) for p in loc if not isinstance(p, int))
    key += "".join(f"[{p}]" for p in loc if isinstance(p, int))
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        model = _model_at(error["loc"])
        known = list(model.model_fields) if model is not None else []
        return key, "unknown parameter" + did_you_mean(loc[-1], known)
    if kind == "float_type" and isinstance(value, int) and not isinstance(value, bool):
        return key, f"must be a finite number, got an integer of {len(str(value))} digits"
    if kind in _TYPE_NAMES:
        expected = _TYPE_NAMES[kind]
        model = _model_at(error["loc"])
        field = model.model_fields.get(loc[-1]) if model is not None and loc else None
        if field is not None and "Optional" in str(field.annotation) or \
                (field is not None and "None" in str(field.annotation)):
            expected += " or null"
        return key, f"expected {expected}, got {type(value).__name__} {shown(value)}"
    if kind == "finite_number":
        return key, f"must be a finite number, got {shown(value)}"
    bounds = {"greater_than_equal": ("at least", "ge"), "greater_than": ("greater than", "gt"),
              "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
    if kind in bounds:
        words, name = bounds[kind]
        return key, f"must be {words} {ctx.get(name)}, got {shown(value)}"
    return key, error["msg"]


def validate(raw: dict, source: str | Path = "<params>") -> ExperimentParams:
    """Check a parameter mapping against the schema and return typed parameters."""
    if not isinstance(raw, dict):
        raise ParamsError(f"expected a mapping of parameter names to values, got "
                          f"{type(raw).__name__}", source)
    for key, value in raw.items():
        if _is_legacy(key, value):
            _legacy(source, key, value)
    for key in raw:
        if key not in ExperimentParams.model_fields:
            _fail(source, key, "unknown parameter" + did_you_mean(key, list(ExperimentParams.model_fields)))
    try:
        params = ExperimentParams.model_validate(raw)
    except ValidationError as err:
        key, message = _one_line(err.errors()[0])
        _fail(source, key, message)
    check_run_name(params.name, source)
    if len(params.data.modalities) < 2 and params.fusion.variant != "fixed":
        _fail(source, "fusion.variant", "a single modality has nothing to fuse; use variant: fixed")
    try:
        params.fusion.check_options(params.data.modalities)
    except ValueError as err:
        _fail(source, "fusion.options", str(err))
    images = [m for m in params.data.modalities if m != CLINICAL]
    if params.stage2.enabled and (CLINICAL not in params.data.modalities or len(images) != 1):
        # stage2.run_stage2 builds one (clinical probabilities, image) model; it would skip.
        _fail(source, "stage2.enabled", f"Stage 2 needs the metadata branch and exactly one image "
                                        f"modality, got data.modalities {params.data.modalities}; "
                                        "set stage2: {enabled: false} or list one image modality")
    try:
        params.data.check_available()       # last: for a real folder it looks at the disk
    except ValueError as err:
        _fail(source, "data.modalities", str(err))
    return params


MAX_PARAMS_BYTES = 1 << 20
"""A parameter file is a few hundred bytes; anything over 1 MiB is refused unread."""
MAX_YAML_NODES = 100_000
"""At most this many values in a parameter file, counting each alias as the values it stands for.

Aliases (``*name``) are allowed, but a "billion laughs" file (9 levels of 9 aliases: a
few hundred bytes standing for 387 million strings) is refused before anything expands it."""
MAX_YAML_DEPTH = 50
"""At most this many levels of nested mappings and lists (the schema needs four)."""

_FLOAT_12 = re.compile(r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)
                            |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                            |[0-9][0-9_]*\.[0-9_]*)$""", re.X)
"""Floats as YAML 1.2 writes them that YAML 1.1 (PyYAML) reads as text: ``1e-3``, ``1E5``,
``-2.5e+3``, ``1.5e3``, ``-.5``. Those with a dot and a signed exponent were floats already."""


class _YamlProblem(Exception):
    """A problem found while reading the YAML (a duplicated key, too many values)."""


def _node_children(node):
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_nodes(root) -> None:
    """Raise _YamlProblem when the node graph expands to too many values, nests too deeply or
    holds an alias to itself. Linear in the file: each shared node is measured once."""
    size, height, active = {}, {}, set()
    stack = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        ident = id(node)
        if leaving:
            active.discard(ident)
            children = _node_children(node)
            size[ident] = 1 + sum(size[id(c)] for c in children)
            height[ident] = 1 + max((height[id(c)] for c in children), default=0)
            if size[ident] > MAX_YAML_NODES:
                raise _YamlProblem(
                    f"{_where(root, node)}too many values: aliases (*name) expand to more than "
                    f"{MAX_YAML_NODES:,} values (line {node.start_mark.line + 1}); a parameter "
                    "file needs a few dozen")
            if height[ident] > MAX_YAML_DEPTH:
                raise _YamlProblem(f"{_where(root, node)}nested more than {MAX_YAML_DEPTH} levels "
                                   f"deep (line {node.start_mark.line + 1})")
            continue
        if ident in size:
            continue
        if ident in active:
            raise _YamlProblem(f"{_where(root, node)}an alias at line {node.start_mark.line + 1} "
                               "refers to a value that contains it (a recursive structure); "
                               "write the values out")
        active.add(ident)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(_node_children(node)))


def _dotted_path(root, target) -> str:
    """The dotted key of ``target`` in the node tree (``protocol``, ``fusion.options``)."""
    stack, seen = [(root, [])], set()
    while stack:
        node, parts = stack.pop()
        if node is target:
            return ".".join(p for p in parts if not p.startswith("[")) + \
                "".join(p for p in parts if p.startswith("["))
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack += [(value, parts + [str(key.value) if isinstance(key, yaml.ScalarNode) else "?"])
                      for key, value in node.value]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(value, parts + [f"[{i}]"]) for i, value in enumerate(node.value)]
    return ""


def _where(root, node) -> str:
    dotted = _dotted_path(root, node)
    return f"key {shown(dotted, 120)}: " if dotted else ""


@functools.cache
def _loader():
    """A yaml.SafeLoader for parameter files: duplicate keys refused, aliases bounded,
    YAML 1.2 floats (``1e-3``) read as floats."""
    class ParamsLoader(yaml.SafeLoader):
        def construct_document(self, node):
            _check_nodes(node)
            self._root = node
            return super().construct_document(node)

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                lines = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue        # `<<: *base` then a key of base: an override, not a repeat
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = lines.get(key)
                    except TypeError:
                        continue        # an unhashable key: SafeConstructor says so
                    mark = key_node.start_mark
                    if first is not None:
                        parent = _dotted_path(getattr(self, "_root", node), node)
                        dotted = f"{parent}.{key}" if parent else str(key)
                        where = f"at lines {first.line + 1} and {mark.line + 1}" \
                            if first.line != mark.line else \
                            f"on line {mark.line + 1} (columns {first.column + 1} and {mark.column + 1})"
                        raise _YamlProblem(
                            f"key {shown(dotted, 120)}: given twice, {where}; YAML would keep only "
                            "the later one, so write it once (merge the two)")
                    lines[key] = mark
            return super().construct_mapping(node, deep=deep)

    ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12,
                                       list("-+0123456789."))
    return ParamsLoader


def _reason(err: OSError) -> str:
    """Why a parameter path cannot be used, in words (from the OSError of stat or open)."""
    code = err.errno
    if code == errno.ELOOP:
        return "cannot be resolved: a symlink loop (too many levels of symbolic links)"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if code == errno.ENOTDIR:
        return "parameter file not found (a part of the path is a file, not a folder)"
    if code == errno.ENAMETOOLONG:
        return "the path is too long"
    if code == errno.EISDIR:
        return "is a folder, expected a YAML parameter file"
    return f"cannot be read: {err.strerror or err}"


def check_params_file(path: str | Path) -> Path:
    """``path`` as a Path if it is a readable parameter file, else ParamsError saying why not
    (not found, a dangling symlink, a symlink loop, a folder, permission denied, too big)."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise ParamsError(f"parameter file not found: a symlink to {shown(str(path.readlink()))}, "
                              "which does not exist", path) from None
        raise ParamsError("parameter file not found", path) from None
    except OSError as err:
        raise ParamsError(_reason(err), path) from None
    except ValueError:
        raise ParamsError("not a usable path", path) from None
    if stat.S_ISDIR(info.st_mode):
        raise ParamsError("is a folder, expected a YAML parameter file", path)
    if not stat.S_ISREG(info.st_mode):
        raise ParamsError("is not a regular file (a pipe, socket or device), expected a YAML "
                          "parameter file", path)
    if info.st_size > MAX_PARAMS_BYTES:
        raise ParamsError(f"is {info.st_size:,} bytes; a parameter file is at most "
                          f"{MAX_PARAMS_BYTES:,} bytes", path)
    return path


def read_params_yaml(path: str | Path):
    """The YAML content of one parameter file (not yet validated); ParamsError on any problem."""
    path = check_params_file(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PARAMS_BYTES + 1)
    except OSError as err:
        raise ParamsError(_reason(err), path) from None
    if len(data) > MAX_PARAMS_BYTES:
        raise ParamsError(f"is more than {MAX_PARAMS_BYTES:,} bytes; a parameter file is at most "
                          f"{MAX_PARAMS_BYTES:,} bytes", path)
    try:
        return yaml.load(data.decode("utf-8"), Loader=_loader())   # a SafeLoader subclass
    except _YamlProblem as err:
        raise ParamsError(str(err), path) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"not valid YAML{where}: {clip(getattr(err, 'problem', err))}",
                          path) from None
    except UnicodeDecodeError:
        raise ParamsError("not a UTF-8 text file", path) from None
    except RecursionError:
        raise ParamsError(f"nested more than {MAX_YAML_DEPTH} levels deep", path) from None


def load_params(path: str | Path) -> ExperimentParams:
    """Read and validate one YAML parameter file; ``name`` defaults to the file's stem."""
    path = Path(path)
    raw = read_params_yaml(path)
    if raw is None:
        raise ParamsError("parameter file is empty", path)
    if isinstance(raw, dict):
        raw.setdefault("name", path.stem)
    return validate(raw, path)


# --------------------------------------------------------------------------- the notebook


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
                  source: str = "notebook parameters", own: tuple = ()) -> ExperimentParams:
    """Validated parameters from a notebook's globals.

    Every top-level name of :class:`ExperimentParams` (``name``, ``description`` and the
    sections) found in ``namespace`` is used. Names injected by papermill (``injected``,
    default :func:`injected_names`) that are neither those nor the notebook's own
    :data:`NOTEBOOK_ONLY` (and ``own``: further parameters of the calling notebook that are
    no experiment settings, e.g. explore.ipynb's ``fold_index``) raise ParamsError: a
    flat-schema name with the place it moved to, any other with a did-you-mean
    (``-p foldz 2`` must not run 5 folds).
    """
    injected = injected_names(namespace) if injected is None else list(injected)
    known = list(ExperimentParams.model_fields)
    allowed = (*NOTEBOOK_ONLY, *own)
    for name in injected:
        if _is_legacy(name, namespace.get(name)):
            _legacy(source, name, namespace.get(name))
        if name not in known and name not in allowed:
            _unknown_injected(source, name, known, allowed)
    return validate({name: namespace[name] for name in known if name in namespace}, source=source)


def _unknown_injected(source, name: str, known: list, allowed: tuple = NOTEBOOK_ONLY) -> None:
    """ParamsError for a name papermill injected that is no parameter, with a did-you-mean over
    the top-level names and the flat-schema names (which say where they moved; a section key
    is set with ``-y "section: {key: value}"``, since ``-p section.key`` is no Python name)."""
    candidates = known + list(allowed) + list(LEGACY_KEYS)
    close = difflib.get_close_matches(name, candidates, n=1)
    if close and close[0] in LEGACY_KEYS:
        section, *rest = LEGACY_KEYS[close[0]].split(".")
        inner = "".join("{" + f"{part}: " for part in rest)
        _fail(source, name, f"unknown parameter (did you mean {close[0]!r}? it is "
                            f"{LEGACY_KEYS[close[0]]} now: -y \"{section}: {inner}...{'}' * len(rest)}\")")
    _fail(source, name, "unknown parameter" + did_you_mean(name, known + list(allowed)))


def parameters_cell() -> str:
    """The experiment notebook's ``parameters`` cell, generated from the schema's defaults."""
    defaults = ExperimentParams().to_dict()
    lines = ["# Parameters: one assignment per section of fusionlib.params.ExperimentParams",
             "# (docs/params.md). Generated by `python -m fusionlib.params`; papermill injects",
             "# overrides after this cell, and a section given there replaces this one (keys it",
             "# leaves out keep their defaults)."]
    for name in TOP_LEVEL:
        lines.append(f"{name} = {defaults[name]!r}")
    for name in SECTIONS:
        lines.append(f"{name} = {{")
        lines += [f"    {key!r}: {value!r}," for key, value in defaults[name].items()]
        lines.append("}")
    lines += ["",
              "# Where to save metrics.json, predictions.csv, weights.json, provenance.json "
              "(None: do not save)",
              "output_dir = None",
              "# Branch-probability cache; a relative path is taken from the repository root",
              'cache_dir = ".cache"']
    return "\n".join(lines)


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def params_doc() -> str:
    """docs/params.md, generated from the sections' field descriptions."""
    out = ["# Parameter files", "",
           "<!-- Generated by `python -m fusionlib.params` from the schema; do not edit. -->", "",
           "One YAML file per experiment under `params/`. Every key is optional (`name` defaults",
           "to the file's stem); the settings are grouped in sections, each declared by the",
           "component that uses it, and a section lists only the keys it changes:", "",
           "```yaml", "name: trainable_minrule_100",
           "description: trainable fusion, penalty chosen by the min rule",
           "fusion: {variant: trainable}", "head: {penalty_rule: min}",
           "protocol: {data_percentage: 100}", "```", "",
           "Keys, types and ranges are checked by `fusionlib.params.validate` before any notebook",
           "runs (`fusionlib validate params/*.yaml`, which imports no TensorFlow); an error is",
           "one line naming the file and the dotted key (`head.learning_rate`), with a",
           "did-you-mean for unknown keys. A key of the flat schema used before the sections",
           "(`rf_trees`, `head_loss`, `fusion: trainable`) fails with the place it moved to.",
           "A key given twice is refused (both lines named), numbers such as `1e-3` are numbers",
           "(YAML 1.2), and aliases may expand to at most 100,000 values. Papermill's own",
           "`-f` reads the file with its own YAML loader, which does not check these three:",
           "`fusionlib validate` does.",
           "The sections are the `parameters` cell of `notebooks/experiment.ipynb` (one",
           "assignment each), so `papermill notebooks/experiment.ipynb out.ipynb -f params/x.yaml`",
           "works directly; a name injected with `-p` that is no key here fails the same way.", ""]
    top = ExperimentParams.model_fields
    out += ["| key | default | meaning |", "| --- | --- | --- |"]
    defaults = ExperimentParams().to_dict()
    for name in TOP_LEVEL:
        out.append(f"| `{name}` | `{_yaml_value(defaults[name])}` | {top[name].description} |")
    for name, model in SECTIONS.items():
        out += ["", f"## `{name}`", "", " ".join((model.__doc__ or "").split("\n\n")[0].split()), "",
                "| key | default | meaning |", "| --- | --- | --- |"]
        for key, info in model.model_fields.items():
            out.append(f"| `{name}.{key}` | `{_yaml_value(defaults[name][key])}` | "
                       f"{info.description or ''} |")
    return "\n".join(out) + "\n"


def _write_generated(repo: Path, check_only: bool = False) -> list[str]:
    """Rewrite docs/params.md and the notebook's parameters cell (atomically); the paths that
    changed (with ``check_only``: that are out of date, writing nothing)."""
    import nbformat

    from ._io import atomic_write_text

    changed = []
    doc = repo / "docs" / "params.md"
    if not doc.is_file() or doc.read_text(encoding="utf-8") != params_doc():
        if not check_only:
            atomic_write_text(doc, params_doc())
        changed.append(str(doc))
    path = repo / "notebooks" / "experiment.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    if cell.source != parameters_cell():
        cell.source = parameters_cell()
        if not check_only:
            atomic_write_text(path, nbformat.writes(nb) + "\n")
        changed.append(str(path))
    return changed


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m fusionlib.params",
        description="Regenerate docs/params.md and the experiment notebook's parameters cell "
                    "from the schema.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if either is out of date")
    args = parser.parse_args()
    stale = _write_generated(Path(__file__).resolve().parents[1], check_only=args.check)
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    sys.exit(1 if args.check and stale else 0)
