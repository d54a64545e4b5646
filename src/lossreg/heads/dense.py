"""The training and inference logic every dense one-stage head shares.

A subclass builds its towers and returns, per pyramid level, classification
logits ``[B, A * C, H, W]``, box regression ``[B, A * 4, H, W]`` and optionally a
quality logit ``[B, A, H, W]``; it says how its regression output becomes boxes
(``decode``) and how ground-truth boxes become regression targets for
delta-space losses (``encode``). Everything else — assignment, quality targets,
the three losses, the balancer, post-processing — lives here once, so any
registered loss, assigner or balancer drops into any head by name.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from .._registry import Slot, build_component
from ..ops.anchors import AnchorGenerator
from ..ops.geometry import aligned_box_iou, iou_matrix
from ..ops.norm import GroupNorm
from ..ops.postprocess import Padded, batched_group_nms, clip_to_sizes, level_topk, pad_per_image, unpad
from ._checks import check_head_size, check_num_classes, check_postprocess
from .normalizer import active_normalizer, avg_factor

Spec = str | dict[str, Any] | nn.Module | None


def _flatten(level_outputs: Sequence[Tensor], k: int) -> Tensor:
    """Per-level ``[B, A * k, H, W]`` -> ``[B, sum(H * W * A), k]`` in (row, column, anchor) order."""
    out = []
    for t in level_outputs:
        b, _, h, w = t.shape
        out.append(t.permute(0, 2, 3, 1).reshape(b, -1, k))
    return torch.cat(out, dim=1)


def pad_targets(targets: Sequence[dict[str, Tensor]], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Ground truths of a batch as ``boxes [B, G_max, 4]`` (float32), ``labels [B, G_max]`` and ``valid [B, G_max]``."""
    boxes = [t["boxes"].to(device, torch.float32).reshape(-1, 4) for t in targets]
    labels = [t["labels"].to(device).long().reshape(-1) for t in targets]
    counts = torch.tensor([len(b) for b in boxes], device=device)
    g = int(counts.max()) if len(boxes) else 0
    valid = torch.arange(g, device=device)[None, :] < counts[:, None]
    return pad_sequence(boxes, batch_first=True), pad_sequence(labels, batch_first=True), valid


def balance_terms(head: nn.Module, terms: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{"loss_<task>": weighted loss, ..., ["loss_balancer"]}`` from ``head.balancer``; keeps ``head.last_loss_weights``.

    The values sum to the total the balancer trains (torchvision's contract: no ``"loss"``
    key; train on ``sum(loss_dict.values())``). ``loss_balancer`` is what a balancer adds
    beyond the weighted task losses (uncertainty weighting's ``sum 0.5 s_k``). A balancer
    without ``weighted_parts`` (any ``total, weights = balancer(losses)`` module) gets
    ``loss_balancer = total - sum of the weighted losses`` when that is not zero or the
    balancer has trainable parameters. During a training step with gradient accumulation
    the active loss normaliser balances instead (:mod:`lossreg.heads.normalizer`).
    """
    normalizer = active_normalizer()
    balanced = normalizer.balance(head, terms) if normalizer is not None else None
    if balanced is not None:
        return balanced
    if hasattr(head.balancer, "weighted_parts"):
        parts, weights = head.balancer.weighted_parts(terms)
    else:
        total, weights = head.balancer(terms)
        parts = {k: v * weights.get(k, 1.0) for k, v in terms.items()}
        rest = total - sum(parts.values())
        if bool(rest.detach() != 0) or any(p.requires_grad for p in head.balancer.parameters()):
            parts["balancer"] = rest
    head.last_loss_weights = dict(weights)
    return {f"loss_{k}": v for k, v in parts.items()}


def conv_tower(in_channels: int, feat_channels: int, num_convs: int, norm: str, bias: bool | None = None) -> nn.Sequential:
    """``num_convs`` 3x3 conv (+ GroupNorm(32)) + ReLU layers; conv biases only without a norm unless ``bias`` says."""
    layers: list[nn.Module] = []
    bias = norm == "none" if bias is None else bias
    for i in range(num_convs):
        layers.append(nn.Conv2d(in_channels if i == 0 else feat_channels, feat_channels, 3, padding=1, bias=bias))
        if norm == "gn":
            layers.append(GroupNorm(32 if feat_channels % 32 == 0 else 1, feat_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def init_head_convs(module: nn.Module, cls_out: nn.Conv2d | None, prior_prob: float = 0.01) -> None:
    """Normal(0, 0.01) conv weights, zero biases, and the focal prior bias on the classification output."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if cls_out is not None:
        nn.init.constant_(cls_out.bias, -math.log((1 - prior_prob) / prior_prob))


def quality_target_keyword(loss: nn.Module, owner: str) -> str:
    """How a quality loss takes the soft target of the quality branch's single column.

    ``"target"`` for a loss that takes a soft target (``bce``); ``"quality"`` for one that
    builds its target from ``quality`` times the one-hot label (``qfl``, ``vfl``, ``hcra_c``),
    which with the branch's one column and label 0 is the soft target itself. A loss with
    neither (``focal``) would train the branch towards 1 everywhere: refused.
    """
    if "target" in inspect.signature(loss.forward).parameters:
        return "target"
    if getattr(loss, "uses_quality", False):
        return "quality"
    raise ValueError(
        f"{owner}: quality_loss {type(loss).__name__} takes neither a soft target nor a quality; "
        "use bce, qfl, vfl or hcra_c"
    )


class Scale(nn.Module):
    """A learnable scalar multiplier (one per pyramid level in FCOS/ATSS)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class DenseHead(nn.Module):
    """Base of the dense one-stage heads (subclasses: ``retina``, ``atss``, ``fcos``, ``vfnet``).

    Args:
        num_classes: number of object classes ``C`` (background is implicit).
        cls_loss, reg_loss, quality_loss: registry names or ``{name, **params}`` dicts
            (``quality_loss=None`` for heads without a quality branch).
        assigner, balancer: registry names or dicts.
        anchor_generator: the anchors (or each point's square anchor) per level.
        reg_weighting: ``"quality"`` weights each positive's regression loss by its
            quality target (ATSS/FCOS practice), ``"none"`` weights all positives alike.
        loss_normalization: ``"batch"`` [default] divides each loss by the positives (or
            the quality sum) of the whole batch (mmdetection, torchvision's FCOS);
            ``"image"`` divides each image's losses by its own positives (at least 1) and
            averages the images (torchvision's RetinaNet), through per-row ``weight`` and
            an ``avg_factor`` counting images.
        score_thr, nms_thr, pre_nms_topk, max_dets: post-processing.
        quality_scoring: how a quality branch enters the detection score: ``"product"``
            [default] ``sigmoid(cls) * sigmoid(quality)``, the top-k and ``score_thr`` applying
            to that score; ``"geometric_mean"`` its square root (torchvision's FCOS);
            ``"product_after_topk"``: the top-k and ``score_thr`` apply to ``sigmoid(cls)``
            alone and the candidates' scores are then multiplied by the quality
            (mmdetection's ATSS and FCOS).
        min_box_size: drop candidate boxes whose width or height (after clipping) is not
            above it, before NMS [None: keep all, as torchvision; mmdetection's
            ``min_bbox_size=0`` drops empty boxes].
    """

    #: The components this head takes by name (docs/api.md, "Slots"); recipes, detectors,
    #: config.json and loading derive every slot name from here.
    slots: ClassVar[dict[str, Slot]] = {
        "cls_loss": Slot("loss", "cls"),
        "reg_loss": Slot("loss", "reg"),
        "quality_loss": Slot("loss", "cls"),
        "assigner": Slot("assigner"),
        "balancer": Slot("balancer"),
    }

    box_format = "delta"  # "delta" (anchor offsets) or "ltrb" (point distances)

    def __init__(
        self,
        num_classes: int,
        cls_loss: Spec,
        reg_loss: Spec,
        quality_loss: Spec,
        assigner: Spec,
        balancer: Spec,
        anchor_generator: AnchorGenerator,
        reg_weighting: str = "none",
        loss_normalization: str = "batch",
        score_thr: float = 0.05,
        nms_thr: float = 0.6,
        pre_nms_topk: int = 1000,
        max_dets: int = 100,
        quality_scoring: str = "product",
        min_box_size: float | None = None,
    ) -> None:
        super().__init__()
        if quality_scoring not in ("product", "geometric_mean", "product_after_topk"):
            raise ValueError(
                f"quality_scoring must be 'product', 'geometric_mean' or 'product_after_topk', got {quality_scoring!r}"
            )
        self.quality_scoring = quality_scoring
        self.min_box_size = None if min_box_size is None else float(min_box_size)
        owner = type(self).__name__
        check_num_classes(owner, num_classes)
        if reg_weighting not in ("quality", "none"):
            raise ValueError(f"reg_weighting must be 'quality' or 'none', got {reg_weighting!r}")
        if loss_normalization not in ("batch", "image"):
            raise ValueError(f"loss_normalization must be 'batch' or 'image', got {loss_normalization!r}")
        self.loss_normalization = loss_normalization
        check_postprocess(owner, score_thr, nms_thr, pre_nms_topk, max_dets)
        self.num_classes = num_classes
        self.cls_loss = build_component("loss", cls_loss, require_task="cls", where=f"{owner}: cls_loss")
        self.reg_loss = build_component("loss", reg_loss, require_task="reg", where=f"{owner}: reg_loss")
        self.quality_loss = (
            build_component("loss", quality_loss, require_task="cls", where=f"{owner}: quality_loss")
            if quality_loss is not None
            else None
        )
        self._quality_by = quality_target_keyword(self.quality_loss, owner) if self.quality_loss is not None else ""
        if getattr(self.cls_loss, "background_column", False):
            raise ValueError(
                f"{type(self).__name__}: {type(self.cls_loss).__name__} is a softmax loss with a background column, "
                "for two-stage heads (roi_box); dense heads need a sigmoid loss such as focal, qfl, vfl or hcra_c"
            )
        self.assigner = build_component("assigner", assigner, where=f"{owner}: assigner")
        self.balancer = build_component("balancer", balancer, where=f"{owner}: balancer")
        self.anchor_generator = anchor_generator
        bind = getattr(self.assigner, "bind_levels", None)
        if callable(bind):  # the assigner takes the level layout from the head (docs/api.md, "Assigners")
            bind(tuple(anchor_generator.strides))
        self.reg_weighting = reg_weighting
        self.score_thr, self.nms_thr = score_thr, nms_thr
        self.pre_nms_topk, self.max_dets = pre_nms_topk, max_dets
        self.last_loss_weights: dict[str, float] = {}

    # -- subclass interface -------------------------------------------------
    @property
    def num_anchors(self) -> int:
        return self.anchor_generator.num_anchors

    @property
    def cls_output_layers(self) -> dict[str, tuple[int, bool]]:
        """Classification output layers for fine-tuning transfer: ``{prefix: (anchors, background_last)}``."""
        return {"cls_out": (self.num_anchors, False)}

    @property
    def has_quality(self) -> bool:
        return self.quality_loss is not None

    def build_towers(
        self, in_channels: int, feat_channels: int, stacked_convs: int, norm: str, prior_prob: float, scaled: bool,
        conv_bias: bool | None = None,
    ) -> None:
        """The standard layout (RetinaNet, ATSS, FCOS): a classification and a regression conv tower,
        3x3 outputs ``A*C`` / ``A*4`` / ``A`` (quality, on the regression tower), optional learnable
        per-level scales on the regression output, N(0, 0.01) init and the focal prior bias."""
        a = self.num_anchors
        check_head_size(type(self).__name__, in_channels, feat_channels, stacked_convs, a * self.num_classes)
        self.cls_tower = conv_tower(in_channels, feat_channels, stacked_convs, norm, conv_bias)
        self.reg_tower = conv_tower(in_channels, feat_channels, stacked_convs, norm, conv_bias)
        self.cls_out = nn.Conv2d(feat_channels, a * self.num_classes, 3, padding=1)
        self.reg_out = nn.Conv2d(feat_channels, a * 4, 3, padding=1)
        self.quality_out = nn.Conv2d(feat_channels, a, 3, padding=1) if self.has_quality else None
        levels = len(self.anchor_generator.strides)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(levels)) if scaled else None
        init_head_convs(self, self.cls_out, prior_prob)

    def reg_activation(self, reg: Tensor) -> Tensor:
        """Applied to each level's (scaled) regression output; identity for delta regression."""
        return reg

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
        """Per level: cls ``[B, A*C, H, W]``, reg ``[B, A*4, H, W]``, quality ``[B, A, H, W]`` or None."""
        cls, reg, qual = [], [], []
        for level, x in enumerate(feats):
            c, r = self.cls_tower(x), self.reg_tower(x)
            cls.append(self.cls_out(c))
            out = self.reg_out(r)
            if self.scales is not None:
                out = self.scales[level](out).float()
            reg.append(self.level_reg_activation(out, level))
            if self.quality_out is not None:
                qual.append(self.quality_out(c if self.quality_on_cls else r))
        return cls, reg, (qual or None)

    #: the quality branch reads the classification tower instead of the regression one
    #: (mmdetection's FCOS with ``centerness_on_reg=False``)
    quality_on_cls: bool = False

    def level_reg_activation(self, reg: Tensor, level: int) -> Tensor:
        """:meth:`reg_activation` of pyramid level ``level``'s (scaled) regression output."""
        return self.reg_activation(reg)

    def decode(self, anchors: Tensor, reg: Tensor, strides: Tensor) -> Tensor:
        """Boxes ``[..., N, 4]`` from the regression output ``[..., N, 4]`` at ``anchors [N, 4]`` (delta coder)."""
        return self.coder.decode(anchors, reg)

    def encode(self, anchors: Tensor, boxes: Tensor, strides: Tensor) -> Tensor:
        """Regression targets ``[P, 4]`` for delta-space losses (inverse of ``decode``)."""
        return self.coder.encode(anchors, boxes)

    def quality_target(self, anchors: Tensor, pred_boxes: Tensor, gt_boxes: Tensor) -> Tensor:
        """Target ``[P]`` of the quality branch at positives: IoU of the predicted box (default)."""
        return aligned_box_iou(pred_boxes, gt_boxes).clamp(min=0)

    # -- shared -------------------------------------------------------------
    def flat_outputs(self, feats: list[Tensor]) -> dict[str, Any]:
        cls, reg, qual = self(feats)
        sizes = [tuple(t.shape[-2:]) for t in cls]
        anchors, level_sizes = self.anchor_generator.grid_anchors(sizes, device=cls[0].device)
        strides = torch.cat(
            [anchors.new_full((n,), float(s)) for n, s in zip(level_sizes, self.anchor_generator.strides)]
        )
        reg_flat = _flatten(reg, 4)
        return {
            "cls": _flatten(cls, self.num_classes),
            "reg": reg_flat,
            "quality": _flatten(qual, 1).squeeze(-1) if qual is not None else None,
            "anchors": anchors,
            "level_sizes": level_sizes,
            "strides": strides,
            "boxes": self.decode(anchors, reg_flat, strides),
        }

    def assign(self, out: dict[str, Any], targets: list[dict[str, Tensor]]) -> list[Any]:
        """One assignment result per image (predictions passed for assigners that use them)."""
        scores = out["cls"].detach().sigmoid()
        boxes = out["boxes"].detach()
        return self.assigner.assign_batch(
            out["anchors"],
            out["level_sizes"],
            [t["boxes"].to(boxes.dtype) for t in targets],
            [t["labels"] for t in targets],
            pred_boxes=boxes,
            pred_scores=scores,
        )

    def loss(self, feats: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Training losses ``{"loss_cls", "loss_reg", ["loss_quality"], ["loss_balancer"]}``, weighted by the
        balancer; their sum is the total to train."""
        out = self.flat_outputs(feats)
        return self.balance(self.loss_terms(out, targets, self.assign(out, targets)))

    def balance(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        return balance_terms(self, terms)

    def loss_terms(self, out: dict[str, Any], targets: list[dict[str, Tensor]], results: list[Any]) -> dict[str, Tensor]:
        """Unweighted task losses ``{"cls", "reg", ["quality"]}`` from flat outputs and assignments."""
        c = self.num_classes
        cls, boxes = out["cls"], out["boxes"]
        device = cls.device
        # the whole batch at once: the gts padded to [B, G_max], the assignment stacked to [B, N]
        gt_inds = torch.stack([res.gt_inds for res in results]).to(device)
        gt_pad, lab_pad, gt_valid = pad_targets(targets, device)
        pos = gt_inds >= 0
        labels = torch.full_like(gt_inds, c)
        if gt_pad.shape[1] > 0:
            labels = torch.where(pos, lab_pad.gather(1, gt_inds.clamp(min=0)), labels)
        labels = labels.masked_fill(gt_inds == -2, -1)
        b_idx, a_idx = pos.nonzero(as_tuple=True)  # image-major, anchors ascending
        gt_boxes = gt_pad[b_idx, gt_inds[b_idx, a_idx]]
        pred_boxes = boxes[b_idx, a_idx]
        quality = None
        if getattr(self.cls_loss, "uses_quality", True):  # only QFL/VFL/HCRA-C-like losses read it
            # negatives: best IoU with any ground truth of their image; positives: IoU with their own
            quality = boxes.new_zeros(gt_inds.shape, dtype=torch.float32)
            if gt_pad.shape[1] > 0:
                iou = iou_matrix(boxes.detach().float(), gt_pad).masked_fill_(~gt_valid[:, None, :], 0.0)
                quality = iou.max(dim=2).values
            quality[b_idx, a_idx] = aligned_box_iou(pred_boxes.detach().float(), gt_boxes).clamp(min=0)
            quality = quality.reshape(-1).clamp(0, 1)
        labels = labels.reshape(-1)
        num_pos = int(b_idx.numel())
        # normalised over this batch or, in training under DDP or accumulation, the whole batch
        # (lossreg.heads.normalizer); every factor is asked for on every step, before any branch
        image_w, cls_kw, count = None, {}, num_pos
        if self.loss_normalization == "image":
            # torchvision's RetinaNet: image b's rows weigh 1 / max(P_b, 1) and the factors count images
            image_w = 1.0 / pos.sum(dim=1).float().clamp(min=1.0)
            cls_kw = {"weight": image_w[:, None].expand(gt_inds.shape).reshape(-1)}
            count = len(targets)
        avg = avg_factor(self, "cls", count, 1.0, self.cls_loss)
        q_avg = avg_factor(self, "quality", count, 1.0, self.quality_loss) if self.has_quality else avg
        terms = {"cls": self.cls_loss(cls.reshape(-1, c), labels, quality=quality, avg_factor=avg, **cls_kw)}

        if num_pos == 0:
            floor = 1e-6 if self.reg_weighting == "quality" and image_w is None else 1.0
            avg_factor(self, "reg", float(count) if image_w is not None else 0.0, floor, self.reg_loss)
            # keep every output in the graph so DDP and the balancer see the same tasks every step
            zero = out["reg"].sum() * 0.0
            terms["reg"] = zero
            if self.has_quality:
                terms["quality"] = out["quality"].sum() * 0.0
            return terms

        anchors = out["anchors"][a_idx]
        strides = out["strides"][a_idx]
        pos_labels = labels.view(gt_inds.shape)[b_idx, a_idx]
        scores = cls[b_idx, a_idx, pos_labels].detach().sigmoid()
        q_target = self.quality_target(anchors, pred_boxes.detach().float(), gt_boxes).detach()

        weight = None
        if self.reg_weighting == "quality":
            weight = q_target
            reg_value, reg_floor = q_target.sum(), 1e-6
        else:
            reg_value, reg_floor = num_pos, 1.0
        q_kw = {}
        if image_w is not None:  # each image over its own positives (or quality sum), then the mean over images
            if weight is None:
                weight = image_w[b_idx]
            else:
                sums = weight.new_zeros(len(targets)).index_add_(0, b_idx, weight).clamp(min=1e-6)
                weight = weight / sums[b_idx]
            reg_value, reg_floor = len(targets), 1.0
            q_kw = {"weight": image_w[b_idx]}
        reg_avg = avg_factor(self, "reg", reg_value, reg_floor, self.reg_loss)
        if getattr(self.reg_loss, "space", "box") == "delta":
            reg_pred = out["reg"][b_idx, a_idx]
            reg_target = self.encode(anchors, gt_boxes, strides)
        else:
            reg_pred, reg_target = pred_boxes, gt_boxes
        terms["reg"] = self.reg_loss(reg_pred, reg_target, weight=weight, avg_factor=reg_avg, scores=scores, anchors=anchors)
        if self.has_quality:
            q_logits = out["quality"][b_idx, a_idx][:, None]
            zeros = torch.zeros_like(a_idx)
            q_kw[self._quality_by] = q_target
            terms["quality"] = self.quality_loss(q_logits, zeros, avg_factor=q_avg, **q_kw)
        return terms

    @torch.no_grad()
    def predict(self, feats: list[Tensor], image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """Post-processed detections per image (:meth:`predict_padded` without the padding)."""
        return unpad(*self.predict_padded(feats, image_size))

    @torch.no_grad()
    def predict_padded(self, feats: list[Tensor], image_size: tuple[int, int], image_sizes: Tensor | None = None) -> Padded:
        """The whole batch at once: top ``pre_nms_topk`` per level and image, score ``> score_thr``,
        boxes clipped to ``image_size`` (H, W), one class-wise NMS over the batch (groups
        ``image * C + class``), best ``max_dets`` per image.

        Returns fixed-shape ``boxes [B, K, 4]``, ``scores [B, K]``, ``labels [B, K]`` (``-1``
        in empty slots) and ``num_detections [B]``, ``K = max_dets``, each image's detections
        by decreasing score. No step depends on the data's values on the Python side, so
        this exports (:mod:`lossreg.export`). ``image_sizes [B, 2]`` (each image's own H, W):
        boxes are clipped to their image instead of the padded batch before NMS (torchvision,
        mmdetection; the detectors pass it).
        """
        out = self.flat_outputs(feats)
        scores_all = out["cls"].sigmoid()
        late_quality = out["quality"] is not None and self.quality_scoring == "product_after_topk"
        if out["quality"] is not None and not late_quality:
            scores_all = scores_all * out["quality"].sigmoid()[..., None]
            if self.quality_scoring == "geometric_mean":
                scores_all = scores_all.sqrt()
        b, _, c = scores_all.shape
        h, w = image_size
        scores, idx = level_topk(scores_all.reshape(b, -1), out["level_sizes"], self.pre_nms_topk, per_row=c)
        boxes = out["boxes"].gather(1, (idx // c)[..., None].expand(-1, -1, 4)).float()
        boxes = torch.stack(
            [boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)],
            dim=-1,
        )
        if image_sizes is not None:
            boxes = clip_to_sizes(boxes, image_sizes)
        valid = scores > self.score_thr
        if self.min_box_size is not None:
            wh = boxes[..., 2:] - boxes[..., :2]
            valid = valid & (wh[..., 0] > self.min_box_size) & (wh[..., 1] > self.min_box_size)
        img, j = valid.nonzero(as_tuple=True)
        boxes, scores, labels = boxes[img, j], scores[img, j].float(), idx[img, j] % c
        if late_quality:  # mmdetection: candidates by class score, then scaled by the quality
            scores = scores * out["quality"].sigmoid().gather(1, idx // c)[img, j].float()
        keep = batched_group_nms(boxes, scores, img * c + labels, self.nms_thr, max(h, w))
        (boxes, scores, labels), num = pad_per_image(
            img[keep], b, self.max_dets, (boxes[keep], scores[keep], labels[keep]), (0.0, 0.0, -1)
        )
        return boxes, scores, labels, num


def centerness_target(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """FCOS centerness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` ``[P]`` of anchor centres in their gts.

    Centres outside their box (possible with max-IoU or EATSS assignment) get 0.
    """
    cx = (anchors[:, 0] + anchors[:, 2]) * 0.5
    cy = (anchors[:, 1] + anchors[:, 3]) * 0.5
    left, right = cx - gt_boxes[:, 0], gt_boxes[:, 2] - cx
    top, bottom = cy - gt_boxes[:, 1], gt_boxes[:, 3] - cy
    lr = torch.stack([left, right], 1).clamp(min=0)
    tb = torch.stack([top, bottom], 1).clamp(min=0)
    ratio = (lr.min(1).values / lr.max(1).values.clamp(min=1e-6)) * (tb.min(1).values / tb.max(1).values.clamp(min=1e-6))
    return ratio.clamp(min=0).sqrt()
