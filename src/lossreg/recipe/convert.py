"""Recipe values between YAML and the typed schema: checked conversion both ways, with the YAML path of every error."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from .._registry import check_type, close_matches

__all__ = ["ComponentSpec", "RecipeError", "build", "join", "to_plain", "to_yaml"]


class RecipeError(ValueError):
    """A recipe that cannot be found, parsed or validated; ``path`` is the bad field's YAML path."""

    def __init__(self, message: str, path: str = "", source: str | None = None) -> None:
        self.path = path
        self.source = source
        text = f"{path}: {message}" if path else message
        if source:
            text = f"{text}  [in {source}]"
        super().__init__(text)


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


def to_plain(obj: Any) -> Any:
    """Dataclasses, specs and containers as plain YAML/JSON values (slot mappings flattened)."""
    if isinstance(obj, ComponentSpec):
        return obj.to_config()
    if dataclasses.is_dataclass(obj):
        out: dict[str, Any] = {}
        into = getattr(obj, "extra_into", None)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name == into:
                out.update({k: to_plain(v) for k, v in value.items()})
            else:
                out[f.name] = to_plain(value)
        return out
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def join(path: str, key: str | int) -> str:
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
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, path)
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
            return tuple(_convert(v, args[0], join(path, i)) for i, v in enumerate(value))
        if len(args) != len(value):
            raise RecipeError(f"expected a list of {len(args)} values, got {len(value)}: {value!r}", path)
        return tuple(_convert(v, a, join(path, i)) for i, (v, a) in enumerate(zip(value, args)))
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
            raise RecipeError(f"expected a string, got {value['name']!r}", join(path, "name"))
        return ComponentSpec(value["name"], {k: v for k, v in value.items() if k != "name"})
    raise RecipeError(
        f"expected a component name or a mapping with 'name', got {type(value).__name__} {value!r}", path
    )


def build(cls: type, data: Any, path: str) -> Any:
    """The dataclass ``cls`` from the mapping ``data``, every field converted and checked.

    A dataclass with ``extra_into`` (a field name) and ``extra_fields()`` (name -> type)
    takes those extra keys at its own level and collects the set ones into that field:
    ``ModelCfg``'s component slots.
    """
    if not isinstance(data, Mapping):
        raise RecipeError(f"expected a mapping, got {type(data).__name__} {data!r}", path or "recipe")
    hints = typing.get_type_hints(cls)
    into = getattr(cls, "extra_into", None)
    extra: dict[str, Any] = getattr(cls, "extra_fields")() if into else {}  # noqa: B009 - a class hook
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != into}
    for key in data:
        if key not in fields and key not in extra:
            known = [*fields, *extra]
            near = close_matches(str(key), known)
            hint = f"did you mean {', '.join(repr(n) for n in near)}?" if near else f"fields: {', '.join(known)}"
            raise RecipeError(f"unknown field; {hint}", join(path, str(key)))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError("required field is missing", join(path, name))
    if into:
        kwargs[into] = {
            k: _convert(data[k], tp, join(path, k)) for k, tp in extra.items() if data.get(k) is not None
        }
    return cls(**kwargs)


def to_yaml(data: Any) -> str:
    """``data`` (plain values) as YAML, in the order given."""
    return yaml.safe_dump(data, sort_keys=False)
