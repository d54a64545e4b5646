"""What every detector shares: class names, the timm backbone, the neck, input normalisation.

One-stage (:mod:`.one_stage`) and two-stage (:mod:`.two_stage`) detectors build
their heads on top of :class:`DetectorBase`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .._registry import Slot, build_component, close_matches, get_registry, slots_of
from .backbone import TimmBackbone

__all__ = ["DetectorBase", "as_spec_dict", "clip_detections", "head_components"]


def head_components(owner: str, head: str, components: dict[str, Any]) -> dict[str, Any]:
    """The slot overrides of ``components`` for the head ``head``: ``None`` dropped, ``"none"`` -> ``None``.

    Raises ``TypeError`` naming the slots the head declares when a key is not one of them.
    """
    if not isinstance(head, str):
        return {k: v for k, v in components.items() if v is not None}  # an instance: its own business
    declared = slots_of(get_registry("head").get(head))
    unknown = sorted(set(components) - set(declared))
    if unknown:
        near = close_matches(unknown[0], declared)
        hint = f" did you mean {', '.join(map(repr, near))}?" if near else ""
        raise TypeError(
            f"{owner}: unexpected keyword argument(s) {', '.join(map(repr, unknown))};{hint} the {head!r} head's "
            f"component slots are {', '.join(declared) or '(none)'}"
        )
    out = {k: v for k, v in components.items() if v is not None}
    for key, value in out.items():
        if isinstance(value, str) and value.lower() == "none":
            out[key] = None  # an optional component (quality_loss) switched off
        elif not isinstance(value, (str, Mapping)) and (isinstance(value, (bool, int, float, list, tuple)) or not callable(value)):
            kind = declared[key].kind
            raise TypeError(
                f"{owner}: {key} must be a {kind} name (see `lossreg list {kind}`), a {{'name': ..., **params}} "
                f"mapping or a built {kind} module, got {type(value).__name__} {value!r}"
            )
    return out


class DetectorBase(nn.Module):
    """Backbone + neck + normalisation; subclasses add the heads and ``forward``.

    Args:
        num_classes: object classes (positive int).
        backbone: any timm model name [``default_backbone``].
        pretrained_backbone: timm ImageNet weights [False].
        neck: registry name or ``{name, **params}`` [``neck_defaults``].
        label_names: one name per class [None: unnamed; fine-tuning then matches no class].
        freeze_bn: frozen BatchNorm in the backbone [= ``pretrained_backbone``].
        frozen_stages: backbone stages without gradients, BatchNorm in eval mode [-1: none;
            0 the stem, k the stem + k stages; see :class:`~.backbone.TimmBackbone`].
        bn_eps: the backbone's BatchNorm epsilon [None: timm's 1e-5; torchvision's COCO_V1
            RetinaNet / Faster R-CNN weights use 0.0].
        pad_fill: what the batch padding (to a multiple of 32) shows the network: ``"zero"``
            [default] black pixels (0 in 0-1 RGB), ``"mean"`` the normalisation mean, i.e.
            zeros after normalisation, what torchvision's and mmdetection's detectors see.
        backbone_args: further :class:`~.backbone.TimmBackbone` arguments [None]: ``style``
            (``"caffe"``: ResNet strides on the 1x1 convs), ``mean`` / ``std`` (the input
            normalisation, in 0-1 RGB units, instead of the timm model's).

    Sets ``num_classes``, ``label_names``, ``backbone``, ``neck``, the
    ``image_mean``/``image_std`` buffers and ``model_args`` (the arguments above,
    resolved; subclasses add theirs).
    """

    arch: str = ""
    #: The components this detector is assembled from by name; subclasses add their heads.
    slots: ClassVar[dict[str, Slot]] = {"neck": Slot("neck")}
    default_backbone: str = "resnet50"
    neck_defaults: dict[str, Any] = {"name": "fpn", "extra": "p6p7"}
    backbone_strides: tuple[int, ...] = (8, 16, 32)

    def __init__(
        self,
        num_classes: int,
        backbone: str | None,
        pretrained_backbone: bool,
        neck: str | dict[str, Any] | None,
        label_names: Sequence[str] | None,
        freeze_bn: bool | None,
        *,
        frozen_stages: int = -1,
        bn_eps: float | None = None,
        pad_fill: str = "zero",
        backbone_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if pad_fill not in ("zero", "mean"):
            raise ValueError(f"{self.arch or type(self).__name__}: pad_fill must be 'zero' or 'mean', got {pad_fill!r}")
        self.pad_fill = pad_fill
        name = self.arch or type(self).__name__
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"{name}: num_classes must be a positive int, got {num_classes!r}")
        from .._limits import MAX_NUM_CLASSES, check_count
        from .inputs import check_label_names

        check_count(name, "num_classes", num_classes, MAX_NUM_CLASSES, "a detector's classes are its dataset's")
        label_names = check_label_names(name, label_names, num_classes)
        backbone = backbone or self.default_backbone
        freeze_bn = pretrained_backbone if freeze_bn is None else freeze_bn
        self.num_classes = num_classes
        self.label_names = list(label_names) if label_names is not None else None
        self.backbone = TimmBackbone(
            backbone, self.backbone_strides, pretrained_backbone, freeze_bn, frozen_stages=frozen_stages, bn_eps=bn_eps,
            **dict(backbone_args or {}),
        )
        neck_cfg = as_spec_dict(neck, self.neck_defaults["name"])
        if neck_cfg["name"] == self.neck_defaults["name"]:
            neck_cfg = {**self.neck_defaults, **neck_cfg}
        self.neck = build_component("neck", neck_cfg, in_channels=self.backbone.channels)
        cfg = getattr(self.backbone.body, "pretrained_cfg", {}) or {}
        mean = torch.tensor(self.backbone.mean or cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
        std = torch.tensor(self.backbone.std or cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)
        self.register_buffer("image_mean", mean, persistent=False)
        self.register_buffer("image_std", std, persistent=False)
        # what rebuilds this exact detector (saved with published weights); subclasses extend it
        self.model_args: dict[str, Any] = {
            "num_classes": num_classes,
            "backbone": backbone,
            "neck": neck_cfg,
            "label_names": self.label_names,
            "freeze_bn": freeze_bn,
            "frozen_stages": frozen_stages,
            "bn_eps": bn_eps,
            "pad_fill": pad_fill,
            "backbone_args": dict(backbone_args) if backbone_args else None,
        }

    @property
    def min_train_side(self) -> int:
        """Training batches are padded to at least this many pixels a side: twice the backbone's coarsest
        stride, so that its BatchNorm never sees a 1 x 1 map of a one-image batch."""
        return 2 * max(getattr(self.backbone, "strides", (32,)))

    def _features(self, images: Tensor, sizes: Sequence[tuple[int, int]] | None = None) -> list[Tensor]:
        """Normalise 0-1 RGB images with the backbone's mean/std; return the neck's levels, finest first.

        The images are cast to the model's dtype first (float64 or float16 input to a float32 model).
        """
        images = images.to(self.image_mean.dtype)
        x = (images - self.image_mean.to(images.dtype)) / self.image_std.to(images.dtype)
        if self.pad_fill == "mean" and sizes is not None:  # the padding of each image's own (H, W): 0 after normalising
            x = x * _inside_mask(x, sizes)
        return self.neck(self.backbone(x))


def _inside_mask(x: Tensor, sizes: Sequence[tuple[int, int]]) -> Tensor:
    """``[B, 1, H, W]`` 1 inside each image's own ``(H_b, W_b)``, 0 in its padding (no Python-side data branch)."""
    limits = torch.as_tensor([[int(h), int(w)] for h, w in sizes], device=x.device)
    rows = torch.arange(x.shape[-2], device=x.device)[None, :, None] < limits[:, 0, None, None]
    cols = torch.arange(x.shape[-1], device=x.device)[None, None, :] < limits[:, 1, None, None]
    return (rows & cols)[:, None].to(x.dtype)


def clip_detections(dets: list[dict[str, Tensor]], sizes: Sequence[tuple[int, int]]) -> list[dict[str, Tensor]]:
    """Clip each image's ``boxes`` to its own ``(H, W)`` (not the padded batch), in place; return ``dets``."""
    for det, (h, w) in zip(dets, sizes):
        det["boxes"][:, 0::2] = det["boxes"][:, 0::2].clamp(0, w)
        det["boxes"][:, 1::2] = det["boxes"][:, 1::2].clamp(0, h)
    return dets


def as_spec_dict(spec: str | dict[str, Any] | None, default: str) -> dict[str, Any]:
    """A component spec as a fresh ``{"name": ..., **params}`` dict (``default`` when None or nameless)."""
    if spec is None:
        return {"name": default}
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, dict):
        return {"name": default, **copy.deepcopy(spec)}
    raise TypeError(f"expected a component name or a {{'name': ...}} dict, got {type(spec).__name__}")
