"""torchvision's COCO detectors -> lossreg detectors with the same detections.

>>> tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None)  # doctest: +SKIP
>>> model = lossreg.convert.from_torchvision(tv)                                                  # doctest: +SKIP

The detector is ``lossreg.detectors.torchvision_style``'s configuration of the source's
builder; the weights are renamed key by key and loaded strictly, and the class outputs
are re-ordered from torchvision's layout (slot 0 background or unused, COCO's 91 slots)
to lossreg's (``classes="coco80"``: the 80 COCO classes, contiguous, with their names).
What is not in the weights (post-processing thresholds, the transform's mean and std, the
frozen BatchNorm's eps) is read from a model instance, or is the builder's default for a
state dict.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._registry import get_registry
from ..detectors.finetune import training_state_prefixes, with_fresh_state
from ..detectors.torchvision_style import TORCHVISION_ARCHS, torchvision_config
from .coco import COCO_CLASSES, TORCHVISION_COCO_SLOTS, torchvision_label_names

__all__ = ["TORCHVISION_WEIGHTS", "convert_state_dict", "detect_arch", "from_torchvision", "load_torchvision_file"]

#: torchvision's published COCO weights: enum name -> (builder, lossreg pretrained name).
TORCHVISION_WEIGHTS: dict[str, tuple[str, str]] = {
    "RetinaNet_ResNet50_FPN_Weights.COCO_V1": ("retinanet_resnet50_fpn", "retinanet_resnet50_fpn.tv_coco"),
    "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1": ("retinanet_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2.tv_coco"),
    "FCOS_ResNet50_FPN_Weights.COCO_V1": ("fcos_resnet50_fpn", "fcos_resnet50_fpn.tv_coco"),
    "FasterRCNN_ResNet50_FPN_Weights.COCO_V1": ("fasterrcnn_resnet50_fpn", "faster_rcnn_resnet50_fpn.tv_coco"),
    "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1": ("fasterrcnn_resnet50_fpn_v2", "faster_rcnn_resnet50_fpn_v2.tv_coco"),
}

#: The published v1 weights were saved after torchvision's ``overwrite_eps(model, 0.0)``.
_PUBLISHED_EPS = {"retinanet_resnet50_fpn": 0.0, "fasterrcnn_resnet50_fpn": 0.0}


# --------------------------------------------------------------------------- architecture


def detect_arch(source: nn.Module | Mapping[str, Tensor]) -> str:
    """torchvision's builder name of a model instance or state dict (by its layers / keys)."""
    keys = set(source.state_dict() if isinstance(source, nn.Module) else source)
    if "head.regression_head.bbox_ctrness.weight" in keys:
        return "fcos_resnet50_fpn"
    if "head.classification_head.cls_logits.weight" in keys:
        # v2: GroupNorm after each tower conv (conv.0.1.weight); v1: plain convs (new or old layout)
        return "retinanet_resnet50_fpn_v2" if "head.classification_head.conv.0.1.weight" in keys else "retinanet_resnet50_fpn"
    if "roi_heads.box_predictor.cls_score.weight" in keys:
        if "roi_heads.box_head.fc6.weight" in keys:
            return "fasterrcnn_resnet50_fpn"
        if "roi_heads.box_head.0.0.weight" in keys:
            return "fasterrcnn_resnet50_fpn_v2"
    raise ValueError(
        "cannot tell which torchvision detector this is (no RetinaNet / FCOS / Faster R-CNN head keys); "
        f"pass arch= one of {', '.join(TORCHVISION_ARCHS)}"
    )


def _num_tv_classes(state: Mapping[str, Tensor], tv_arch: str) -> int:
    if tv_arch.startswith("fasterrcnn"):
        return int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])
    logits = state["head.classification_head.cls_logits.weight"].shape[0]
    anchors = 1 if tv_arch.startswith("fcos") else 9
    return int(logits // anchors)


# --------------------------------------------------------------------------- keys


def _normalise_legacy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's pre-0.13 key layouts (what the COCO_V1 files hold) -> the current ones.

    Heads' tower convs ``conv.{2i}`` -> ``conv.{i}.0``; the RPN's ``conv`` -> ``conv.0.0``;
    FPN ``inner_blocks.i`` / ``layer_blocks.i`` -> ``*.i.0`` (what torchvision's own
    ``_load_from_state_dict`` hooks do).
    """
    out: dict[str, Tensor] = {}
    fcos = "head.regression_head.bbox_ctrness.weight" in state  # FCOS's towers are plain Sequentials
    for key, value in state.items():
        m = re.match(r"^(head\.(?:classification|regression)_head\.conv)\.(\d+)\.(weight|bias)$", key)
        if m and not fcos:
            key = f"{m[1]}.{int(m[2]) // 2}.0.{m[3]}"
        m = re.match(r"^(rpn\.head\.conv)\.(weight|bias)$", key)
        if m:
            key = f"{m[1]}.0.0.{m[2]}"
        m = re.match(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$", key)
        if m:
            key = f"{m[1]}.0.{m[2]}"
        out[key] = value
    return out


def _rename(key: str, tv_arch: str) -> str | None:
    """The lossreg key of a torchvision key; None for keys without a counterpart."""
    if key.endswith("num_batches_tracked"):
        return key  # kept only where lossreg has plain BatchNorm (checked against the model)
    if key.startswith("backbone.body."):
        return key
    if key.startswith("backbone.fpn."):
        return "neck.fpn." + key[len("backbone.fpn."):]
    if tv_arch.startswith(("retinanet", "fcos")):
        norm = tv_arch != "retinanet_resnet50_fpn"  # v2 and FCOS towers: conv, norm, ReLU per layer
        m = re.match(r"^head\.(classification|regression)_head\.conv\.(\d+)\.(\d+)\.(weight|bias)$", key)
        if m:  # Conv2dNormActivation layout: conv.i.0 conv, conv.i.1 norm
            tower = "cls_tower" if m[1] == "classification" else "reg_tower"
            return f"head.{tower}.{int(m[2]) * (3 if norm else 2) + int(m[3])}.{m[4]}"
        m = re.match(r"^head\.(classification|regression)_head\.conv\.(\d+)\.(weight|bias)$", key)
        if m:  # FCOS's plain Sequential(conv, GN, ReLU, ...): same indices as lossreg's tower
            tower = "cls_tower" if m[1] == "classification" else "reg_tower"
            return f"head.{tower}.{m[2]}.{m[3]}"
        names = {
            "head.classification_head.cls_logits": "head.cls_out",
            "head.regression_head.bbox_reg": "head.reg_out",
            "head.regression_head.bbox_ctrness": "head.quality_out",
        }
        prefix, _, leaf = key.rpartition(".")
        return f"{names[prefix]}.{leaf}" if prefix in names else None
    # Faster R-CNN
    m = re.match(r"^rpn\.head\.conv\.(\d+)\.0\.(weight|bias)$", key)
    if m:
        return f"rpn_head.conv.{m[2]}" if m[1] == "0" else f"rpn_head.extra_convs.{int(m[1]) - 1}.{m[2]}"
    m = re.match(r"^rpn\.head\.(cls_logits|bbox_pred)\.(weight|bias)$", key)
    if m:
        return f"rpn_head.{'cls_out' if m[1] == 'cls_logits' else 'reg_out'}.{m[2]}"
    m = re.match(r"^roi_heads\.box_head\.(fc6|fc7)\.(weight|bias)$", key)
    if m:
        return f"roi_head.{m[1]}.{m[2]}"
    m = re.match(r"^roi_heads\.box_head\.(\d+)\.(\d+)\.(\w+)$", key)
    if m:  # v2: Conv2dNormActivation(conv, BN) blocks -> roi_head.convs.{3i + j}
        return f"roi_head.convs.{int(m[1]) * 3 + int(m[2])}.{m[3]}"
    m = re.match(r"^roi_heads\.box_head\.(\d+)\.(weight|bias)$", key)
    if m:  # v2: the Linear after the convs and the Flatten
        return f"roi_head.fc6.{m[2]}"
    m = re.match(r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$", key)
    if m:
        return f"roi_head.{m[1]}.{m[2]}"
    return None


def _rows(t: Tensor, index: Sequence[int]) -> Tensor:
    return t[torch.as_tensor(list(index), dtype=torch.long)].clone()


def convert_state_dict(
    state: Mapping[str, Tensor], tv_arch: str, slots: Sequence[int], num_tv_classes: int
) -> dict[str, Tensor]:
    """torchvision ``state`` -> lossreg keys, the class outputs restricted to torchvision ``slots``, in that order.

    Sigmoid heads (RetinaNet, FCOS): output row ``a * C_tv + slot`` becomes ``a * C + i``.
    Faster R-CNN: ``cls_score`` rows ``slots`` then the background (torchvision's row 0,
    lossreg's last); ``bbox_pred`` rows ``slot * 4 + k`` become ``i * 4 + k``.
    """
    state = _normalise_legacy(dict(state))
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = _rename(key, tv_arch)
        if new is None:
            raise ValueError(f"torchvision {tv_arch}: unexpected key {key!r} (not a {tv_arch} state dict?)")
        out[new] = value
    if tv_arch.startswith(("retinanet", "fcos")):
        anchors = 1 if tv_arch.startswith("fcos") else 9
        index = [a * num_tv_classes + s for a in range(anchors) for s in slots]
        for leaf in ("weight", "bias"):
            out[f"head.cls_out.{leaf}"] = _rows(out[f"head.cls_out.{leaf}"], index)
    else:
        for leaf in ("weight", "bias"):
            out[f"roi_head.cls_score.{leaf}"] = _rows(out[f"roi_head.cls_score.{leaf}"], [*slots, 0])
            out[f"roi_head.bbox_pred.{leaf}"] = _rows(
                out[f"roi_head.bbox_pred.{leaf}"], [s * 4 + k for s in slots for k in range(4)]
            )
    return out


# --------------------------------------------------------------------------- settings of an instance


def _instance_settings(model: nn.Module, tv_arch: str) -> tuple[dict[str, Any], float | None]:
    """Post-processing overrides and the backbone's BatchNorm eps read from a torchvision model."""
    transform = getattr(model, "transform", None)
    if transform is not None:
        mean = [round(float(v), 6) for v in transform.image_mean]
        std = [round(float(v), 6) for v in transform.image_std]
        if mean != [0.485, 0.456, 0.406] or std != [0.229, 0.224, 0.225]:
            raise ValueError(
                f"torchvision model normalises with mean {mean} / std {std}; lossreg's ResNet-50 uses ImageNet's "
                "(0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), so the converted model would see other inputs"
            )
    eps = None
    for m in model.backbone.body.modules():
        if hasattr(m, "running_var") and hasattr(m, "eps"):
            eps = float(m.eps)
            break
    over: dict[str, Any] = {}
    if tv_arch.startswith(("retinanet", "fcos")):
        over = {
            "score_thr": float(model.score_thresh),
            "nms_thr": float(model.nms_thresh),
            "max_dets": int(model.detections_per_img),
            "pre_nms_topk": int(model.topk_candidates),
        }
    else:
        rpn, roi = model.rpn, model.roi_heads
        over = {
            "score_thr": float(roi.score_thresh),
            "nms_thr": float(roi.nms_thresh),
            "max_dets": int(roi.detections_per_img),
            "pre_nms_topk": int(rpn._pre_nms_top_n["testing"]),
            "rpn_head": {
                "pre_nms_topk_train": int(rpn._pre_nms_top_n["training"]),
                "post_nms_topk_train": int(rpn._post_nms_top_n["training"]),
                "post_nms_topk_test": int(rpn._post_nms_top_n["testing"]),
                "nms_thr": float(rpn.nms_thresh),
                "min_size": float(rpn.min_size),
                "score_thr": float(rpn.score_thresh),
            },
            "roi_head": {"coder_stds": [1.0 / float(w) for w in roi.box_coder.weights]},
        }
    return over, eps


# --------------------------------------------------------------------------- entry points


def load_torchvision_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A torchvision ``.pth`` state dict, loaded with ``weights_only=True``."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # a torchvision reference-scripts checkpoint
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return dict(state)


def _resolve_slots(
    num_tv: int, tv_arch: str, classes: str, label_names: Sequence[str] | None
) -> tuple[list[int], list[str] | None]:
    two_stage = tv_arch.startswith("fasterrcnn")
    if classes not in ("auto", "coco80", "all"):
        raise ValueError(f"classes must be 'auto', 'coco80' or 'all', got {classes!r}")
    if classes == "auto":
        classes = "coco80" if num_tv == 91 else "all"
    if classes == "coco80":
        if num_tv != 91:
            raise ValueError(f"classes='coco80' needs torchvision's 91 COCO slots, the model has {num_tv}")
        if label_names is not None and list(label_names) != list(COCO_CLASSES):
            raise ValueError("classes='coco80' names the classes itself; leave label_names unset")
        return list(TORCHVISION_COCO_SLOTS), list(COCO_CLASSES)
    # every slot kept: sigmoid heads 0..C-1 as torchvision's labels; Faster R-CNN drops slot 0 (background)
    slots = list(range(1, num_tv)) if two_stage else list(range(num_tv))
    if label_names is None and num_tv == 91:
        names = torchvision_label_names()
        label_names = names[1:] if two_stage else names
    if label_names is not None and len(label_names) != len(slots):
        raise ValueError(f"{len(label_names)} label_names for {len(slots)} classes")
    return slots, (list(label_names) if label_names is not None else None)


def from_torchvision(
    model_or_state_dict: nn.Module | Mapping[str, Tensor] | str | os.PathLike[str],
    arch: str | None = None,
    *,
    classes: str = "auto",
    label_names: Sequence[str] | None = None,
    bn_eps: float | None = None,
    **overrides: Any,
) -> nn.Module:
    """A lossreg detector that reproduces a torchvision RetinaNet (v1/v2), FCOS or Faster R-CNN (v1/v2).

    Args:
        model_or_state_dict: a torchvision model instance, its ``state_dict()``, a ``.pth``
            file of one, or the name of torchvision's published weights
            (``"RetinaNet_ResNet50_FPN_Weights.COCO_V1"``; downloaded, hash-checked and
            converted once through ``create_model(<tag>, pretrained=True)``).
        arch: torchvision's builder name (``retinanet_resnet50_fpn``, ``..._v2``,
            ``fcos_resnet50_fpn``, ``fasterrcnn_resnet50_fpn``, ``..._v2``) [detected from the keys].
        classes: ``"coco80"``: the 80 COCO classes, contiguous, named (torchvision's 11
            unused slots, and its background slot, dropped); ``"all"``: every slot kept
            (sigmoid heads keep torchvision's labels, Faster R-CNN's are shifted by one as
            its background slot moves last); ``"auto"`` [default]: ``coco80`` for a 91-slot
            model, else ``all``.
        label_names: class names for ``classes="all"`` [torchvision's COCO names for 91 slots].
        bn_eps: the backbone's BatchNorm eps [an instance's own; for a state dict or file,
            0.0 for the v1 RetinaNet / Faster R-CNN (their published weights'), else 1e-5].
        **overrides: further detector keyword arguments (post-processing, components).

    Exactness (tests/convert/test_torchvision.py): in eval mode, on an image torchvision
    does not resize (its ``transform.min_size`` / ``max_size`` set to the image's sides,
    or an image already resized with :func:`~lossreg.detectors.torchvision_style.torchvision_resize`),
    the same boxes (1e-3 px), scores (1e-5), labels and order. With ``coco80`` that holds
    as long as torchvision's unused slots score nothing above ``score_thr`` (for Faster
    R-CNN, as long as their softmax share is negligible: lossreg's softmax has no
    columns for them); ``classes="all"`` reproduces any weights.
    """
    if isinstance(model_or_state_dict, str) and model_or_state_dict in TORCHVISION_WEIGHTS:
        from .._factory import create_model

        tv_arch, tag = TORCHVISION_WEIGHTS[model_or_state_dict]
        return create_model(tag, pretrained=True, **overrides)
    instance = isinstance(model_or_state_dict, nn.Module)
    if instance:
        state = dict(model_or_state_dict.state_dict())
    elif isinstance(model_or_state_dict, Mapping):
        state = dict(model_or_state_dict)
    elif isinstance(model_or_state_dict, (str, os.PathLike)):
        if not Path(model_or_state_dict).is_file():
            raise FileNotFoundError(
                f"{model_or_state_dict}: no such file (torchvision weights names: {', '.join(TORCHVISION_WEIGHTS)})"
            )
        state = load_torchvision_file(model_or_state_dict)
    else:
        raise TypeError(f"expected a torchvision model, state dict, file or weights name, got {type(model_or_state_dict).__name__}")
    state = _normalise_legacy(state)
    tv_arch = arch or detect_arch(state)
    if tv_arch not in TORCHVISION_ARCHS:
        raise ValueError(f"unknown torchvision detector {tv_arch!r}; known: {', '.join(TORCHVISION_ARCHS)}")
    lossreg_arch, kwargs = torchvision_config(tv_arch)
    eps = _PUBLISHED_EPS.get(tv_arch)
    if instance:
        settings, eps = _instance_settings(model_or_state_dict, tv_arch)  # type: ignore[arg-type]
        for key, value in settings.items():
            kwargs[key] = {**kwargs[key], **value} if isinstance(value, dict) else value
    if bn_eps is not None:
        eps = bn_eps
    if eps is not None and abs(eps - 1e-5) > 1e-12:
        kwargs["bn_eps"] = eps
    num_tv = _num_tv_classes(state, tv_arch)
    slots, names = _resolve_slots(num_tv, tv_arch, classes, label_names)
    kwargs.update(num_classes=len(slots), label_names=names)
    for key, value in overrides.items():
        kwargs[key] = {**kwargs[key], **value} if isinstance(value, dict) and isinstance(kwargs.get(key), dict) else value
    model = get_registry("detector").create(lossreg_arch, **kwargs)
    converted = convert_state_dict(state, tv_arch, slots, num_tv)
    own = model.state_dict()
    # frozen BatchNorm has no num_batches_tracked; plain BatchNorm without one in the source starts at 0
    converted = {k: v for k, v in converted.items() if not k.endswith("num_batches_tracked") or k in own}
    for key in own:
        if key.endswith("num_batches_tracked") and key not in converted:
            converted[key] = torch.zeros_like(own[key])
    # the losses' and balancers' training state is lossreg's own and starts fresh
    converted = with_fresh_state(model, converted, training_state_prefixes(model))
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"torchvision {tv_arch} -> lossreg {lossreg_arch}: missing {missing[:6]}, unexpected {unexpected[:6]}"
        )
    bad = [k for k in own if own[k].shape != converted[k].shape]
    if bad:
        raise ValueError(
            f"torchvision {tv_arch}: shape mismatch for {bad[0]}: {tuple(converted[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}"
        )
    model.load_state_dict(converted, strict=True)
    model.eval()
    return model
