"""``config.json`` of a published model: what rebuilds the exact detector, and its checks.

The file follows timm's top-level keys (``architecture``, ``num_classes``,
``label_names``, ``model_args``, ``pretrained_cfg``) so tools that read timm
configs find what they expect, and adds a ``lossreg`` block::

    {
      "architecture": "atss",                 # detector registry name
      "num_classes": 3, "label_names": ["ellipse", "rectangle", "triangle"],
      "model_args": {...},                    # keyword arguments that rebuild the detector
      "pretrained_cfg": {"tag": ..., "hf_hub_id": ..., "input_size": [3, 256, 256], "mean": [...], ...},
                                              # keys without a value (no tag, no hf_hub_id yet) are left out, as timm does
      "lossreg": {
        "format_version": 1, "version": "0.1.0",
        "components": {"neck": {"name": "fpn", "params": {...}}, "head": {...},
                       "head.cls_loss": {"name": "hcra_c", "params": {...}}, ...},
        "backbone": {"name": "resnet18", "out_indices": [2, 3, 4], "strides": [8, 16, 32]},
        "postprocess": {"score_thr": 0.05, "nms_thr": 0.6, ...},
        "box_format": "xyxy", "image_range": [0, 1],
        "metrics": {"AP": ..., ...}, "dataset": "...", "dataset_split": "val",
        "files": {"model.safetensors": {"sha256": "...", "size": ...}}
      }
    }

Only ``architecture`` and ``model_args`` rebuild the model; ``components`` is the
same information with every value resolved, for people and the model card: each
entry's ``params`` are what that module was built with (the registry records them on
the instance, ``build_spec``), the values the detector passes at build time included
(a head's ``in_channels`` is the neck's ``out_channels``, not the signature's 256). It
is what :func:`check_config` validates against the installed registries before
anything is built; configs written before the entries were resolved load the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn

from .._registry import UnknownComponentError, component_info, declared_slots, get_registry
from .._version import __version__

__all__ = [
    "FORMAT_VERSION",
    "HubError",
    "check_config",
    "component_entries",
    "component_kind",
    "make_config",
]

#: Version of the config layout; a file with a larger one needs a newer lossreg.
FORMAT_VERSION = 1

#: Keys of a head spec that are components of their own, and their registry kind.
_POSTPROCESS = ("score_thr", "nms_thr", "pre_nms_topk", "max_dets")


class HubError(RuntimeError):
    """A published model that cannot be saved, found or loaded; the message says why and what to do."""


def _version_tuple(text: str) -> tuple[int, ...]:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text).release
    except InvalidVersion:
        raise HubError(f"config.json has an unreadable lossreg version {text!r}") from None


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON types (tuples become lists); refuses objects JSON cannot rebuild."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise HubError(f"{where} is {value}; JSON cannot hold it")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, nn.Module):
        raise HubError(
            f"{where} is a {type(value).__name__} instance; a published model needs every component as a "
            "registry name or {'name': ..., **params} dict (register it with lossreg.register_loss etc.)"
        )
    raise HubError(f"{where} is a {type(value).__name__}; only JSON values can be published")


def _built_spec(module: Any, name: str) -> Mapping[str, Any] | None:
    """The ``build_spec`` the registry left on ``module`` (lossreg._registry.record_build_spec), when it is ``name``'s."""
    spec = getattr(module, "build_spec", None)
    return spec if isinstance(spec, Mapping) and spec.get("name") == name else None


def _entry(kind: str, spec: Any, where: str, built: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``({"name", "params"}, {slot: sub-spec})``: a component with its defaults filled in.

    ``built`` is the module built from ``spec``, when there is one: its ``build_spec`` gives
    the values it actually received, the detector's build-time ones (a head's ``in_channels``,
    ``num_classes``, post-processing) included, in place of the signature's defaults.
    """
    if spec is None:
        return {"name": None, "params": {}}, {}
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = _plain(spec, where)
    name = spec.get("name")
    if not isinstance(name, str):
        raise HubError(f"{where} has no component name: {spec!r}")
    try:
        defaults = component_info(kind, name)["params"]
    except UnknownComponentError as exc:
        raise HubError(f"{where}: {exc.args[0] if exc.args else exc}") from None
    head_slots = declared_slots("head")
    params: dict[str, Any] = {}
    for key, default in defaults.items():
        if repr(default) == "<required>" or key in head_slots:
            continue
        params[key] = _plain(default, f"{where}.{key}") if _is_plain(default) else repr(default)
    slots: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "name":
            continue
        if key in head_slots and kind == "head":
            slots[key] = value
        else:
            params[key] = value
    resolved = _built_spec(built, name)
    for key, value in (resolved or {}).items():
        if key == "name" or (kind == "head" and key in head_slots):
            continue  # a head's components are entries of their own
        params[key] = _plain(value, f"{where}.{key}") if _is_plain(value) else repr(value)
    if kind == "head":  # the head's own default components count as chosen components
        for key in head_slots:
            if key in defaults and key not in slots:
                slots[key] = defaults[key]
    return {"name": name, "params": params}, slots


def _is_plain(value: Any) -> bool:
    try:
        _plain(value, "")
    except HubError:
        return False
    return True


def component_entries(model_args: Mapping[str, Any], model: nn.Module | None = None) -> dict[str, dict[str, Any]]:
    """Every component of a detector as ``{"neck": {name, params}, "head.cls_loss": {...}, ...}``.

    Each entry states the full configuration even when the model was built from bare
    names. With ``model`` (the detector built from ``model_args``), the params are the
    values each module was built with (its ``build_spec``): what the detector passed at
    build time too, e.g. the head's ``in_channels`` = the neck's ``out_channels``. Without
    it, or for a module built outside the registry, the registry's signature defaults
    fill what ``model_args`` leaves unset.
    """
    out: dict[str, dict[str, Any]] = {}
    head_slots = declared_slots("head")
    for key, top in declared_slots("detector").items():
        if key not in model_args or model_args[key] is None:
            continue
        module = getattr(model, key, None) if model is not None else None
        entry, slots = _entry(top.kind, model_args[key], f"model_args.{key}", module)
        out[key] = entry
        for slot, sub in slots.items():
            if sub is None:
                continue
            sub_module = getattr(module, slot, None) if module is not None else None
            sub_entry, _ = _entry(head_slots[slot].kind, sub, f"model_args.{key}.{slot}", sub_module)
            out[f"{key}.{slot}"] = sub_entry
    return out


def component_kind(key: str) -> str | None:
    """The registry kind of a ``components`` key (``"head.cls_loss"`` -> ``"loss"``); None when unknown."""
    last = key.rsplit(".", 1)[-1]
    slot = declared_slots("head").get(last) or declared_slots("detector").get(last)
    return slot.kind if slot is not None else None


def make_config(
    model: nn.Module,
    *,
    metrics: Mapping[str, Any] | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    input_size: int | tuple[int, int] | None = None,
    dataset: str | None = None,
    files: Mapping[str, Any] | None = None,
    dataset_split: str | None = None,
) -> dict[str, Any]:
    """The ``config.json`` dict of ``model`` (a lossreg detector built from registry names)."""
    arch = getattr(model, "arch", "") or ""
    model_args = getattr(model, "model_args", None)
    if not arch or model_args is None:
        raise HubError(
            f"{type(model).__name__} is not a lossreg detector (it has no arch/model_args); "
            "build it with lossreg.create_model or a recipe"
        )
    model_args = _plain(dict(model_args), "model_args")
    backbone = getattr(model, "backbone", None)
    body_cfg = dict(getattr(getattr(backbone, "body", None), "pretrained_cfg", {}) or {})
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    mean = getattr(model, "image_mean", None)
    std = getattr(model, "image_std", None)
    pcfg: dict[str, Any] = {
        "architecture": arch,
        "input_size": [3, *input_size] if input_size else None,
        "mean": [round(float(v), 6) for v in mean.flatten()] if mean is not None else None,
        "std": [round(float(v), 6) for v in std.flatten()] if std is not None else None,
        "num_classes": model_args.get("num_classes"),
        "classifier": sorted(_cls_layers(model)),
        "license": None,
        "hf_hub_id": None,
        "tag": None,
    }
    pcfg.update(_plain(dict(pretrained_cfg or {}), "pretrained_cfg"))
    pcfg = {k: v for k, v in pcfg.items() if v is not None}  # as timm writes it: no null keys
    feature_info = getattr(getattr(backbone, "body", None), "feature_info", None)
    out_indices = list(feature_info.out_indices) if feature_info is not None else None
    return {
        "architecture": arch,
        "num_classes": model_args.get("num_classes"),
        "label_names": model_args.get("label_names"),
        "model_args": model_args,
        "pretrained_cfg": pcfg,
        "lossreg": {
            "format_version": FORMAT_VERSION,
            "version": __version__,
            "components": component_entries(model_args, model),
            "backbone": {
                "name": model_args.get("backbone"),
                "out_indices": out_indices,
                "strides": list(getattr(type(model), "backbone_strides", ())),
                "timm_architecture": body_cfg.get("architecture"),
            },
            "postprocess": {k: model_args[k] for k in _POSTPROCESS if k in model_args},
            "box_format": "xyxy",
            "box_units": "pixels of the input image",
            "image_range": [0, 1],
            "metrics": _plain({k: v for k, v in (metrics or {}).items() if not isinstance(v, Mapping)}, "metrics"),
            "per_class": _plain(dict((metrics or {}).get("per_class") or {}), "metrics.per_class"),
            "dataset": dataset,
            "dataset_split": dataset_split,
            "files": _plain(dict(files or {}), "files"),
        },
    }


def _cls_layers(model: nn.Module) -> list[str]:
    from ..detectors.finetune import cls_output_layers

    return list(cls_output_layers(model))


def check_config(config: Any, source: str) -> None:
    """Refuse, with the reason and the fix, a config this installation cannot rebuild exactly.

    Checks the layout, the format and library versions, the architecture and every
    component against the installed registries. ``source`` names the file in messages.
    """
    if not isinstance(config, Mapping):
        raise HubError(f"{source}: expected a JSON object, got {type(config).__name__}")
    for key in ("architecture", "model_args", "lossreg"):
        if key not in config:
            raise HubError(f"{source}: no {key!r} key; this is not a lossreg model config (saved by lossreg.save_pretrained)")
    block = config["lossreg"]
    if not isinstance(block, Mapping) or not isinstance(config["model_args"], Mapping):
        raise HubError(f"{source}: 'lossreg' and 'model_args' must be JSON objects")
    fmt = block.get("format_version")
    if not isinstance(fmt, int) or fmt < 1:
        raise HubError(f"{source}: bad lossreg.format_version {fmt!r}")
    written_by = str(block.get("version", "0"))
    if fmt > FORMAT_VERSION or _version_tuple(written_by) > _version_tuple(__version__):
        raise HubError(
            f"{source} was written by lossreg {written_by} (config format {fmt}), newer than the installed "
            f"lossreg {__version__} (format {FORMAT_VERSION}); upgrade with `pip install -U lossreg`"
        )
    arch = config["architecture"]
    try:
        get_registry("detector").get(arch)
    except UnknownComponentError as exc:
        raise HubError(f"{source} names detector architecture {arch!r}, which this installation lacks: {exc}") from None
    components = block.get("components") or {}
    for key, entry in components.items():
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if name is None:
            continue
        kind = component_kind(key)
        if kind is None:
            raise HubError(f"{source} has a component slot {key!r} this installation does not know; upgrade lossreg")
        try:
            get_registry(kind).get(name)
        except (UnknownComponentError, KeyError) as exc:
            raise HubError(
                f"{source} uses {kind} {name!r} ({key}), which this installation does not have "
                f"(written by lossreg {written_by}); install the plugin that provides it or upgrade lossreg. {exc}"
            ) from None
    _check_model_args(config["model_args"], source, written_by)


def _check_model_args(model_args: Mapping[str, Any], source: str, written_by: str) -> None:
    """Every component named in ``model_args`` (what actually rebuilds the model) exists here.

    ``lossreg.components`` is only a description; a file whose ``model_args`` name a
    component the installation lacks would otherwise fail inside the detector's constructor.
    """
    detector_slots, head_slots = declared_slots("detector"), declared_slots("head")

    def check(kind: str, spec: Any, where: str) -> None:
        if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
            return
        name = spec.get("name") if isinstance(spec, Mapping) else spec
        if not isinstance(name, str):
            raise HubError(f"{source}: {where} must be a component name or {{'name': ...}}, got {spec!r}")
        try:
            get_registry(kind).get(name)
        except (UnknownComponentError, KeyError):
            raise HubError(
                f"{source}: {where} names {kind} {name!r}, which this installation does not have (written by lossreg "
                f"{written_by}); install the plugin that provides it or upgrade lossreg"
            ) from None
        if kind == "head" and isinstance(spec, Mapping):
            for key, sub in spec.items():
                if key in head_slots:
                    check(head_slots[key].kind, sub, f"{where}.{key}")

    for key, value in model_args.items():
        slot = detector_slots.get(key) or head_slots.get(key)
        if slot is not None:
            check(slot.kind, value, f"model_args.{key}")
