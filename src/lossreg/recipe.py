"""Typed recipes: one detector and its training schedule per YAML file.

A recipe is loaded by name (the file stem of a YAML file in ``recipes/``, which
ships inside the wheel as ``lossreg/recipes``), by path, or from a dict::

    recipe = lossreg.load_recipe("atss_r50_hcral_eatss", overrides=["model.cls_loss=focal"])
    lossreg.load_recipe(recipe.to_dict()) == recipe

Every field is checked on load and a bad one is reported with its YAML path,
e.g. ``model.cls_loss.name: unknown loss 'hcra_x'; did you mean 'hcra_c'?``.
A recipe may start from another one with ``base: <name or path>``; its
mappings are merged key by key (a component given with a different ``name``
replaces the base's component whole).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from ._registry import BadParameterError, UnknownComponentError, check_type, close_matches, get_registry

__all__ = [
    "ComponentSpec",
    "DataCfg",
    "DatasetCfg",
    "EvalCfg",
    "ModelCfg",
    "OptimizerCfg",
    "Recipe",
    "RecipeError",
    "TrainCfg",
    "apply_overrides",
    "find_recipe",
    "list_recipes",
    "load_recipe",
    "recipe_dirs",
    "save_recipe",
]

RECIPE_PATH_ENV = "LOSSREG_RECIPE_PATH"


class RecipeError(ValueError):
    """A recipe that cannot be found, parsed or validated; ``path`` is the bad field's YAML path."""

    def __init__(self, message: str, path: str = "", source: str | None = None) -> None:
        self.path = path
        self.source = source
        text = f"{path}: {message}" if path else message
        if source:
            text = f"{text}  [in {source}]"
        super().__init__(text)


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class ComponentSpec:
    """A registry component: its ``name`` and keyword ``params``.

    In YAML either a bare name (``cls_loss: focal``) or a mapping
    (``cls_loss: {name: hcra_c, theta: 5.0}``).
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_config(self) -> str | dict[str, Any]:
        return self.name if not self.params else {"name": self.name, **dict(self.params)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ComponentSpec):
            return NotImplemented
        return self.name == other.name and dict(self.params) == dict(other.params)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params))))


@dataclass(frozen=True)
class ModelCfg:
    """The detector: architecture, backbone and every swappable component.

    Components left unset use the architecture's defaults. ``weights`` starts
    from published weights (a pretrained tag ``model.tag``, ``hf-hub:owner/repo``
    or ``local-dir:PATH``). ``args`` holds further detector keyword arguments.
    """

    arch: str
    backbone: str = "resnet50"
    pretrained_backbone: bool = False
    num_classes: int | None = None
    neck: ComponentSpec | None = None
    head: ComponentSpec | None = None
    cls_loss: ComponentSpec | None = None
    reg_loss: ComponentSpec | None = None
    quality_loss: ComponentSpec | None = None
    assigner: ComponentSpec | None = None
    balancer: ComponentSpec | None = None
    weights: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)

    def component_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``create_model`` (unset components omitted)."""
        out: dict[str, Any] = {"backbone": self.backbone, "pretrained_backbone": self.pretrained_backbone}
        if self.num_classes is not None:
            out["num_classes"] = self.num_classes
        for key, _kind, _task in _COMPONENT_FIELDS:
            spec = getattr(self, key)
            if spec is not None:
                out[key] = spec.to_config()
        out.update(self.args)
        return out


@dataclass(frozen=True)
class DatasetCfg:
    """One split of a dataset.

    ``format``: ``coco`` (``ann_file`` JSON + ``root`` image folder), ``voc``
    (``root`` with Annotations/JPEGImages/ImageSets, ``split`` file stem) or
    ``synthetic`` (the generated quick-start set; ``params`` go to the generator).
    ``max_images`` keeps the split's first N images (smoke runs, tests).
    """

    format: Literal["coco", "voc", "synthetic"] = "synthetic"
    root: str | None = None
    ann_file: str | None = None
    split: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    max_images: int | None = None


@dataclass(frozen=True)
class DataCfg:
    """Datasets, input size and albumentations augmentations (by class name and params)."""

    train: DatasetCfg = field(default_factory=DatasetCfg)
    val: DatasetCfg | None = None
    image_size: int | tuple[int, int] = 512
    augment: tuple[ComponentSpec, ...] = ()
    num_workers: int = 0


@dataclass(frozen=True)
class OptimizerCfg:
    """Optimizer by name with its learning rate and regularisation."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0001
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class TrainCfg:
    """Schedule and training-loop settings (``steps`` are epochs at which the lr drops by ``gamma``)."""

    epochs: int = 12
    batch_size: int = 8
    optimizer: OptimizerCfg = field(default_factory=OptimizerCfg)
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    schedule: Literal["step", "cosine", "constant"] = "step"
    steps: tuple[int, ...] = (8, 11)
    gamma: float = 0.1
    grad_clip: float | None = None
    amp: bool = False
    ema: bool = False
    ema_decay: float = 0.9998
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    log_interval: int = 20
    checkpoint_interval: int = 1


@dataclass(frozen=True)
class EvalCfg:
    """Post-processing and evaluation settings."""

    score_thr: float = 0.05
    nms_thr: float = 0.6
    pre_nms_topk: int = 1000
    max_dets: int = 100
    interval: int = 1
    batch_size: int = 8


@dataclass(frozen=True)
class Recipe:
    """A complete, validated recipe (see the module docstring)."""

    name: str
    model: ModelCfg
    description: str = ""
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML-ready); ``load_recipe(r.to_dict()) == r``."""
        return _to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, overrides: Sequence[str]) -> Recipe:
        """A new recipe with ``a.b=value`` overrides applied and validated."""
        return load_recipe(self.to_dict(), overrides=overrides)


# (field of ModelCfg, registry kind, required loss task)
_COMPONENT_FIELDS: tuple[tuple[str, str, str | None], ...] = (
    ("neck", "neck", None),
    ("head", "head", None),
    ("cls_loss", "loss", "cls"),
    ("reg_loss", "loss", "reg"),
    ("quality_loss", "loss", "cls"),
    ("assigner", "assigner", None),
    ("balancer", "balancer", None),
)
_TASK_WORDS = {"cls": "classification", "reg": "regression"}


# --------------------------------------------------------------------------- conversion


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, ComponentSpec):
        return obj.to_config()
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    text = getattr(tp, "__name__", None) if origin is None else None
    return text or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against annotation ``tp`` and build dataclasses; errors carry ``path``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is ComponentSpec:
        return _component(value, path)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        if value is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:  # Optional[X]: X's own error is the helpful one
            return _convert(value, real[0], path)
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, path)
            except RecipeError:
                continue
        raise RecipeError(f"expected {_describe(tp)}, got {type(value).__name__} {value!r}", path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"expected a list, got {type(value).__name__} {value!r}", path)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], _join(path, i)) for i, v in enumerate(value))
        if len(args) != len(value):
            raise RecipeError(f"expected a list of {len(args)} values, got {len(value)}: {value!r}", path)
        return tuple(_convert(v, a, _join(path, i)) for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Mapping, typing.Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise RecipeError(f"expected a mapping, got {type(value).__name__} {value!r}", path)
        return dict(value)
    if not check_type(value, tp):
        raise RecipeError(f"expected {_describe(tp)}, got {type(value).__name__} {value!r}", path)
    if tp is float:
        return float(value)
    return value


def _component(value: Any, path: str) -> ComponentSpec:
    if isinstance(value, ComponentSpec):
        return value
    if isinstance(value, str):
        return ComponentSpec(value)
    if isinstance(value, Mapping):
        if "name" not in value:
            raise RecipeError(
                f"a component mapping needs a 'name' key (e.g. {{name: focal, gamma: 2.0}}), got keys {sorted(value)}",
                path,
            )
        if not isinstance(value["name"], str):
            raise RecipeError(f"expected a string, got {value['name']!r}", _join(path, "name"))
        return ComponentSpec(value["name"], {k: v for k, v in value.items() if k != "name"})
    raise RecipeError(
        f"expected a component name or a mapping with 'name', got {type(value).__name__} {value!r}", path
    )


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise RecipeError(f"expected a mapping, got {type(data).__name__} {data!r}", path or "recipe")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            near = close_matches(str(key), fields)
            hint = f"did you mean {', '.join(repr(n) for n in near)}?" if near else f"fields: {', '.join(fields)}"
            raise RecipeError(f"unknown field; {hint}", _join(path, str(key)))
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError("required field is missing", _join(path, name))
    return cls(**kwargs)


# --------------------------------------------------------------------------- semantic checks


def _check_component(spec: ComponentSpec, kind: str, task: str | None, path: str) -> None:
    reg = get_registry(kind)
    if spec.name not in reg:
        exc = UnknownComponentError(kind, spec.name, reg.names(task=task) if task else reg.names())
        raise RecipeError(str(exc), _join(path, "name"))
    info = reg.info(spec.name)
    if task is not None and info.task != task:
        examples = ", ".join(reg.names(task=task)[:4])
        raise RecipeError(
            f"{spec.name!r} is a {_TASK_WORDS.get(info.task or '', info.task)} loss; this field needs a "
            f"{_TASK_WORDS[task]} loss ({examples}, ...)",
            _join(path, "name"),
        )
    try:
        reg.check_kwargs(spec.name, spec.params, where=f"{kind} {spec.name!r}")
    except BadParameterError as exc:
        raise RecipeError(str(exc), _join(path, exc.param)) from None


def _validate(recipe: Recipe) -> None:
    model = recipe.model
    try:
        get_registry("detector").info(model.arch)
    except UnknownComponentError as exc:
        raise RecipeError(str(exc), "model.arch") from None
    for key, kind, task in _COMPONENT_FIELDS:
        spec = getattr(model, key)
        if spec is not None:
            _check_component(spec, kind, task, f"model.{key}")
    if model.num_classes is not None and model.num_classes < 1:
        raise RecipeError(f"must be >= 1, got {model.num_classes}", "model.num_classes")
    if model.weights is not None:
        from ._registry import parse_model_name

        try:
            parse_model_name(model.weights)
        except ValueError as exc:
            raise RecipeError(str(exc), "model.weights") from None
    _validate_data(recipe.data)
    train = recipe.train
    for key in ("epochs", "batch_size", "log_interval", "checkpoint_interval"):
        if getattr(train, key) < 1:
            raise RecipeError(f"must be >= 1, got {getattr(train, key)}", f"train.{key}")
    if train.warmup_iters < 0 or not 0 < train.warmup_ratio <= 1:
        raise RecipeError("warmup_iters must be >= 0 and warmup_ratio in (0, 1]", "train.warmup_ratio")
    if train.optimizer.lr <= 0:
        raise RecipeError(f"must be > 0, got {train.optimizer.lr}", "train.optimizer.lr")
    if list(train.steps) != sorted(train.steps):
        raise RecipeError(f"must be increasing epochs, got {list(train.steps)}", "train.steps")
    if not 0 <= recipe.eval.score_thr <= 1 or not 0 < recipe.eval.nms_thr <= 1:
        raise RecipeError("score_thr must be in [0, 1] and nms_thr in (0, 1]", "eval")


def _validate_data(data: DataCfg) -> None:
    sizes = (data.image_size,) if isinstance(data.image_size, int) else data.image_size
    if any(s < 32 for s in sizes):
        raise RecipeError(f"must be >= 32 pixels, got {data.image_size!r}", "data.image_size")
    for split in ("train", "val"):
        ds = getattr(data, split)
        if ds is None:
            continue
        if ds.format == "coco" and (ds.ann_file is None or ds.root is None):
            raise RecipeError("a coco dataset needs 'ann_file' (JSON) and 'root' (image folder)", f"data.{split}")
        if ds.format == "voc" and ds.root is None:
            raise RecipeError("a voc dataset needs 'root' (the folder holding Annotations/)", f"data.{split}")
    if data.augment:
        try:
            import albumentations as A
        except ImportError:  # pragma: no cover - a declared dependency
            return
        for i, spec in enumerate(data.augment):
            if not isinstance(getattr(A, spec.name, None), type):
                names = [n for n in dir(A) if n[:1].isupper()]
                near = close_matches(spec.name, names)
                hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
                raise RecipeError(f"unknown albumentations transform {spec.name!r}{hint}", f"data.augment[{i}].name")


# --------------------------------------------------------------------------- files


def recipe_dirs() -> list[Path]:
    """Folders searched for recipe names, first match wins.

    ``$LOSSREG_RECIPE_PATH`` (``os.pathsep``-separated), then the recipes inside
    the installed package, then ``recipes/`` of a source checkout.
    """
    dirs = [Path(p) for p in os.environ.get(RECIPE_PATH_ENV, "").split(os.pathsep) if p]
    try:
        packaged = resources.files("lossreg") / "recipes"
        if packaged.is_dir():
            dirs.append(Path(str(packaged)))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover
        pass
    checkout = Path(__file__).resolve().parents[2] / "recipes"
    if checkout.is_dir():
        dirs.append(checkout)
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def list_recipes(pattern: str = "*") -> list[str]:
    """Sorted names of the recipes found in :func:`recipe_dirs`."""
    import fnmatch

    names = {p.stem for d in recipe_dirs() for p in d.glob("*.yaml")}
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def find_recipe(name: str | os.PathLike[str]) -> Path:
    """The file of a recipe given by name or path; ``RecipeError`` naming close matches otherwise."""
    text = os.fspath(name)
    path = Path(text).expanduser()
    looks_like_path = path.suffix in (".yaml", ".yml") or os.sep in text or "/" in text
    if path.is_file():
        return path
    if looks_like_path:
        raise RecipeError(f"recipe file {text!r} does not exist")
    for d in recipe_dirs():
        for suffix in (".yaml", ".yml"):
            cand = d / f"{text}{suffix}"
            if cand.is_file():
                return cand
    near = close_matches(text, list_recipes())
    hint = f"did you mean {', '.join(repr(n) for n in near)}?" if near else "see `lossreg list recipe`"
    raise RecipeError(f"no recipe named {text!r}; {hint} (or give a path to a .yaml file)")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe file: {exc.strerror or exc}", source=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"malformed YAML{where}: {problem}", source=str(path)) from None
    if data is None:
        raise RecipeError("the recipe file is empty", source=str(path))
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe must be a YAML mapping, got {type(data).__name__}", source=str(path))
    return data


def _merge(base: dict[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in child.items():
        old = out.get(key)
        # a different component ("name") or dataset ("format") replaces the base's entry instead of merging
        same_component = not (
            isinstance(value, Mapping)
            and isinstance(old, Mapping)
            and any(value.get(k, old.get(k)) != old.get(k) for k in ("name", "format"))
        )
        if isinstance(value, Mapping) and isinstance(old, Mapping) and same_component:
            out[key] = _merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_raw(source: str | os.PathLike[str] | Mapping[str, Any], chain: tuple[str, ...] = ()) -> dict[str, Any]:
    if isinstance(source, Mapping):
        data = dict(source)
        path = None
    else:
        path = find_recipe(source)
        key = str(path.resolve())
        if key in chain:
            raise RecipeError(f"recipe bases form a cycle: {' -> '.join(chain + (key,))}")
        chain = chain + (key,)
        data = _read_yaml(path)
        data.setdefault("name", path.stem)
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise RecipeError(f"expected a recipe name or path, got {base!r}", "base")
        if path is not None and not Path(base).is_absolute() and base.endswith((".yaml", ".yml")):
            base = str(path.parent / base)
        parent = _resolve_raw(base, chain)
        parent.pop("name", None)
        parent.pop("description", None)
        data = _merge(parent, data)
    return data


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise RecipeError(f"bad override key {dotted!r}: expected dotted field names like model.cls_loss.gamma")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        child = node.get(key) if isinstance(node, dict) else None
        if isinstance(child, str) and key in {f for f, _, _ in _COMPONENT_FIELDS}:
            child = {"name": child}  # setting a parameter of a component given by name
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise RecipeError(
                f"cannot set {dotted!r}: {'.'.join(keys[: i + 1])} is {child!r}, not a mapping",
                ".".join(keys[: i + 1]),
            )
        node[key] = child
        node = child
    last = keys[-1]
    old = node.get(last)
    if isinstance(old, dict) and "name" in old and isinstance(value, str):
        node[last] = value  # swapping a component drops the old one's params
    else:
        node[last] = value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (values parsed as YAML: ``3``, ``0.5``, ``[8, 11]``, ``null``)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"bad override {item!r}: expected KEY=VALUE, e.g. model.cls_loss=focal")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise RecipeError(f"bad value in override {item!r}: {exc}") from None
        _set_path(out, key.strip(), value)
    return out


def load_recipe(
    source: str | os.PathLike[str] | Mapping[str, Any] | Recipe,
    overrides: Sequence[str] = (),
    validate: bool = True,
) -> Recipe:
    """Load and validate a recipe from a name, a path, a dict or a ``Recipe``.

    ``overrides`` are ``a.b=value`` strings applied before validation (the
    command line's ``--set``). ``validate=False`` checks only the schema, not
    that the named components exist.
    """
    if isinstance(source, Recipe):
        source = source.to_dict()
    origin = None if isinstance(source, Mapping) else os.fspath(source)
    raw = _resolve_raw(source)
    if overrides:
        raw = apply_overrides(raw, overrides)
    if "name" not in raw:
        raw["name"] = "recipe"
    try:
        recipe = _build(Recipe, raw, "")
        if validate:
            _validate(recipe)
    except RecipeError as exc:
        if origin and not exc.source:
            raise RecipeError(str(exc), source=origin) from None
        raise
    return recipe


def save_recipe(recipe: Recipe, path: str | os.PathLike[str]) -> Path:
    """Write ``recipe`` as YAML atomically (temporary file + rename)."""
    from ._io import atomic_write_text

    return atomic_write_text(Path(path), recipe.to_yaml())

