"""Swaps (``KEY=V1,V2,...``) parsed, and the names and labels of the variants they make."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ..._limits import InputLimitError, safe_load_yaml

_SLUG_OK = re.compile(r"^[A-Za-z0-9_.+-]+$")
_MAX_SLUG = 40
_MAX_NAME = 160


class AblationError(ValueError):
    """A bad swap, seed list or output folder, or failed runs (one line, for the command line)."""


def split_values(text: str) -> list[str]:
    """Split ``text`` at the commas outside ``{}``/``[]`` and quotes; the parts are stripped.

    ``"focal,{name: hcra_c, rci_mode: paper},'a,b'"`` -> ``["focal", "{name: hcra_c, rci_mode: paper}", "'a,b'"]``.
    Raises :class:`AblationError` for unbalanced brackets or quotes and for an empty part.
    """
    parts: list[str] = []
    depth: list[str] = []
    quote: str | None = None
    start, i = 0, 0
    closing = {"{": "}", "[": "]"}
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if quote == '"' and ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"" and (text[start:i].strip() == "" or (depth and text[start:i].rstrip()[-1:] in "{[,:")):
            quote = ch  # a quoted scalar starts a value (an apostrophe inside a word is no quote)
        elif ch in closing:
            depth.append(closing[ch])
        elif ch in "}]":
            if not depth or depth.pop() != ch:
                raise AblationError(f"unbalanced {ch!r} at character {i + 1} of {text!r}")
        elif ch == "," and not depth:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quote is not None:
        raise AblationError(f"unclosed {quote} quote in {text!r}")
    if depth:
        raise AblationError(f"unclosed {'{' if depth[-1] == '}' else '['} in {text!r}")
    parts.append(text[start:])
    parts = [p.strip() for p in parts]
    if any(not p for p in parts):
        raise AblationError(f"empty value in {text!r} (two commas in a row, or one at the start or end)")
    return parts


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class Swap:
    """One swapped recipe field: its dotted ``key`` and the ``values`` tried (``texts``: as written)."""

    key: str
    values: tuple[Any, ...]
    texts: tuple[str, ...]


def joined_keys(key: str) -> list[str]:
    """The fields a swap key sets: ``model.cls_loss`` -> one; ``model.cls_loss+model.assigner`` -> both."""
    return key.split("+")


def parse_swaps(items: Sequence[str]) -> list[Swap]:
    """``["model.cls_loss=focal,qfl", "model.reg_loss=giou", "model.cls_loss=vfl"]`` -> one :class:`Swap` per key.

    Values are YAML (as ``--set`` reads them); a repeated key adds its values to the
    first occurrence's, in order. A joined key ``KEY1+KEY2+...`` changes several fields
    together (one variant, e.g. all of a paper's components at once): each of its values
    is a YAML list with one entry per field, ``model.cls_loss+model.assigner=[hcra_c, eatss]``.
    Raises :class:`AblationError` naming the bad item: no ``=``, an empty key or value,
    unbalanced brackets or quotes, malformed YAML, a value listed twice for one key, a
    joined key's value that is not a list of its length.
    """
    keys: list[str] = []
    values: dict[str, list[tuple[Any, str]]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AblationError(f"bad swap {item!r}: expected KEY=V1,V2,..., e.g. model.cls_loss=focal,qfl")
        fields = joined_keys(key)
        if any(not all(part.strip() for part in f.split(".")) for f in fields) or any(c.isspace() for c in key):
            raise AblationError(f"bad swap key {key!r}: expected dotted field names like model.cls_loss")
        if len(set(fields)) != len(fields):
            raise AblationError(f"bad swap key {key!r}: a field is joined twice")
        if not raw.strip():
            raise AblationError(f"swap {item!r} lists no values: expected KEY=V1,V2,...")
        try:
            texts = split_values(raw)
        except AblationError as exc:
            raise AblationError(f"bad swap {item!r}: {exc}") from None
        if key not in values:
            keys.append(key)
            values[key] = []
        for text in texts:
            try:
                value = safe_load_yaml(text)
            except InputLimitError as exc:
                raise AblationError(f"bad value in swap {key!r}: {exc}") from None
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                raise AblationError(f"bad value {text!r} in swap {item!r}: malformed YAML ({problem})") from None
            if len(fields) > 1 and not (isinstance(value, list) and len(value) == len(fields)):
                raise AblationError(
                    f"swap {key}: value {text!r} must be a list of {len(fields)} values, one per field "
                    f"({', '.join(fields)})"
                )
            if any(_canonical(value) == _canonical(v) for v, _ in values[key]):
                raise AblationError(f"swap {key}: value {text!r} is listed twice")
            values[key].append((value, text))
    return [Swap(k, tuple(v for v, _ in values[k]), tuple(t for _, t in values[k])) for k in keys]


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Column and folder labels of swap keys: without the section (``model.cls_loss`` -> ``cls_loss``,
    ``train.optimizer.lr`` -> ``optimizer.lr``); the full key where two would read the same."""
    short = {k: "+".join(f.split(".", 1)[1] if "." in f else f for f in joined_keys(k)) for k in keys}
    counts: dict[str, int] = {}
    for s in short.values():
        counts[s] = counts.get(s, 0) + 1
    return {k: (s if counts[s] == 1 else k) for k, s in short.items()}


def display_value(value: Any) -> str:
    """A short readable text of a swapped value: ``focal``, ``hcra_c(rci_mode=paper)``, ``0.01``, ``[8, 11]``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        params = ", ".join(f"{k}={display_value(v)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({params})" if params else value["name"]
    if isinstance(value, list) and any(isinstance(v, Mapping) for v in value):  # a joined key's values
        return "[" + ", ".join(display_value(v) for v in value) + "]"
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def _base_display(value: Any) -> str:
    return "(default)" if value is None else display_value(value)


def slug(value: Any) -> str:
    """A folder-safe form of :func:`display_value`; lossy ones (and long ones) end in a hash of the value."""
    text = display_value(value)
    if _SLUG_OK.match(text) and len(text) <= _MAX_SLUG:
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-.")[:_MAX_SLUG].rstrip("-.")
    digest = hashlib.sha1(_canonical(value).encode("utf-8")).hexdigest()[:6]
    return f"{cleaned}-{digest}" if cleaned else digest


@dataclass(frozen=True)
class Variant:
    """One combination of swapped values.

    ``name`` is its folder (``cls_loss=qfl__reg_loss=giou``, or ``baseline``), ``label``
    its readable form, ``settings`` the ``(key, value)`` pairs it sets and ``overrides``
    them as ``--set`` strings.
    """

    name: str
    label: str
    settings: tuple[tuple[str, Any], ...]
    overrides: tuple[str, ...]

    def value_of(self, key: str) -> tuple[bool, Any]:
        for k, v in self.settings:
            if k == key:
                return True, v
        return False, None


def _variant(picks: Sequence[tuple[Swap, int]], labels: Mapping[str, str]) -> Variant:
    parts = [f"{labels[s.key]}={slug(s.values[i])}" for s, i in picks]
    name = "__".join(parts)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
        name = f"{name[: _MAX_NAME - 9].rstrip('_.-')}-{digest}"
    label = ", ".join(f"{labels[s.key]}={display_value(s.values[i])}" for s, i in picks)
    return Variant(
        name=name,
        label=label,
        settings=tuple((s.key, s.values[i]) for s, i in picks),
        overrides=tuple(o for s, i in picks for o in _overrides(s, i)),
    )


def _overrides(swap: Swap, i: int) -> list[str]:
    """The ``--set`` strings of value ``i`` of ``swap`` (one per field of a joined key)."""
    fields = joined_keys(swap.key)
    if len(fields) == 1:
        return [f"{swap.key}={swap.texts[i]}"]
    return [f"{f}={json.dumps(v)}" for f, v in zip(fields, swap.values[i])]  # JSON is YAML
