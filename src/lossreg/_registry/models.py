"""Model names and pretrained tags (timm's ``_registry``): the name grammar, entry points, ``name.tag`` configs.

Accepted model names:

- ``<arch>_<backbone>_fpn`` registered model names, e.g. ``atss_resnet50_fpn``;
- a bare architecture (``atss``), the detector registry's own name;
- ``name.tag`` selects published weights of a model (``atss_resnet18_fpn.bccd``);
  the tag is used when ``pretrained=True``, exactly as timm does;
- a recipe name (file stem in ``recipes/``) builds the recipe's model;
- ``hf-hub:owner/repo[@revision]`` loads a published model from the Hugging Face Hub;
- ``local-dir:PATH`` loads a model saved with ``save_pretrained``.

A name containing ``/`` or ``:`` without one of those prefixes is rejected with
a message that says which prefix to add. :func:`lossreg.create_model` (``_factory``)
turns a name into a detector; this module only keeps the tables.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .components import DETECTORS, UnknownComponentError

__all__ = [
    "HUB_PREFIX",
    "LOCAL_PREFIX",
    "ModelName",
    "PretrainedCfg",
    "get_pretrained_cfg",
    "is_model",
    "list_pretrained",
    "model_entrypoint",
    "model_names",
    "parse_model_name",
    "register_model",
    "register_pretrained",
]

HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
#: A git branch, tag or commit as the Hub accepts them: no second '@', no spaces, no '..'.
_REVISION_RE = re.compile(r"^(?!.*\.\.)[A-Za-z0-9_][\w.\-/]*$")


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
        if revision and not _REVISION_RE.match(revision):
            raise ValueError(
                f"bad Hub model name {name!r}: revision {revision!r} is not a branch, tag or commit name "
                "(one '@', then letters, digits, '.', '_', '-' or '/'): write 'hf-hub:owner/repo@revision'"
            )
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
    """Where published weights of ``model.tag`` live (timm's ``pretrained_cfg``).

    Two routes: ``hf_hub_id`` names a Hub repository written by ``save_pretrained`` /
    ``lossreg push`` (loaded as is); or ``url`` + ``converter`` name another library's
    original file (torchvision's, mmdetection's): ``create_model(name, pretrained=True)``
    downloads it once into ``$LOSSREG_HOME/downloads`` (default ``~/.cache/lossreg``),
    checks ``sha256``, converts it with ``converter`` and caches the result as a
    ``save_pretrained`` folder in ``$LOSSREG_HOME/converted/<model>.<tag>``
    (:mod:`lossreg.hub.converted`).

    Fields of the second route: ``url`` of the original file; ``sha256``, its full hex
    digest or a prefix of it (torchvision's and mmdetection's file names carry the first
    8 hex digits); ``source``, what it is, in words; ``converter``, a ``"module:function"``
    reference called as ``function(path, **converter_args)`` and returning the detector;
    ``coco_ap``, the source's published COCO val2017 box AP (in %); ``license``, the
    weights' license.
    """

    model: str
    tag: str
    hf_hub_id: str | None = None
    revision: str | None = None
    num_classes: int | None = None
    label_names: tuple[str, ...] = ()
    description: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    license: str | None = None
    url: str | None = None
    sha256: str | None = None
    source: str | None = None
    converter: str | None = None
    converter_args: Mapping[str, Any] = field(default_factory=dict)
    coco_ap: float | None = None

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def file_name(self) -> str | None:
        """The original file's name (the last part of ``url``)."""
        if not self.url:
            return None
        from urllib.parse import urlparse

        return urlparse(self.url).path.rsplit("/", 1)[-1] or None


_MODELS: dict[str, Callable[..., Any]] = {}
_DEFAULT_TAGS: dict[str, str] = {}
_PRETRAINED: dict[str, PretrainedCfg] = {}
_builtin_loaded = False


def _ensure_models() -> None:
    global _builtin_loaded
    if not _builtin_loaded:
        _builtin_loaded = True
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


def model_names(pattern: str = "*") -> list[str]:
    """Sorted registered model names matching the fnmatch ``pattern``."""
    _ensure_models()
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model entry point."""
    _ensure_models()
    return name in _MODELS


def model_entrypoint(name: str) -> Callable[..., Any]:
    """The entry point ``fn(pretrained=False, pretrained_cfg=None, **kwargs)`` registered as ``name``."""
    _ensure_models()
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownComponentError("model", name, _MODELS, hint="see `lossreg list model`") from None


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
