"""The RoI box head of Faster R-CNN: multi-scale RoIAlign, two FC layers, classification and class-specific boxes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign

from .._registry import Slot, build_component, register_head
from ..ops.box_coder import DeltaBoxCoder
from ..ops.geometry import aligned_box_iou
from ..ops.postprocess import Padded, batched_group_nms, clip_to_sizes, image_sizes_tensor, pad_per_image, unpad
from ..ops.roi_pool import multiscale_roi_align
from ..ops.sampler import RandomSampler
from .dense import Spec, balance_terms
from .normalizer import avg_factor
from .rpn import FASTER_RCNN_PAPER, with_default_params

__all__ = ["RoIBoxHead", "RoISample"]


def _roi_convs(in_channels: int, channels: int, num_convs: int, norm: str) -> nn.Sequential:
    """``num_convs`` x (3x3 conv, [BN | GN(32)], ReLU), bias-free convs before a norm, Kaiming-normal init."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        conv = nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=norm == "none")
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        layers.append(conv)
        if norm == "bn":
            layers.append(nn.BatchNorm2d(channels))
        elif norm == "gn":
            layers.append(nn.GroupNorm(32, channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


@dataclass
class RoISample:
    """The sampled RoIs of a batch: per image (``rois``) and concatenated (the rest).

    ``labels [S]``: class ``0..C-1`` at positives, ``C`` background. ``pos [S]``: positives.
    ``gt_boxes [S, 4]``: the assigned ground truth at positives (zeros elsewhere).
    ``image [S]``: image index. ``results``: the assigner's result per image, over its proposals (+ gts).
    """

    rois: list[Tensor]
    labels: Tensor
    pos: Tensor
    gt_boxes: Tensor
    image: Tensor
    results: list[Any]


@register_head("roi_box")
class RoIBoxHead(nn.Module):
    """Fast R-CNN box head: 7x7 multi-scale RoIAlign, two 1024-d FC layers, softmax classes, class-specific deltas.

    Paper: Ren et al., Faster R-CNN: Towards Real-Time Object Detection with Region
    Proposal Networks, NeurIPS 2015 (box head of Girshick, Fast R-CNN, ICCV 2015;
    RoI-to-level mapping of Lin et al., FPN, CVPR 2017, via ``torchvision.ops.MultiScaleRoIAlign``).

    Training: the RPN's proposals (plus the ground-truth boxes, ``add_gt_as_proposals``)
    are matched to the ground truth by ``assigner`` (``max_iou`` with ``pos_iou_thr=0.5,
    neg_iou_thr=0.5`` and no low-quality matches, filled in whenever the assigner is
    ``max_iou``), a :class:`~lossreg.ops.sampler.RandomSampler` keeps ``num_samples``
    RoIs per image (at most ``pos_fraction`` positive), and both losses are divided by
    the number of sampled RoIs (torchvision, mmdetection). The classification loss gets
    ``logits [S, C + 1]`` (background last) when it declares ``background_column``
    (``ce``), else ``[S, C]`` sigmoid logits (``focal``, ``hcra_c``, ...; the output bias
    then starts at the focal prior ``prior_prob``) and ``quality``: the IoU of the
    RoI's predicted box for its class with its ground truth (positives), or the largest
    IoU of a predicted box with a ground truth of that box's class (negatives). The
    regression loss sees encoded deltas (``space = "delta"``) or decoded boxes of the
    ground-truth class, and ``scores`` = predicted probability of that class
    (``hcra_r``). The two tasks ``cls`` and ``reg`` go through the head's own
    ``balancer`` [``static``: weight 1]; in ``faster_rcnn`` the ALWA balancer sits on the RPN.

    Eval: softmax (or sigmoid) scores, per-class boxes clipped to the image, score
    ``> score_thr``, boxes smaller than ``min_size`` removed, class-wise NMS, best ``max_dets``.

    Defaults: ``cls_loss="ce"``, ``reg_loss="l1"`` (on deltas, mmdetection's default;
    ``smooth_l1`` is Fast R-CNN's loss and gets ``beta=1.0`` here unless the spec sets it;
    any box-space loss works), ``assigner="max_iou"`` (0.5 / 0.5), ``balancer="static"``, 512 RoIs per
    image, 25% positive; 7x7 RoIAlign with sampling ratio 2 over the first 4 levels
    (P2-P5); FC 1024-1024 (``nn.Linear``'s default init, as torchvision's TwoMLPHead);
    outputs N(0, 0.01) classification, N(0, 0.001) regression, zero biases (Detectron,
    mmdetection); delta coder stds (0.1, 0.1, 0.2, 0.2) (torchvision's weights 10, 10, 5, 5);
    ``score_thr=0.05, nms_thr=0.5, max_dets=100, min_size=0.01``.

    ``aligned=True`` samples RoIAlign half a pixel shifted (Detectron2's and mmdetection's
    ``RoIAlign``, with ``sampling_ratio=0``: adaptive) [False: torchvision's].

    ``num_convs`` 3x3 conv layers of ``conv_channels`` (with ``conv_norm``: ``"bn"``,
    ``"gn"`` or ``"none"``, followed by ReLU; Kaiming-normal init) run on the pooled RoIs
    before the FC layers, and ``num_fcs`` (1 or 2) FC layers follow: [0, 256, none, 2] is
    the 2-FC head above, ``num_convs=4, conv_norm="bn", num_fcs=1`` torchvision's
    ``fasterrcnn_resnet50_fpn_v2`` box head (mmdetection's ``Shared4Conv1FCBBoxHead``
    with BN).

    Shapes: ``forward(feats, rois: list of [R_i, 4], image_shapes)`` -> class logits
    ``[sum R_i, C + 1]`` (or ``[., C]``), deltas ``[sum R_i, C * 4]``.
    """

    slots: ClassVar[dict[str, Slot]] = {
        "cls_loss": Slot("loss", "cls"),
        "reg_loss": Slot("loss", "reg"),
        "assigner": Slot("assigner"),
        "balancer": Slot("balancer"),
    }

    paper = FASTER_RCNN_PAPER

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 256,
        num_levels: int = 4,
        roi_size: int = 7,
        sampling_ratio: int = 2,
        fc_channels: int = 1024,
        cls_loss: Spec = "ce",
        reg_loss: Spec = "l1",
        assigner: Spec = "max_iou",
        balancer: Spec = "static",
        num_samples: int = 512,
        pos_fraction: float = 0.25,
        add_gt_as_proposals: bool = True,
        coder_stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
        score_thr: float = 0.05,
        nms_thr: float = 0.5,
        max_dets: int = 100,
        min_size: float = 1e-2,
        prior_prob: float = 0.01,
        num_convs: int = 0,
        conv_channels: int = 256,
        conv_norm: str = "none",
        num_fcs: int = 2,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        if conv_norm not in ("none", "bn", "gn"):
            raise ValueError(f"roi_box: conv_norm must be 'none', 'bn' or 'gn', got {conv_norm!r}")
        if num_fcs not in (1, 2) or isinstance(num_convs, bool) or not isinstance(num_convs, int) or num_convs < 0:
            raise ValueError(f"roi_box: need num_fcs in (1, 2) and an int num_convs >= 0, got {num_fcs!r}, {num_convs!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"roi_box: num_classes must be a positive int, got {num_classes!r}")
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
            raise ValueError(f"roi_box: num_levels must be an int >= 1, got {num_levels!r}")
        if not 0 < nms_thr <= 1 or not 0 <= score_thr <= 1:
            raise ValueError(f"roi_box: need 0 < nms_thr <= 1 and 0 <= score_thr <= 1, got {nms_thr!r}, {score_thr!r}")
        if isinstance(max_dets, bool) or not isinstance(max_dets, int) or max_dets < 1:
            raise ValueError(f"roi_box: max_dets must be an int >= 1, got {max_dets!r}")
        from ._checks import check_channels, check_num_classes

        check_num_classes("roi_box", num_classes)
        check_channels("roi_box", in_channels=in_channels, fc_channels=fc_channels, conv_channels=conv_channels)
        self.num_classes = num_classes
        self.cls_loss = build_component("loss", cls_loss, require_task="cls", where="roi_box: cls_loss")
        # Fast R-CNN's smooth L1 has beta 1 (the registry's default 1/9 is the RPN's / RetinaNet's)
        reg_loss = with_default_params(reg_loss, "smooth_l1", {"beta": 1.0})
        self.reg_loss = build_component("loss", reg_loss, require_task="reg", where="roi_box: reg_loss")
        assigner = with_default_params(
            assigner, "max_iou", {"pos_iou_thr": 0.5, "neg_iou_thr": 0.5, "match_low_quality": False}
        )
        self.assigner = build_component("assigner", assigner, where="roi_box: assigner")
        self.balancer = build_component("balancer", balancer, where="roi_box: balancer")
        self.sampler = RandomSampler(num_samples, pos_fraction)
        self.coder = DeltaBoxCoder(stds=coder_stds)
        self.add_gt_as_proposals = bool(add_gt_as_proposals)
        self.background_column = bool(getattr(self.cls_loss, "background_column", False))
        self.num_levels = num_levels
        self.score_thr, self.nms_thr, self.max_dets, self.min_size = score_thr, nms_thr, max_dets, float(min_size)
        self.last_loss_weights: dict[str, float] = {}

        self.roi_align = MultiScaleRoIAlign([str(i) for i in range(num_levels)], roi_size, sampling_ratio)
        self.aligned = bool(aligned)
        # optional 3x3 conv (+ norm) + ReLU layers on the pooled RoIs (torchvision's v2 box head: 4 with BN, 1 FC)
        self.convs = _roi_convs(in_channels, conv_channels, num_convs, conv_norm) if num_convs else None
        fc_in = (conv_channels if num_convs else in_channels) * roi_size * roi_size
        self.fc6 = nn.Linear(fc_in, fc_channels)
        self.fc7 = nn.Linear(fc_channels, fc_channels) if num_fcs == 2 else None
        self.cls_score = nn.Linear(fc_channels, num_classes + 1 if self.background_column else num_classes)
        self.bbox_pred = nn.Linear(fc_channels, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.bbox_pred.bias)
        if self.background_column:
            nn.init.zeros_(self.cls_score.bias)
        else:
            nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    # -- fine-tuning transfer (lossreg.detectors.finetune) ------------------------
    @property
    def cls_output_layers(self) -> dict[str, tuple[int, bool]]:
        """The classification output: ``{prefix: (rows per class group, background_last)}``."""
        return {"cls_score": (1, self.background_column)}

    @property
    def class_reg_layers(self) -> dict[str, int]:
        """Class-specific regression outputs: ``{prefix: rows per class}`` (rows ``c * 4 + k``, class-major)."""
        return {"bbox_pred": 4}

    # -- network ---------------------------------------------------------------
    def forward(
        self, feats: list[Tensor], rois: list[Tensor], image_shapes: Sequence[tuple[int, int]]
    ) -> tuple[Tensor, Tensor]:
        """Class logits and class-specific deltas of the RoIs (xyxy, input pixels) of each image."""
        if len(feats) < self.num_levels:
            raise ValueError(f"roi_box: needs {self.num_levels} feature levels (P2-P5), got {len(feats)}")
        x = multiscale_roi_align(
            self.roi_align, feats[: self.num_levels], [r.to(feats[0].dtype) for r in rois], image_shapes, aligned=self.aligned
        )
        if self.convs is not None:
            x = self.convs(x)
        x = F.relu(self.fc6(x.flatten(1)))
        x = F.relu(self.fc7(x)) if self.fc7 is not None else x
        return self.cls_score(x), self.bbox_pred(x)

    def class_probs(self, logits: Tensor) -> Tensor:
        """``[S, C]`` probability of each object class (softmax without the background, or sigmoid)."""
        if self.background_column:
            return logits.float().softmax(dim=-1)[:, : self.num_classes]
        return logits.float().sigmoid()

    # -- training --------------------------------------------------------------
    @torch.no_grad()
    def sample(self, proposals: Sequence[Tensor], targets: list[dict[str, Tensor]]) -> RoISample:
        """Match proposals (+ gts) to the ground truth and draw the training RoIs of every image."""
        if len(proposals) != len(targets):
            raise ValueError(f"roi_box: {len(proposals)} proposal sets for {len(targets)} images")
        c = self.num_classes
        rois, labels, gts, image, results = [], [], [], [], []
        for b, (props, tgt) in enumerate(zip(proposals, targets)):
            gt = tgt["boxes"].to(device=props.device, dtype=torch.float32)
            gt_labels = tgt["labels"].to(props.device).long()
            props = props.detach().float()
            if self.add_gt_as_proposals and gt.shape[0] > 0:
                props = torch.cat([props, gt])
            res = self.assigner.assign(props, [props.shape[0]], gt, gt_labels)
            pos, neg = self.sampler.sample(res.gt_inds)
            idx = torch.cat([pos, neg])
            lab = torch.full((idx.numel(),), c, dtype=torch.long, device=props.device)
            box = props.new_zeros((idx.numel(), 4))
            if pos.numel():
                lab[: pos.numel()] = gt_labels[res.gt_inds[pos]]
                box[: pos.numel()] = gt[res.gt_inds[pos]]
            rois.append(props[idx])
            labels.append(lab)
            gts.append(box)
            image.append(torch.full_like(idx, b))
            results.append(res)
        labels_all = torch.cat(labels)
        return RoISample(rois, labels_all, labels_all < c, torch.cat(gts), torch.cat(image), results)

    def loss_terms(
        self,
        feats: list[Tensor],
        proposals: Sequence[Tensor],
        targets: list[dict[str, Tensor]],
        image_shape: tuple[int, int],
        sample: RoISample | None = None,
    ) -> dict[str, Tensor]:
        """Unweighted ``{"cls", "reg"}`` over the sampled RoIs, both divided by their number."""
        sample = sample if sample is not None else self.sample(proposals, targets)
        logits, deltas = self(feats, sample.rois, [image_shape] * len(sample.rois))
        n, c = logits.shape[0], self.num_classes
        # the number sampled, over this batch or the whole (DDP / accumulated) batch: lossreg.heads.normalizer
        avg = avg_factor(self, "cls", n, 1.0, self.cls_loss)
        reg_avg = avg_factor(self, "reg", n, 1.0, self.reg_loss)
        rois = torch.cat(sample.rois)
        deltas = deltas.view(n, c, 4)
        labels, pos = sample.labels, sample.pos
        with torch.no_grad():
            quality = self._quality(rois, deltas.detach(), sample, targets)
        terms = {"cls": self.cls_loss(logits, labels, quality=quality, avg_factor=avg)}
        if not bool(pos.any()):
            terms["reg"] = deltas.sum() * 0.0
            return terms
        p_idx = pos.nonzero().squeeze(1)
        p_lab = labels[p_idx]
        p_rois, p_gt = rois[p_idx], sample.gt_boxes[p_idx]
        p_deltas = deltas[p_idx, p_lab]
        scores = self.class_probs(logits[p_idx].detach()).gather(1, p_lab[:, None]).squeeze(1)
        if getattr(self.reg_loss, "space", "box") == "delta":
            pred, target = p_deltas, self.coder.encode(p_rois, p_gt)
        else:
            pred, target = self.coder.decode(p_rois, p_deltas), p_gt
        terms["reg"] = self.reg_loss(pred, target, avg_factor=reg_avg, scores=scores, anchors=p_rois)
        return terms

    def _quality(self, rois: Tensor, deltas: Tensor, sample: RoISample, targets: list[dict[str, Tensor]]) -> Tensor:
        """IoU of each RoI's predicted box with its gt (positives) or best same-class gt (negatives)."""
        quality = rois.new_zeros(rois.shape[0])
        for b, tgt in enumerate(targets):
            rows = (sample.image == b).nonzero().squeeze(1)
            gt = tgt["boxes"].to(device=rois.device, dtype=torch.float32)
            if rows.numel() == 0 or gt.shape[0] == 0:
                continue
            gt_labels = tgt["labels"].to(rois.device).long()
            # [R, G, 4]: the box each RoI predicts for the class of each gt
            pred = self.coder.decode(rois[rows, None, :], deltas[rows][:, gt_labels])
            iou = aligned_box_iou(pred.reshape(-1, 4), gt.repeat(rows.numel(), 1)).view(rows.numel(), -1)
            q = iou.max(dim=1).values
            pos = sample.pos[rows]
            if bool(pos.any()):
                labels = sample.labels[rows][pos]
                own = self.coder.decode(rois[rows][pos], deltas[rows][pos, labels])
                q[pos] = aligned_box_iou(own, sample.gt_boxes[rows][pos])
            quality[rows] = q
        return quality.clamp(0, 1)

    def balance(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{"loss_cls", "loss_reg", ["loss_balancer"]}`` weighted by the balancer (summing to its total); keeps ``last_loss_weights``."""
        return balance_terms(self, terms)

    def loss(
        self,
        feats: list[Tensor],
        proposals: Sequence[Tensor],
        targets: list[dict[str, Tensor]],
        image_shape: tuple[int, int],
    ) -> dict[str, Tensor]:
        """Training losses ``{"loss_cls", "loss_reg", ["loss_balancer"]}`` (weighted by the balancer; they sum to the total)."""
        return self.balance(self.loss_terms(feats, proposals, targets, image_shape))

    # -- inference ---------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        feats: list[Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        image_shape: tuple[int, int],
    ) -> list[dict[str, Tensor]]:
        """``[{"boxes" [K, 4], "scores" [K], "labels" [K]}]`` per image, boxes clipped to ``image_sizes``."""
        return unpad(*self.predict_padded(feats, proposals, image_sizes, image_shape))

    @torch.no_grad()
    def predict_padded(
        self,
        feats: list[Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        image_shape: tuple[int, int],
    ) -> Padded:
        """The whole batch at once: per-class boxes clipped to their image, score ``> score_thr``, boxes
        smaller than ``min_size`` dropped, one class-wise NMS over the batch (groups ``image * C +
        class``), best ``max_dets`` per image. Fixed-shape ``boxes [B, K, 4]``, ``scores [B, K]``,
        ``labels [B, K]`` (``-1`` in empty slots), ``num_detections [B]``; exportable."""
        rois = [p.detach().float() for p in proposals]
        logits, deltas = self(feats, rois, [image_shape] * len(rois))
        c = self.num_classes
        probs = self.class_probs(logits)  # [S, C]
        image = torch.cat([torch.full((r.shape[0],), b, dtype=torch.long, device=probs.device) for b, r in enumerate(rois)])
        boxes = self.coder.decode(torch.cat(rois)[:, None, :], deltas.view(-1, c, 4).float())  # [S, C, 4]
        boxes = clip_to_sizes(boxes, image_sizes_tensor(image_sizes, probs.device), image)
        wh = boxes[..., 2:] - boxes[..., :2]
        valid = (probs > self.score_thr) & (wh[..., 0] >= self.min_size) & (wh[..., 1] >= self.min_size)
        row, label = valid.nonzero(as_tuple=True)
        boxes, scores, image = boxes[row, label], probs[row, label], image[row]
        max_side = max(max(int(h), int(w)) for h, w in image_sizes)
        keep = batched_group_nms(boxes, scores, image * c + label, self.nms_thr, max_side)
        (boxes, scores, labels), num = pad_per_image(
            image[keep], len(rois), self.max_dets, (boxes[keep], scores[keep], label[keep]), (0.0, 0.0, -1)
        )
        return boxes, scores, labels, num
