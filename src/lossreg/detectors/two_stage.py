"""Two-stage detectors: timm backbone -> FPN (P2-P6) -> RPN -> RoI box head, torchvision's calling convention."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._registry import Slot, build_component
from ..assigners.result import summarize_assignment
from ..ops.images import pad_images
from ..ops.postprocess import Padded, unpad
from ._base import DetectorBase, as_spec_dict, head_components
from .one_stage import check_targets

__all__ = ["TwoStageDetector"]


class TwoStageDetector(DetectorBase):
    """Backbone + FPN + region proposal head + RoI head. ``model(images, targets)`` in training, ``model(images)`` in eval.

    Paper: Ren et al., Faster R-CNN: Towards Real-Time Object Detection with Region
    Proposal Networks, NeurIPS 2015 (with FPN, Lin et al., CVPR 2017).

    Args:
        num_classes: object classes [80].
        backbone: any timm model name [the architecture's default]; C2-C5 (strides 4-32) are used.
        pretrained_backbone: download timm ImageNet weights [False].
        neck: registry name or ``{name, **params}`` [``{"name": "fpn", "extra": "maxpool"}``: P2-P6].
        rpn_head: the proposal head [``"rpn"``]; ``{"name": "rpn", **params}`` sets any of its
            parameters (its losses, sampler, proposal counts, ...).
        roi_head: the box head [``"roi_box"``], likewise. ``head`` is an alias of ``roi_head``
            (the head that produces the detections), so a recipe's ``model.head`` works for
            every architecture.
        **components: head slots. ``assigner`` and ``balancer`` (``rpn_slots``) go to the RPN
            (anchor assignment happens there, and the ALWA paper balances the RPN's losses;
            ``None`` keeps ``max_iou`` 0.7/0.3 and ``static``); every other slot to the RoI head:
            ``cls_loss`` and ``reg_loss`` are its classification and regression losses (the
            detector's outputs, which loss comparisons are about; defaults ``ce``, ``l1``).
            The RoI head keeps its own ``static`` balancer (weight 1) unless ``roi_head``
            sets another, so ALWA's ``lambda0`` scales only the RPN's losses, as in the paper.
        label_names: class names, kept with the model and its published weights.
        freeze_bn: frozen BatchNorm in the backbone [= ``pretrained_backbone``].
        frozen_stages, bn_eps, pad_fill, backbone_args: frozen backbone stages, BatchNorm
            epsilon, what the batch padding holds and further backbone arguments (see
            :class:`~lossreg.detectors._base.DetectorBase`).
        score_thr, nms_thr, max_dets: the RoI head's post-processing [0.05, 0.5, 100].
        pre_nms_topk: the RPN's proposals per level before NMS at test time [1000].

    Training returns ``{"loss_rpn_cls", "loss_rpn_reg", "loss_roi_cls", "loss_roi_reg"}``
    (plus ``loss_rpn_balancer`` / ``loss_roi_balancer`` for a balancer with a regulariser):
    each task loss times the weight its head's balancer applied; they sum to the total
    trained (torchvision's contract, no ``"loss"`` key); ``last_loss_weights`` holds those weights
    (``rpn_cls``, ``rpn_reg``, ``roi_cls``, ``roi_reg``). Eval returns
    ``[{"boxes" [K, 4] xyxy px, "scores" [K], "labels" [K]}]`` per image, boxes clipped
    to each image's own size. Images are float RGB in 0-1 (``[B, 3, H, W]`` or a list of
    ``[3, H_i, W_i]``), normalised inside the model with the backbone's mean/std and
    zero-padded to a multiple of 32.
    """

    arch: str = ""
    slots: ClassVar[dict[str, Slot]] = {
        **DetectorBase.slots, "rpn_head": Slot("head"), "roi_head": Slot("head"), "head": Slot("head")
    }
    #: Top-level slots that go to the RPN (the ALWA paper balances the RPN's losses); every
    #: other one goes to the RoI head, whose outputs loss comparisons are about.
    rpn_slots: ClassVar[tuple[str, ...]] = ("assigner", "balancer")
    default_rpn_head: str = "rpn"
    default_roi_head: str = "roi_box"
    default_backbone: str = "resnet50"
    neck_defaults: dict[str, Any] = {"name": "fpn", "extra": "maxpool"}
    backbone_strides: tuple[int, ...] = (4, 8, 16, 32)

    def __init__(
        self,
        num_classes: int = 80,
        backbone: str | None = None,
        pretrained_backbone: bool = False,
        neck: str | dict[str, Any] | None = None,
        rpn_head: str | dict[str, Any] | None = None,
        roi_head: str | dict[str, Any] | None = None,
        head: str | dict[str, Any] | None = None,
        label_names: Sequence[str] | None = None,
        freeze_bn: bool | None = None,
        frozen_stages: int = -1,
        bn_eps: float | None = None,
        pad_fill: str = "zero",
        backbone_args: dict[str, Any] | None = None,
        score_thr: float = 0.05,
        nms_thr: float = 0.5,
        max_dets: int = 100,
        pre_nms_topk: int = 1000,
        **components: Any,
    ) -> None:
        name = self.arch or type(self).__name__
        if head is not None:
            if roi_head is not None:
                raise ValueError(f"{name}: pass the RoI head as roi_head or as head, not both")
            roi_head = head
        rpn_cfg = as_spec_dict(rpn_head, self.default_rpn_head)
        roi_cfg = as_spec_dict(roi_head, self.default_roi_head)
        on_rpn = {k: v for k, v in components.items() if k in self.rpn_slots}
        on_roi = {k: v for k, v in components.items() if k not in self.rpn_slots}
        rpn_cfg.update(head_components(name, rpn_cfg["name"], on_rpn))
        roi_cfg.update(head_components(name, roi_cfg["name"], on_roi))
        super().__init__(
            num_classes, backbone, pretrained_backbone, neck, label_names, freeze_bn,
            frozen_stages=frozen_stages, bn_eps=bn_eps, pad_fill=pad_fill, backbone_args=backbone_args,
        )
        channels = getattr(self.neck, "out_channels", 256)
        self.rpn_head = build_component("head", rpn_cfg, in_channels=channels, pre_nms_topk_test=pre_nms_topk)
        self.roi_head = build_component(
            "head",
            roi_cfg,
            num_classes=num_classes,
            in_channels=channels,
            score_thr=score_thr,
            nms_thr=nms_thr,
            max_dets=max_dets,
        )
        from .inputs import check_head_strides, neck_strides

        levels = neck_strides(self.backbone.strides, self.neck)
        check_head_strides(name, str(rpn_cfg["name"]), self.rpn_head, levels)
        roi_levels = getattr(self.roi_head, "num_levels", None)
        if levels is not None and isinstance(roi_levels, int) and roi_levels > len(levels):
            raise ValueError(
                f"{name}: the {roi_cfg['name']} head pools from {roi_levels} levels but the neck has {len(levels)} "
                f"(strides {list(levels)}); set its num_levels to at most {len(levels)}"
            )
        self.model_args.update(
            {
                "rpn_head": rpn_cfg,
                "roi_head": roi_cfg,
                "score_thr": score_thr,
                "nms_thr": nms_thr,
                "max_dets": max_dets,
                "pre_nms_topk": pre_nms_topk,
            }
        )

    @property
    def last_loss_weights(self) -> dict[str, float]:
        """The balancer weights applied at the last training step: ``rpn_cls``, ``rpn_reg``, ``roi_cls``, ``roi_reg``."""
        out = {f"rpn_{k}": v for k, v in self.rpn_head.last_loss_weights.items()}
        out.update({f"roi_{k}": v for k, v in self.roi_head.last_loss_weights.items()})
        return out

    def forward(self, images: Tensor | Sequence[Tensor], targets: list[dict[str, Tensor]] | None = None):
        batch, sizes = pad_images(images, min_side=self.min_train_side if self.training else 0)
        shape = (int(batch.shape[-2]), int(batch.shape[-1]))
        if self.training:
            if targets is None:
                raise ValueError("in training mode the model needs targets; call model.eval() for detections")
            targets = check_targets(targets, batch.shape[0], self.num_classes, sizes)
            feats = self._features(batch, sizes)
            rpn_losses, (proposals, _) = self.rpn_head.loss_and_proposals(feats, targets, sizes)
            roi_losses = self.roi_head.loss(feats, proposals, targets, shape)
            losses = {f"loss_rpn_{k[5:]}": v for k, v in rpn_losses.items()}
            losses.update({f"loss_roi_{k[5:]}": v for k, v in roi_losses.items()})
            return losses
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
        shape = (int(batch.shape[-2]), int(batch.shape[-1]))
        feats = self._features(batch, sizes)
        proposals, _ = self.rpn_head.get_proposals(self.rpn_head.flat_outputs(feats), sizes)
        return self.roi_head.predict_padded(feats, proposals, sizes, shape)

    @torch.no_grad()
    def explain_assignment(
        self, images: Tensor | Sequence[Tensor], targets: list[dict[str, Tensor]]
    ) -> list[dict[str, Any]]:
        """Per image: the RPN's anchor assignment summary (``summary``: positives per gt and per
        level, their IoU, ignored count), the RoI head's proposal assignment summary
        (``roi_summary``), the unweighted task losses (``rpn_cls``, ``rpn_reg``, ``roi_cls``,
        ``roi_reg``) and the balancer weights last applied. Changes no state (parameters,
        buffers, balancer windows, or the global random generator the samplers draw from)."""
        batch, sizes = pad_images(images)
        shape = (int(batch.shape[-2]), int(batch.shape[-1]))
        targets = check_targets(targets, batch.shape[0], self.num_classes, sizes)
        state = {k: v.clone() for k, v in self.state_dict().items()}
        devices = [batch.device] if batch.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                feats = self._features(batch, sizes)
                out = self.rpn_head.flat_outputs(feats)
                results = self.rpn_head.assign(out, targets)
                proposals, _ = self.rpn_head.get_proposals(out, sizes)
                reports = []
                for b, res in enumerate(results):
                    one = [targets[b]]
                    rpn_terms = self.rpn_head.loss_terms(_image_slice(out, b), one, [res])
                    sample = self.roi_head.sample([proposals[b]], one)
                    feats_b = [f[b : b + 1] for f in feats]
                    roi_terms = self.roi_head.loss_terms(feats_b, [proposals[b]], one, shape, sample=sample)
                    losses = {f"rpn_{k}": float(v) for k, v in rpn_terms.items()}
                    losses.update({f"roi_{k}": float(v) for k, v in roi_terms.items()})
                    reports.append(
                        {
                            "summary": summarize_assignment(res),
                            "roi_summary": summarize_assignment(sample.results[0]),
                            "losses": losses,
                            "weights": self.last_loss_weights,
                        }
                    )
                return reports
        finally:
            self.load_state_dict(state)


def _image_slice(out: dict[str, Any], b: int) -> dict[str, Any]:
    """The flat dense-head outputs of image ``b`` alone (batch dimension kept)."""
    per_image = ("cls", "reg", "boxes", "quality")
    return {k: (v[b : b + 1] if k in per_image and v is not None else v) for k, v in out.items()}
