"""Recipe dicts combined: a ``base:`` recipe merged with its child, ``a.b=value`` overrides applied."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from .._limits import InputLimitError, safe_load_yaml
from .._registry import component_slots
from .convert import RecipeError

__all__ = ["apply_overrides", "merge", "set_path"]


def merge(base: dict[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``, key by key; a different component or dataset replaces the base's whole."""
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
            out[key] = merge(dict(old), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise RecipeError(f"bad override key {dotted!r}: expected dotted field names like model.cls_loss.gamma")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        child = node.get(key) if isinstance(node, dict) else None
        if isinstance(child, str) and key in component_slots():
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
            value = safe_load_yaml(raw) if raw.strip() else ""
        except InputLimitError as exc:
            raise RecipeError(f"bad value in override {key.strip()!r}: {exc}") from None
        except yaml.YAMLError as exc:
            raise RecipeError(f"bad value in override {item!r}: {exc}") from None
        set_path(out, key.strip(), value)
    return out
