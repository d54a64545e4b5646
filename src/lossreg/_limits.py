"""Bounds on what lossreg reads and builds, so that a tiny file cannot ask for unbounded work.

Every limit raises :class:`InputLimitError` (a ``ValueError``) in one line that names
the limit and what to change; callers add the file (``RecipeError``, ``HubError``).

- YAML (recipe files, ``--set`` and ``--swap`` values; :func:`safe_load_yaml`): at most
  :data:`MAX_YAML_NODES` nodes counted with every alias expanded (an alias "bomb" of
  nested ``*a`` references is refused before anything is copied), nested at most
  :data:`MAX_DEPTH` levels (aliases included), no recursive aliases, at most
  :data:`MAX_TEXT_BYTES` bytes.
- JSON (``config.json``, COCO annotation files; :func:`load_json`): nested at most
  :data:`MAX_DEPTH` levels.
- Models (checked by the detectors and heads before any weight is allocated):
  ``num_classes <= MAX_NUM_CLASSES``, channel widths ``<= MAX_CHANNELS``, stacked
  convolutions ``<= MAX_STACKED_CONVS`` and no single weight tensor above
  :data:`MAX_TENSOR_ELEMENTS` elements (:func:`check_count`, :func:`check_numel`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml

__all__ = [
    "MAX_CHANNELS",
    "MAX_DEPTH",
    "MAX_IMAGE_SIDE",
    "MAX_NUM_CLASSES",
    "MAX_STACKED_CONVS",
    "MAX_TENSOR_ELEMENTS",
    "MAX_TEXT_BYTES",
    "MAX_YAML_NODES",
    "InputLimitError",
    "check_count",
    "check_depth",
    "check_numel",
    "load_json",
    "safe_load_yaml",
]

#: Nodes of one YAML document, every alias counted as the whole subtree it stands for
#: (the largest shipped recipe has a few hundred).
MAX_YAML_NODES = 100_000
#: Nesting levels of a YAML or JSON document (shipped recipes and config.json files use < 10).
MAX_DEPTH = 64
#: Bytes of one YAML text (a recipe is a few kB).
MAX_TEXT_BYTES = 16 * 1024 * 1024
#: Object classes of one detector (V3Det, the largest detection vocabulary, has 13,204).
MAX_NUM_CLASSES = 100_000
#: Channels of a neck or head layer (FPNs use 256, RoI heads 1024).
MAX_CHANNELS = 4096
#: Convolutions stacked in one head tower (detectors use 1-4).
MAX_STACKED_CONVS = 64
#: Elements of one weight tensor: 2^30, 4 GiB of float32.
MAX_TENSOR_ELEMENTS = 1 << 30
#: Pixels of the longer side a recipe may resize images to (``data.image_size``).
MAX_IMAGE_SIDE = 16384


class InputLimitError(ValueError):
    """An input above one of lossreg's limits (see the module docstring)."""


# --------------------------------------------------------------------------- YAML


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents nested deeper than :data:`MAX_DEPTH` while composing them."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._lossreg_depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._lossreg_depth += 1
        try:
            if self._lossreg_depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise InputLimitError(
                    f"YAML nested deeper than {MAX_DEPTH} levels (at line {mark.line + 1}); flatten the document"
                )
            return super().compose_node(parent, index)
        finally:
            self._lossreg_depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expanded(root: yaml.Node) -> None:
    """Refuse a composed document whose alias-expanded tree is too large, too deep or infinite."""
    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, expanded depth)
    active: set[int] = set()

    def visit(node: yaml.Node, level: int) -> tuple[int, int]:
        key = id(node)
        if key in active:
            raise InputLimitError("YAML alias refers to itself (a recursive structure); write the value out")
        if key in memo:
            size, depth = memo[key]
        else:
            if level > MAX_DEPTH:
                raise InputLimitError(f"YAML nested deeper than {MAX_DEPTH} levels once its aliases are expanded")
            active.add(key)
            size, depth = 1, 0
            for child in _children(node):
                s, d = visit(child, level + 1)
                size += s
                depth = max(depth, d)
                if size > MAX_YAML_NODES:
                    break
            active.discard(key)
            depth += 1
            memo[key] = (size, depth)
        if level + depth - 1 > MAX_DEPTH:
            raise InputLimitError(f"YAML nested deeper than {MAX_DEPTH} levels once its aliases are expanded")
        if size > MAX_YAML_NODES:
            raise InputLimitError(
                f"YAML expands to more than {MAX_YAML_NODES} values (aliases '*name' count as what they repeat); "
                "write a smaller document"
            )
        return size, depth

    visit(root, 1)


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` within the YAML limits of the module docstring.

    Raises :class:`InputLimitError` above a limit and ``yaml.YAMLError`` for malformed YAML.
    """
    if len(text) > MAX_TEXT_BYTES:
        raise InputLimitError(f"YAML text of {len(text)} characters is above the limit of {MAX_TEXT_BYTES}")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded(node)
        return loader.construct_document(node)
    except RecursionError:  # pragma: no cover - the depth checks come first
        raise InputLimitError(f"YAML nested too deeply (the limit is {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- JSON


def check_depth(obj: Any, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`InputLimitError` when lists/dicts in ``obj`` nest deeper than ``limit`` (iteratively)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            items: Any = value.values()
        elif isinstance(value, list):
            items = value
        else:
            continue
        if level > limit:
            raise InputLimitError(f"JSON nested deeper than {limit} levels")
        stack.extend((v, level + 1) for v in items if isinstance(v, (dict, list)))


def load_json(data: str | bytes) -> Any:
    """``json.loads(data)`` nested at most :data:`MAX_DEPTH` levels.

    Raises :class:`InputLimitError` when deeper, ``json.JSONDecodeError`` /
    ``UnicodeDecodeError`` for text that is not JSON.
    """
    try:
        obj = json.loads(data)
    except RecursionError:
        raise InputLimitError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    check_depth(obj)
    return obj


# --------------------------------------------------------------------------- model sizes


def check_count(owner: str, name: str, value: Any, limit: int, fix: str = "", minimum: int = 1) -> int:
    """``value`` as an int in ``[minimum, limit]``; ``ValueError`` naming ``owner``'s ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}")
    if value > limit:
        raise InputLimitError(f"{owner}: {name}={value} is above lossreg's limit of {limit}{f'; {fix}' if fix else ''}")
    return value


def check_numel(owner: str, what: str, shape: tuple[int, ...], fix: str) -> None:
    """Refuse a weight tensor of ``shape`` above :data:`MAX_TENSOR_ELEMENTS` before it is allocated."""
    numel = math.prod(int(s) for s in shape)
    if numel > MAX_TENSOR_ELEMENTS:
        gib = numel * 4 / 2**30
        raise InputLimitError(
            f"{owner}: {what} would be a {' x '.join(map(str, shape))} tensor ({gib:.3g} GiB of float32), above "
            f"lossreg's limit of {MAX_TENSOR_ELEMENTS} elements; {fix}"
        )
