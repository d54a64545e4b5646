"""``create_model``'s name grammar, model entry points and pretrained tags (timm-style).

Accepted model names:

- ``<arch>_<backbone>_fpn`` registered model names, e.g. ``atss_resnet50_fpn``;
- ``name.tag`` selects published weights of a model (``atss_resnet18_fpn.bccd``);
  the tag is used when ``pretrained=True``, exactly as timm does;
- a recipe name (file stem in ``recipes/``) builds the recipe's model;
- ``hf-hub:owner/repo[@revision]`` loads a published model from the Hugging Face Hub;
- ``local-dir:PATH`` loads a model saved with ``save_pretrained``.

A name containing ``/`` or ``:`` without one of those prefixes is rejected with
a message that says which prefix to add.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._registry import UnknownComponentError, close_matches

__all__ = [
    "ModelName",
    "PretrainedCfg",
    "parse_model_name",
    "register_model",
    "register_pretrained",
    "register_source",
    "list_models",
    "list_pretrained",
    "get_pretrained_cfg",
    "create_model",
]

HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass(frozen=True)
class ModelName:
    """A parsed model name.

    ``source`` is ``"hf-hub"``, ``"local-dir"`` or ``"name"``; for ``"name"``,
    ``arch`` is the model (or recipe) name and ``tag`` the optional pretrained
    tag; for ``"hf-hub"``, ``repo_id`` and ``revision``; for ``"local-dir"``, ``path``.
    """

    source: str
    arch: str | None = None
    tag: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    path: str | None = None


def parse_model_name(name: str) -> ModelName:
    """Split a ``create_model`` name into its parts; raise ``ValueError`` on bad syntax."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a model name must be a non-empty string, got {name!r}")
    name = name.strip()
    if name.startswith(HUB_PREFIX):
        rest = name[len(HUB_PREFIX):]
        repo_id, _, revision = rest.partition("@")
        if not _REPO_RE.match(repo_id):
            raise ValueError(
                f"bad Hugging Face Hub model name {name!r}: expected 'hf-hub:owner/repo' or "
                "'hf-hub:owner/repo@revision'"
            )
        if "@" in rest and not revision:
            raise ValueError(f"bad Hub model name {name!r}: '@' must be followed by a revision")
        return ModelName("hf-hub", repo_id=repo_id, revision=revision or None)
    if name.startswith(LOCAL_PREFIX):
        path = name[len(LOCAL_PREFIX):]
        if not path:
            raise ValueError(f"bad model name {name!r}: 'local-dir:' must be followed by a folder path")
        return ModelName("local-dir", path=path)
    if ":" in name or "/" in name or "\\" in name:
        raise ValueError(
            f"model name {name!r} looks like a repository or a path: write 'hf-hub:{name}' to load it "
            f"from the Hugging Face Hub or 'local-dir:{name}' to load a folder written by save_pretrained"
        )
    arch, _, tag = name.partition(".")
    if not _NAME_RE.match(arch) or (tag and not _NAME_RE.match(tag)) or name.count(".") > 1:
        raise ValueError(f"bad model name {name!r}: expected '<arch>_<backbone>_fpn' or '<model>.<tag>'")
    return ModelName("name", arch=arch, tag=tag or None)


# --------------------------------------------------------------------------- entry points


@dataclass(frozen=True)
class PretrainedCfg:
    """Where published weights of ``model.tag`` live (timm's ``pretrained_cfg``)."""

    model: str
    tag: str
    hf_hub_id: str | None = None
    revision: str | None = None
    num_classes: int | None = None
    label_names: tuple[str, ...] = ()
    description: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    license: str | None = None

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"


_MODELS: dict[str, Callable[..., Any]] = {}
_DEFAULT_TAGS: dict[str, str] = {}
_PRETRAINED: dict[str, PretrainedCfg] = {}
_SOURCES: dict[str, Callable[..., Any]] = {}
_builtin_loaded = False


def _ensure_models() -> None:
    global _builtin_loaded
    if not _builtin_loaded:
        _builtin_loaded = True
        from ._registry import DETECTORS

        DETECTORS._ensure_loaded()  # detectors' modules register their model names


def register_model(name: str | None = None, *, override: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a model entry point ``fn(pretrained=False, pretrained_cfg=None, **kwargs) -> nn.Module``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = name or fn.__name__
        parse = parse_model_name(key)
        if parse.source != "name" or parse.tag:
            raise ValueError(f"model entry point name {key!r} must be a plain name without a tag")
        if key in _MODELS and not override:
            raise ValueError(f"model {key!r} is already registered; pass override=True to replace it")
        _MODELS[key] = fn
        return fn

    return deco


def register_pretrained(cfg: PretrainedCfg, *, default: bool = False, override: bool = False) -> PretrainedCfg:
    """Declare published weights ``cfg.model.cfg.tag``; ``default`` makes it the tag used without one."""
    if cfg.name in _PRETRAINED and not override:
        raise ValueError(f"pretrained weights {cfg.name!r} are already registered; pass override=True")
    _PRETRAINED[cfg.name] = cfg
    if default or cfg.model not in _DEFAULT_TAGS:
        _DEFAULT_TAGS[cfg.model] = cfg.tag
    return cfg


def register_source(prefix: str, loader: Callable[..., Any]) -> None:
    """Install the loader for ``hf-hub`` / ``local-dir`` names (done by ``lossreg.hub``)."""
    if prefix not in ("hf-hub", "local-dir", "recipe", "pretrained"):
        raise ValueError(f"unknown model source {prefix!r}")
    _SOURCES[prefix] = loader


def load_pretrained(pretrained_cfg: PretrainedCfg | None, **kwargs: Any) -> Any:
    """The detector of the published weights ``pretrained_cfg`` (through lossreg.hub), with ``kwargs`` overrides."""
    if pretrained_cfg is None:
        raise RuntimeError(
            "pretrained=True, but no published weights are registered for this model "
            "(looked in lossreg's pretrained registry; `lossreg list pretrained` shows what exists)"
        )
    loader = _SOURCES.get("pretrained")
    if loader is None:
        raise RuntimeError(
            f"published weights {pretrained_cfg.name!r} live on the Hugging Face Hub ({pretrained_cfg.hf_hub_id}); "
            "loading them needs lossreg's hub support (lossreg.hub), which is not available in this installation"
        )
    return loader(pretrained_cfg, **kwargs)


def list_models(pattern: str = "*", include_recipes: bool = False) -> list[str]:
    """Sorted model names matching the fnmatch ``pattern``; recipes too when asked."""
    _ensure_models()
    names = {n for n in _MODELS if fnmatch.fnmatchcase(n, pattern)}
    if include_recipes:
        from .recipe import list_recipes

        names |= {n for n in list_recipes() if fnmatch.fnmatchcase(n, pattern)}
    return sorted(names)


def list_pretrained(pattern: str = "*") -> list[str]:
    """Sorted ``model.tag`` names of published weights matching ``pattern``."""
    _ensure_models()
    return sorted(n for n in _PRETRAINED if fnmatch.fnmatchcase(n, pattern))


def get_pretrained_cfg(model: str, tag: str | None = None) -> PretrainedCfg:
    """The pretrained config of ``model.tag`` (or the model's default tag)."""
    _ensure_models()
    tag = tag or _DEFAULT_TAGS.get(model)
    key = f"{model}.{tag}" if tag else model
    if key not in _PRETRAINED:
        raise UnknownComponentError(
            "pretrained weights", key, _PRETRAINED, hint="see `lossreg list pretrained`"
        )
    return _PRETRAINED[key]


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> Any:
    """Create a detector by name (see the module docstring for the grammar).

    Keyword arguments whose value is ``None`` are dropped, so command-line
    defaults never override a model's own defaults. Component overrides
    (``cls_loss="hcra_c"``, ``assigner={"name": "eatss", "extra": 3}``),
    ``num_classes``, ``label_names`` and ``backbone`` are passed to the model.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    parsed = parse_model_name(name)
    if parsed.source in ("hf-hub", "local-dir"):
        loader = _SOURCES.get(parsed.source)
        if loader is None:
            raise RuntimeError(
                f"loading {parsed.source!r} models needs lossreg's hub support (lossreg.hub), "
                "which is not available in this installation"
            )
        return loader(parsed, **kwargs)
    _ensure_models()
    arch, tag = parsed.arch, parsed.tag
    assert arch is not None
    if arch in _MODELS:
        pretrained_cfg = None
        if tag is not None or pretrained:
            try:
                pretrained_cfg = get_pretrained_cfg(arch, tag)
            except UnknownComponentError:
                if pretrained or tag:
                    raise
        return _MODELS[arch](pretrained=pretrained, pretrained_cfg=pretrained_cfg, **kwargs)
    from .recipe import list_recipes

    if arch in list_recipes():
        if tag:
            raise ValueError(f"recipe name {arch!r} cannot take a pretrained tag ({tag!r})")
        loader = _SOURCES.get("recipe")
        if loader is None:
            raise RuntimeError(
                f"{arch!r} is a recipe, but this installation has no detector builder to turn recipes into models"
            )
        return loader(arch, pretrained=pretrained, **kwargs)
    candidates = list(_MODELS) + list_recipes()
    raise UnknownComponentError(
        "model",
        name,
        candidates,
        hint="see `lossreg list model`; Hub models need the 'hf-hub:' prefix",
    )


def _suggest(name: str, names: list[str]) -> list[str]:  # used by the CLI
    return close_matches(name, names)
