"""mmdetection checkpoints -> lossreg detectors with the same detections.

>>> model = lossreg.convert.from_mmdet("atss_r50_fpn_1x_coco_20200209-985f7bd0.pth", "atss_r50_fpn_1x_coco")  # doctest: +SKIP

The ``.pth`` files mmdetection publishes hold ``{"meta": ..., "state_dict": ...}``; they are
read with ``torch.load(weights_only=True)``. The detector is
``lossreg.detectors.mmdet_style``'s configuration of the named mmdetection config; the
weights are renamed key by key (mmdetection's layout, read from its source: ``ResNet``
keeps torchvision's layer names, ``FPN`` has ``lateral_convs`` / ``fpn_convs`` of
``ConvModule``s whose extra convs are P6 and P7, the heads' towers are ``cls_convs`` /
``reg_convs``) and loaded strictly. mmdetection's classes are COCO's 80, contiguous, with
the softmax background last, as lossreg's: no row is moved.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._registry import get_registry
from ..detectors.finetune import training_state_prefixes, with_fresh_state
from ..detectors.mmdet_style import MMDET_ARCHS, mmdet_config
from .coco import COCO_CLASSES

__all__ = ["MMDET_ARCHS", "convert_mmdet_state_dict", "from_mmdet", "load_mmdet_checkpoint"]


def load_mmdet_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` of an mmdetection ``.pth`` file, read with ``weights_only=True``."""
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle errors of every kind become one message
        raise ValueError(
            f"{path}: cannot read it with torch.load(weights_only=True) ({type(exc).__name__}: {exc}); lossreg loads "
            "only checkpoints made of tensors and plain containers"
        ) from exc
    if isinstance(ckpt, Mapping) and "state_dict" in ckpt:
        return dict(ckpt["state_dict"]), dict(ckpt.get("meta") or {})
    if isinstance(ckpt, Mapping):
        return dict(ckpt), {}
    raise ValueError(f"{path}: expected an mmdetection checkpoint dict, got {type(ckpt).__name__}")


def _rename(key: str, lossreg_arch: str, num_levels: int) -> str | None:
    """The lossreg key of an mmdetection key (``num_levels`` backbone levels in the FPN); None: no counterpart."""
    if key.startswith("backbone."):
        return "backbone.body." + key[len("backbone."):]
    m = re.match(r"^neck\.lateral_convs\.(\d+)\.conv\.(weight|bias)$", key)
    if m:
        return f"neck.fpn.inner_blocks.{m[1]}.0.{m[2]}"
    m = re.match(r"^neck\.fpn_convs\.(\d+)\.conv\.(weight|bias)$", key)
    if m:
        i = int(m[1])
        if i < num_levels:
            return f"neck.fpn.layer_blocks.{i}.0.{m[2]}"
        return f"neck.fpn.extra_blocks.{'p6' if i == num_levels else 'p7'}.{m[2]}"
    m = re.match(r"^bbox_head\.(cls|reg)_convs\.(\d+)\.(conv|gn)\.(weight|bias)$", key)
    if m:  # ConvModule(conv[, gn], relu): lossreg's tower is conv[, gn], relu per layer
        tower = "cls_tower" if m[1] == "cls" else "reg_tower"
        step = 2 if lossreg_arch == "retinanet" else 3  # GN towers everywhere else
        return f"head.{tower}.{int(m[2]) * step + (1 if m[3] == 'gn' else 0)}.{m[4]}"
    m = re.match(r"^bbox_head\.vfnet_reg_conv\.(conv|gn)\.(weight|bias)$", key)
    if m:
        return f"head.reg_init_conv.{0 if m[1] == 'conv' else 1}.{m[2]}"
    m = re.match(r"^bbox_head\.scales_refine\.(\d+)\.scale$", key)
    if m:
        return f"head.scales_refine.{m[1]}.scale"
    names = {
        "bbox_head.retina_cls": "head.cls_out", "bbox_head.retina_reg": "head.reg_out",
        "bbox_head.atss_cls": "head.cls_out", "bbox_head.atss_reg": "head.reg_out",
        "bbox_head.atss_centerness": "head.quality_out",
        "bbox_head.conv_cls": "head.cls_out", "bbox_head.conv_reg": "head.reg_out",
        "bbox_head.conv_centerness": "head.quality_out",
        "bbox_head.vfnet_reg": "head.reg_init_out", "bbox_head.vfnet_reg_refine_dconv": "head.refine_conv",
        "bbox_head.vfnet_reg_refine": "head.reg_refine_out", "bbox_head.vfnet_cls_dconv": "head.cls_conv",
        "bbox_head.vfnet_cls": "head.cls_out",
        "rpn_head.rpn_conv": "rpn_head.conv", "rpn_head.rpn_cls": "rpn_head.cls_out", "rpn_head.rpn_reg": "rpn_head.reg_out",
        "roi_head.bbox_head.shared_fcs.0": "roi_head.fc6", "roi_head.bbox_head.shared_fcs.1": "roi_head.fc7",
        "roi_head.bbox_head.fc_cls": "roi_head.cls_score", "roi_head.bbox_head.fc_reg": "roi_head.bbox_pred",
    }
    m = re.match(r"^bbox_head\.scales\.(\d+)\.scale$", key)
    if m:
        return f"head.scales.{m[1]}.scale"
    prefix, _, leaf = key.rpartition(".")
    return f"{names[prefix]}.{leaf}" if prefix in names else None


def convert_mmdet_state_dict(state: Mapping[str, Tensor], config_name: str) -> dict[str, Tensor]:
    """mmdetection ``state`` (of ``config_name``'s model) -> lossreg keys; raises on a key without a counterpart."""
    lossreg_arch, _ = mmdet_config(config_name)
    num_levels = 4 if lossreg_arch == "faster_rcnn" else 3
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = _rename(key, lossreg_arch, num_levels)
        if new is None:
            raise ValueError(f"mmdetection {config_name}: unexpected key {key!r} (not a {config_name} checkpoint?)")
        out[new] = value
    if name_of(config_name) in _BGR_INPUT:  # the caffe ResNet reads BGR: its first conv, flipped, reads RGB
        out["backbone.body.conv1.weight"] = out["backbone.body.conv1.weight"].flip(1).clone()
    return out


#: configs whose model reads BGR images (mmdetection's ``bgr_to_rgb=False``)
_BGR_INPUT = {"fcos_r50-caffe_fpn_gn-head_1x_coco"}


def name_of(config_name: str) -> str:
    """mmdetection 3.x's name of a config (2.x names accepted)."""
    return {"faster_rcnn_r50_fpn_1x_coco": "faster-rcnn_r50_fpn_1x_coco",
            "fcos_r50_caffe_fpn_gn-head_1x_coco": "fcos_r50-caffe_fpn_gn-head_1x_coco"}.get(config_name, config_name)


def from_mmdet(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    arch: str,
    *,
    label_names: list[str] | None = None,
    **overrides: Any,
) -> nn.Module:
    """A lossreg detector that reproduces an mmdetection baseline.

    Args:
        checkpoint: the ``.pth`` file mmdetection publishes (read with ``weights_only=True``),
            or its loaded dict (``{"state_dict": ..., "meta": ...}``) or bare state dict.
        arch: mmdetection's config name: ``retinanet_r50_fpn_1x_coco``,
            ``atss_r50_fpn_1x_coco``, ``fcos_r50-caffe_fpn_gn-head_1x_coco``,
            ``vfnet_r50_fpn_1x_coco``, ``faster-rcnn_r50_fpn_1x_coco`` (2.x names with ``_``
            accepted).
        label_names: the classes [the checkpoint's ``meta["CLASSES"]`` / ``meta["dataset_meta"]``,
            else COCO's 80 when the model has 80 classes].
        **overrides: further detector keyword arguments.

    Exactness (``tests/convert/test_mmdet.py``, against mmdetection's own model code when
    it is installed): in eval mode, on the same image (mmdetection's data preprocessor:
    0-255 BGR in, normalised, padded to 32), the same boxes (1e-3 px), scores (1e-5),
    labels and order.
    """
    if isinstance(checkpoint, Mapping):
        state = dict(checkpoint.get("state_dict", checkpoint))
        meta = dict(checkpoint.get("meta") or {}) if "state_dict" in checkpoint else {}
    else:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"{checkpoint}: no such file")
        state, meta = load_mmdet_checkpoint(checkpoint)
    lossreg_arch, kwargs = mmdet_config(arch)
    converted = convert_mmdet_state_dict(state, arch)
    if lossreg_arch == "faster_rcnn":
        num_classes = int(converted["roi_head.cls_score.weight"].shape[0]) - 1
    else:
        anchors = 9 if lossreg_arch == "retinanet" else 1
        num_classes = int(converted["head.cls_out.weight"].shape[0]) // anchors
    if label_names is None:
        found = meta.get("CLASSES") or (meta.get("dataset_meta") or {}).get("classes")
        if found is not None and len(found) == num_classes:
            label_names = [str(n) for n in found]
        elif num_classes == 80:
            label_names = list(COCO_CLASSES)
    kwargs.update(num_classes=num_classes, label_names=label_names)
    for key, value in overrides.items():
        kwargs[key] = {**kwargs[key], **value} if isinstance(value, dict) and isinstance(kwargs.get(key), dict) else value
    model = get_registry("detector").create(lossreg_arch, **kwargs)
    own = model.state_dict()
    converted = {k: v for k, v in converted.items() if not k.endswith("num_batches_tracked") or k in own}
    for key in own:
        if key.endswith("num_batches_tracked") and key not in converted:
            converted[key] = torch.zeros_like(own[key])
    converted = with_fresh_state(model, converted, training_state_prefixes(model))
    missing, unexpected = sorted(set(own) - set(converted)), sorted(set(converted) - set(own))
    if missing or unexpected:
        raise ValueError(f"mmdetection {arch} -> lossreg {lossreg_arch}: missing {missing[:6]}, unexpected {unexpected[:6]}")
    bad = [k for k in own if own[k].shape != converted[k].shape]
    if bad:
        raise ValueError(
            f"mmdetection {arch}: shape mismatch for {bad[0]}: {tuple(converted[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}"
        )
    model.load_state_dict(converted, strict=True)
    return model.eval()
