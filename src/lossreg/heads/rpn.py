"""The region proposal network of Faster R-CNN, on the shared dense-head machinery.

The RPN is a class-agnostic dense head (one objectness logit per anchor), so it
reuses :class:`~lossreg.heads.dense.DenseHead` for anchors, decoding and
assignment; it adds the random anchor sampling of Faster R-CNN, losses
normalised by the number of sampled anchors, and proposal generation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from .._registry import Slot, register_head
from ..ops.anchors import AnchorGenerator
from ..ops.box_coder import DeltaBoxCoder
from ..ops.geometry import aligned_box_iou
from ..ops.postprocess import batched_group_nms, clip_to_sizes, image_sizes_tensor, level_topk, rank_in_image
from ..ops.sampler import RandomSampler
from .dense import DenseHead, Spec, init_head_convs
from .normalizer import avg_factor

__all__ = ["RPNHead", "with_default_params", "FASTER_RCNN_PAPER"]

FASTER_RCNN_PAPER = (
    "Ren et al., Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks, NeurIPS 2015"
)


def with_default_params(spec: Spec, name: str, defaults: Mapping[str, Any]) -> Spec:
    """``spec`` with ``defaults`` filled in when it names component ``name`` (a string or a dict).

    Lets a head give a shared component its own defaults (the RPN's ``max_iou``
    thresholds 0.7 / 0.3) while another component, or a built instance, passes through.
    """
    if spec == name:
        return {"name": name, **defaults}
    if isinstance(spec, Mapping) and spec.get("name") == name:
        return {**defaults, **spec}
    return spec


@register_head("rpn")
class RPNHead(DenseHead):
    """Region proposal network: 3x3 conv + 1x1 objectness and box-delta convs, 3 anchors per location.

    Paper: Ren et al., Faster R-CNN: Towards Real-Time Object Detection with Region
    Proposal Networks, NeurIPS 2015 (with FPN levels as in Lin et al., CVPR 2017).

    Class-agnostic: one sigmoid objectness logit per anchor (``num_classes`` must be 1;
    the detector's classes belong to the ``roi_box`` head). Training: the assigner
    labels the anchors, a :class:`~lossreg.ops.sampler.RandomSampler` draws
    ``num_samples`` per image (at most ``pos_fraction`` positive), and both losses
    are normalised by the number of sampled anchors (torchvision, mmdetection);
    unsampled anchors get no loss. ``quality`` for the classification loss is the IoU
    of each sampled anchor's decoded box with its ground truth (positives) or the
    largest with any ground truth (negatives); ``scores`` for ``hcra_r`` are the
    objectness probabilities of the positives. The two task losses go through the
    head's own ``balancer`` under the task names ``cls`` and ``reg``, so ``alwa1`` /
    ``alwa2`` balance the RPN as in the ALWA paper.

    Defaults: ``cls_loss="bce"``, ``reg_loss="l1"`` (on deltas; mmdetection's RPN
    default; ``smooth_l1``, whose default beta 1/9 is torchvision's RPN loss; box-space losses
    such as ``giou`` work too), ``assigner="max_iou"`` with ``pos_iou_thr=0.7,
    neg_iou_thr=0.3, min_pos_iou=0.0`` and low-quality matches (filled in whenever the
    assigner is ``max_iou`` and the spec leaves them unset), ``balancer="static"``;
    256 sampled anchors per image, 50% positive at most; anchors of sizes 32-512 at
    strides 4-64 (``anchor_scale=8`` x stride), ratios 0.5, 1, 2; delta coder stds
    (1, 1, 1, 1); conv weights N(0, 0.01), zero biases (``prior_prob`` sets the focal
    prior bias instead). Proposals: top ``pre_nms_topk_*`` per level by objectness,
    clipped to the image, boxes smaller than ``min_size`` removed, NMS 0.7 per level,
    best ``post_nms_topk_*`` per image (train 2000 / 2000, test 1000 / 1000). Unlike
    torchvision the base anchors are not rounded to integers, unless
    ``anchor_style="torchvision"`` (integer anchors, torchvision's cell spacing; see
    :class:`~lossreg.ops.anchors.AnchorGenerator`). ``num_convs`` 3x3 conv + ReLU layers
    before the outputs [1; torchvision's ``fasterrcnn_resnet50_fpn_v2`` has 2].

    Shapes: ``forward(list of [B, in_channels, H_l, W_l])`` -> objectness
    ``[B, 3, H_l, W_l]``, deltas ``[B, 3*4, H_l, W_l]``, no quality branch;
    ``get_proposals`` -> per image boxes ``[P_i, 4]`` (xyxy, input pixels) and scores ``[P_i]``.
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
        in_channels: int = 256,
        num_classes: int = 1,
        strides: Sequence[int] = (4, 8, 16, 32, 64),
        anchor_scale: float = 8.0,
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        cls_loss: Spec = "bce",
        reg_loss: Spec = "l1",
        assigner: Spec = "max_iou",
        balancer: Spec = "static",
        num_samples: int = 256,
        pos_fraction: float = 0.5,
        coder_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        pre_nms_topk_train: int = 2000,
        post_nms_topk_train: int = 2000,
        pre_nms_topk_test: int = 1000,
        post_nms_topk_test: int = 1000,
        nms_thr: float = 0.7,
        min_size: float = 1e-3,
        score_thr: float = 0.0,
        prior_prob: float | None = None,
        num_convs: int = 1,
        anchor_style: str = "mmdet",
    ) -> None:
        if isinstance(num_convs, bool) or not isinstance(num_convs, int) or num_convs < 1:
            raise ValueError(f"rpn: num_convs must be an int >= 1, got {num_convs!r}")
        if num_classes != 1:
            raise ValueError(
                f"rpn: the RPN is class-agnostic (one objectness logit), so num_classes must be 1, got {num_classes!r}; "
                "the detector's classes go to the RoI head"
            )
        for key, value in (
            ("pre_nms_topk_train", pre_nms_topk_train),
            ("post_nms_topk_train", post_nms_topk_train),
            ("pre_nms_topk_test", pre_nms_topk_test),
            ("post_nms_topk_test", post_nms_topk_test),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"rpn: {key} must be an int >= 1, got {value!r}")
        if not 0 < nms_thr <= 1:
            raise ValueError(f"rpn: nms_thr must be in (0, 1], got {nms_thr!r}")
        gen = AnchorGenerator(strides, ratios, octave_base_scale=anchor_scale, scales_per_octave=1, style=anchor_style)
        assigner = with_default_params(
            assigner, "max_iou", {"pos_iou_thr": 0.7, "neg_iou_thr": 0.3, "min_pos_iou": 0.0}
        )
        super().__init__(
            1,
            cls_loss,
            reg_loss,
            None,
            assigner,
            balancer,
            gen,
            score_thr=score_thr,
            nms_thr=nms_thr,
            pre_nms_topk=pre_nms_topk_test,
            max_dets=post_nms_topk_test,
        )
        a = gen.num_anchors
        self.sampler = RandomSampler(num_samples, pos_fraction)
        self.coder = DeltaBoxCoder(stds=coder_stds)
        self.pre_nms_topk_train, self.post_nms_topk_train = pre_nms_topk_train, post_nms_topk_train
        self.pre_nms_topk_test, self.post_nms_topk_test = pre_nms_topk_test, post_nms_topk_test
        self.min_size = float(min_size)
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        # further 3x3 conv + ReLU layers (torchvision's v2 RPN has 2 in all)
        self.extra_convs = nn.ModuleList(nn.Conv2d(in_channels, in_channels, 3, padding=1) for _ in range(num_convs - 1))
        self.cls_out = nn.Conv2d(in_channels, a, 1)
        self.reg_out = nn.Conv2d(in_channels, a * 4, 1)
        init_head_convs(self, self.cls_out if prior_prob is not None else None, prior_prob or 0.01)

    # -- DenseHead interface --------------------------------------------------
    @property
    def cls_output_layers(self) -> dict[str, tuple[int, bool]]:
        """None: objectness is class-agnostic, so fine-tuning to other classes keeps the whole RPN."""
        return {}

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor], None]:
        cls, reg = [], []
        for x in feats:
            t = F.relu(self.conv(x))
            for conv in self.extra_convs:
                t = F.relu(conv(t))
            cls.append(self.cls_out(t))
            reg.append(self.reg_out(t))
        return cls, reg, None

    def assign(self, out: dict[str, Any], targets: list[dict[str, Tensor]]) -> list[Any]:
        """Class-agnostic assignment: every ground truth is an object of class 0 (before sampling)."""
        agnostic = [{"boxes": t["boxes"], "labels": torch.zeros_like(t["labels"])} for t in targets]
        return super().assign(out, agnostic)

    def loss_terms(
        self, out: dict[str, Any], targets: list[dict[str, Tensor]], results: list[Any]
    ) -> dict[str, Tensor]:
        """Unweighted ``{"cls", "reg"}`` over the sampled anchors, both divided by the number sampled."""
        cls, boxes = out["cls"], out["boxes"]
        device = cls.device
        rows_b, rows_a, labels, quality = [], [], [], []
        pos_b, pos_a, pos_gt = [], [], []
        for b, (tgt, res) in enumerate(zip(targets, results)):
            pos, neg = self.sampler.sample(res.gt_inds)
            idx = torch.cat([pos, neg])
            gt = tgt["boxes"].to(device=device, dtype=torch.float32)
            pred = boxes[b, idx].detach().float()
            q = torch.zeros(idx.numel(), device=device)
            if gt.shape[0] > 0 and idx.numel() > 0:
                q = box_iou(pred, gt).max(dim=1).values
                gt_pos = gt[res.gt_inds[pos]]
                q[: pos.numel()] = aligned_box_iou(pred[: pos.numel()], gt_pos).clamp(min=0)
                pos_b.append(torch.full_like(pos, b))
                pos_a.append(pos)
                pos_gt.append(gt_pos)
            rows_b.append(torch.full_like(idx, b))
            rows_a.append(idx)
            lab = torch.ones_like(idx)  # 1 = background (C = 1)
            lab[: pos.numel()] = 0
            labels.append(lab)
            quality.append(q)
        b_idx, a_idx = torch.cat(rows_b), torch.cat(rows_a)
        # the number sampled, over this batch or the whole (DDP / accumulated) batch: lossreg.heads.normalizer
        avg = avg_factor(self, "cls", b_idx.numel(), 1.0, self.cls_loss)
        reg_avg = avg_factor(self, "reg", b_idx.numel(), 1.0, self.reg_loss)
        logits = cls[b_idx, a_idx]  # [S, 1]
        terms = {
            "cls": self.cls_loss(logits, torch.cat(labels), quality=torch.cat(quality).clamp(0, 1), avg_factor=avg)
        }
        num_pos = sum(int(p.numel()) for p in pos_a)
        if num_pos == 0:
            # keep the regression output in the graph so every step has the same tasks and parameters
            terms["reg"] = out["reg"].sum() * 0.0
            return terms
        pb, pa, gt_boxes = torch.cat(pos_b), torch.cat(pos_a), torch.cat(pos_gt)
        anchors, strides = out["anchors"][pa], out["strides"][pa]
        scores = cls[pb, pa, 0].detach().sigmoid()
        if getattr(self.reg_loss, "space", "box") == "delta":
            reg_pred, reg_target = out["reg"][pb, pa], self.encode(anchors, gt_boxes, strides)
        else:
            reg_pred, reg_target = boxes[pb, pa], gt_boxes
        terms["reg"] = self.reg_loss(reg_pred, reg_target, avg_factor=reg_avg, scores=scores, anchors=anchors)
        return terms

    # -- Faster R-CNN ----------------------------------------------------------
    def loss_and_proposals(
        self, feats: list[Tensor], targets: list[dict[str, Tensor]], image_sizes: Sequence[tuple[int, int]]
    ) -> tuple[dict[str, Tensor], tuple[list[Tensor], list[Tensor]]]:
        """One pass of the head: the weighted losses and the (detached) proposals of each image."""
        out = self.flat_outputs(feats)
        losses = self.balance(self.loss_terms(out, targets, self.assign(out, targets)))
        return losses, self.get_proposals(out, image_sizes)

    @torch.no_grad()
    def get_proposals(
        self, out: dict[str, Any], image_sizes: Sequence[tuple[int, int]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: proposal boxes ``[P_i, 4]`` and objectness probabilities ``[P_i]``, best first.

        Uses the train or test top-k settings according to ``self.training``.
        """
        boxes, scores, image = self.flat_proposals(out, image_sizes)
        props = [boxes[image == b] for b in range(len(image_sizes))]
        return props, [scores[image == b] for b in range(len(image_sizes))]

    @torch.no_grad()
    def flat_proposals(
        self, out: dict[str, Any], image_sizes: Sequence[tuple[int, int]]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The proposals of the whole batch at once: boxes ``[P, 4]``, objectness ``[P]`` and image index ``[P]``.

        Top ``pre_nms_topk_*`` per level and image by objectness, boxes clipped to their
        image, boxes smaller than ``min_size`` and scores below ``score_thr`` dropped, one
        NMS over the batch with groups ``image * levels + level``, the best
        ``post_nms_topk_*`` per image; ordered by decreasing objectness (so each image's
        proposals are best first). No step depends on the data on the Python side (export).
        """
        pre = self.pre_nms_topk_train if self.training else self.pre_nms_topk_test
        post = self.post_nms_topk_train if self.training else self.post_nms_topk_test
        logits = out["cls"].detach()[..., 0].float()  # [B, N]
        boxes = out["boxes"].detach().float()
        num = logits.shape[0]
        if len(image_sizes) != num:
            raise ValueError(f"rpn: {len(image_sizes)} image sizes for a batch of {num}")
        top, idx = level_topk(logits, out["level_sizes"], pre)
        counts = [min(pre, int(n)) for n in out["level_sizes"]]
        level = torch.cat([torch.full((k,), lvl, dtype=torch.long, device=logits.device) for lvl, k in enumerate(counts)])
        sizes = image_sizes_tensor(image_sizes, logits.device)
        cand = clip_to_sizes(boxes.gather(1, idx[..., None].expand(-1, -1, 4)), sizes)  # [B, M, 4]
        scores = top.sigmoid()
        wh = cand[..., 2:] - cand[..., :2]
        valid = (wh[..., 0] >= self.min_size) & (wh[..., 1] >= self.min_size) & (scores >= self.score_thr)
        img, j = valid.nonzero(as_tuple=True)
        cand, scores, lvl = cand[img, j], scores[img, j], level[j]
        max_side = max(max(int(h), int(w)) for h, w in image_sizes)
        keep = batched_group_nms(cand, scores, img * len(counts) + lvl, self.nms_thr, max_side)
        first = rank_in_image(img[keep], num)[0] < post
        keep = keep[first]
        return cand[keep], scores[keep], img[keep]

    @torch.no_grad()
    def predict(
        self, feats: list[Tensor], image_size: tuple[int, int] | Sequence[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Proposals as detections: ``[{"boxes", "scores", "labels" (all 0)}]`` per image."""
        out = self.flat_outputs(feats)
        num = out["cls"].shape[0]
        sizes = [tuple(image_size)] * num if isinstance(image_size[0], int) else list(image_size)
        props, scores = self.get_proposals(out, sizes)
        return [
            {"boxes": p, "scores": s, "labels": torch.zeros(s.shape[0], dtype=torch.long, device=s.device)}
            for p, s in zip(props, scores)
        ]
