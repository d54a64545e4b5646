"""One-stage detectors: timm backbone -> FPN -> a dense head, torchvision's calling convention."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .._registry import Slot, build_component
from ..assigners.result import summarize_assignment
from ..ops.images import pad_images
from ..ops.postprocess import Padded, clip_to_sizes, image_sizes_tensor, unpad
from ._base import DetectorBase, as_spec_dict, head_components
from .inputs import check_head_strides, neck_strides
from .inputs import check_targets as _check_targets


def check_targets(
    targets: Any, num_images: int, num_classes: int, sizes: Sequence[tuple[int, int]] | None = None
) -> list[dict[str, Tensor]]:
    """Validate ``[{"boxes": [G, 4] xyxy, "labels": [G]}]``; raise ``ValueError`` naming the bad image.

    Boxes are clipped to ``sizes`` (each image's own ``(H, W)``) and those under 1 px after
    clipping dropped with a warning, the readers' rule (:mod:`lossreg.detectors.inputs`).
    """
    return _check_targets(targets, num_images, num_classes, sizes)


class OneStageDetector(DetectorBase):
    """Backbone + FPN + dense head. ``model(images, targets)`` in training, ``model(images)`` in eval.

    Args:
        num_classes: object classes [80].
        backbone: any timm model name [the architecture's default].
        pretrained_backbone: download timm ImageNet weights [False]; fails with a clear
            message when offline.
        neck, head: registry names or ``{name, **params}`` dicts (defaults: ``fpn``, the arch's head).
        **components: the head's slots (``cls_loss``, ``reg_loss``, ``quality_loss``, ``assigner``,
            ``balancer``, and any other slot the head class declares in ``slots``), each a
            registry name, ``{name, **params}`` or an instance; ``None`` keeps the head's
            default and ``"none"`` switches an optional one (``quality_loss``) off.
        label_names: class names, kept with the model and its published weights.
        freeze_bn, frozen_stages, bn_eps, pad_fill, backbone_args: the backbone's frozen
            BatchNorm, frozen stages, BatchNorm epsilon, what the batch padding holds and
            further backbone arguments (style, mean, std) (see
            :class:`~lossreg.detectors._base.DetectorBase`).
        score_thr, nms_thr, pre_nms_topk, max_dets: post-processing.

    Training returns ``{"loss_cls", "loss_reg", ["loss_quality"], ["loss_balancer"]}``, each
    task loss as weighted by the balancer (``loss_balancer``: a balancer's own regulariser,
    e.g. uncertainty weighting's ``sum 0.5 s_k``). As in torchvision there is no ``"loss"``
    key: ``sum(loss_dict.values())`` is exactly the total lossreg trains. Eval returns
    ``[{"boxes" [K, 4] xyxy px, "scores" [K], "labels" [K]}]`` per image after NMS.
    Images are float RGB in 0-1, normalised inside the model with the backbone's mean/std.
    Labels (targets and detections) are ``0..num_classes-1``, with no background slot
    (torchvision's COCO models reserve label 0 for the background; lossreg does not).
    """

    default_head: str = ""
    slots: ClassVar[dict[str, Slot]] = {**DetectorBase.slots, "head": Slot("head")}

    def __init__(
        self,
        num_classes: int = 80,
        backbone: str | None = None,
        pretrained_backbone: bool = False,
        neck: str | dict[str, Any] | None = None,
        head: str | dict[str, Any] | None = None,
        label_names: Sequence[str] | None = None,
        freeze_bn: bool | None = None,
        frozen_stages: int = -1,
        bn_eps: float | None = None,
        pad_fill: str = "zero",
        backbone_args: dict[str, Any] | None = None,
        score_thr: float = 0.05,
        nms_thr: float = 0.6,
        pre_nms_topk: int = 1000,
        max_dets: int = 100,
        **components: Any,
    ) -> None:
        head_cfg = as_spec_dict(head, self.default_head)
        head_kwargs = head_components(self.arch or type(self).__name__, head_cfg["name"], components)
        super().__init__(
            num_classes, backbone, pretrained_backbone, neck, label_names, freeze_bn,
            frozen_stages=frozen_stages, bn_eps=bn_eps, pad_fill=pad_fill, backbone_args=backbone_args,
        )
        post = {"score_thr": score_thr, "nms_thr": nms_thr, "pre_nms_topk": pre_nms_topk, "max_dets": max_dets}
        self.head = build_component(
            "head",
            {**head_cfg, **head_kwargs},
            num_classes=num_classes,
            in_channels=getattr(self.neck, "out_channels", 256),
            **post,
        )
        levels = neck_strides(self.backbone.strides, self.neck)
        check_head_strides(self.arch or type(self).__name__, str(head_cfg["name"]), self.head, levels)
        self.model_args.update({"head": {**head_cfg, **head_kwargs}, **post})

    def forward(self, images: Tensor | Sequence[Tensor], targets: list[dict[str, Tensor]] | None = None):
        batch, sizes = pad_images(images, min_side=self.min_train_side if self.training else 0)
        if self.training:
            if targets is None:
                raise ValueError("in training mode the model needs targets; call model.eval() for detections")
            targets = check_targets(targets, batch.shape[0], self.num_classes, sizes)
            return self.head.loss(self._features(batch, sizes), targets)
        return unpad(*self.detect(batch, sizes))

    @torch.no_grad()
    def detect(self, images: Tensor | Sequence[Tensor], sizes: Sequence[tuple[int, int]] | None = None) -> Padded:
        """Eval detections of a batch as fixed-shape padded tensors (what :func:`lossreg.export_model` exports).

        Returns ``boxes [B, K, 4]`` (xyxy, each image's own pixels, clipped to its size),
        ``scores [B, K]``, ``labels [B, K]`` (``-1`` in empty slots) and ``num_detections [B]``,
        ``K = max_dets``; ``model(images)`` in eval mode is the same without the padding.
        ``sizes`` gives the images' own sizes when ``images`` is an already padded batch.
        """
        batch, own = pad_images(images)
        sizes = own if sizes is None else sizes
        limits = image_sizes_tensor(sizes, batch.device)  # boxes are clipped to each image's own size before NMS
        feats = self._features(batch, sizes)
        boxes, scores, labels, num = self.head.predict_padded(feats, tuple(batch.shape[-2:]), image_sizes=limits)
        return clip_to_sizes(boxes, limits), scores, labels, num

    @torch.no_grad()
    def explain_assignment(self, images: Tensor | Sequence[Tensor], targets: list[dict[str, Tensor]]) -> list[dict[str, Any]]:
        """Per image: the assignment summary (positives per gt and per level, their IoU, ignored count),
        the unweighted task losses and the balancer weights last applied. Changes no state."""
        batch, sizes = pad_images(images)
        targets = check_targets(targets, batch.shape[0], self.num_classes, sizes)
        buffers = {k: v.clone() for k, v in self.state_dict().items()}
        try:
            out = self.head.flat_outputs(self._features(batch, sizes))
            results = self.head.assign(out, targets)
            reports = []
            for b, res in enumerate(results):
                terms = self.head.loss_terms(_image_slice(out, b, self.head), [targets[b]], [res])
                reports.append(
                    {
                        "summary": summarize_assignment(res),
                        "losses": {k: float(v) for k, v in terms.items()},
                        "weights": dict(self.head.last_loss_weights),
                    }
                )
            return reports
        finally:
            self.load_state_dict(buffers)


def _image_slice(out: dict[str, Any], b: int, head: nn.Module) -> dict[str, Any]:
    """The flat head outputs of image ``b`` alone (batch dimension kept)."""
    per_image = ("cls", "reg", "boxes", "quality", *getattr(head, "per_image_outputs", ()))
    return {k: (v[b : b + 1] if k in per_image and v is not None else v) for k, v in out.items()}
