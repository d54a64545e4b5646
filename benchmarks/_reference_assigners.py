"""Straightforward reference assigners: one Python loop over ground truths, written from the papers' steps.

Used by ``tests/assigners`` (the vectorised assigners must match them exactly) and by
``bench_assigners.py`` (the speed baseline). They mirror the documented conventions of
``lossreg.assigners``: squared center distances, ties to the lower anchor index in a
ranking (stable sort) and to the lower gt index in a conflict (strict ``>`` updates),
the 0.01 inside margin, the ATSS threshold in float64.

Every function takes one image and returns ``(gt_inds [A] long, max_iou [A] float)``.
``grid_anchors`` and ``random_scene`` build the inputs both use.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["ref_max_iou", "ref_atss", "ref_eatss", "ref_fcos", "REFERENCES", "grid_anchors", "random_scene"]

MARGIN = 0.01


def grid_anchors(
    image_size: int, strides: tuple[int, ...] = (8, 16, 32, 64, 128), anchors_per_location: int = 1
) -> tuple[Tensor, list[int]]:
    """Anchors ``[A, 4]`` of a square image, level by level, location-major, and ``level_sizes``.

    One anchor per location: the square of side ``8 * stride`` (ATSS / anchor-free heads).
    Nine: RetinaNet's 3 octave scales (base 4) x 3 aspect ratios.
    """
    out, sizes = [], []
    for stride in strides:
        n = math.ceil(image_size / stride)
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        cx = (xs.flatten().float() + 0.5) * stride
        cy = (ys.flatten().float() + 0.5) * stride
        if anchors_per_location == 1:
            shapes = [(8.0 * stride, 8.0 * stride)]
        elif anchors_per_location == 9:
            shapes = [
                (4 * stride * s / math.sqrt(r), 4 * stride * s * math.sqrt(r))
                for r in (0.5, 1.0, 2.0)
                for s in (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
            ]
        else:
            raise ValueError("anchors_per_location must be 1 or 9")
        level = [torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) for w, h in shapes]
        out.append(torch.stack(level, 1).reshape(-1, 4))
        sizes.append(n * n * anchors_per_location)
    return torch.cat(out), sizes


def random_scene(
    seed: int,
    num_gts: int,
    image_size: int = 128,
    integer: bool = False,
    anchors_per_location: int = 1,
    num_classes: int = 3,
) -> dict:
    """Keyword arguments of ``assign`` for a random image: gts of log-uniform size (2 px to 1.2x the
    image), some crossing the border, with predicted boxes and scores.

    ``integer`` rounds the gt coordinates, which puts gt centres on the anchor grid and creates
    exact ties; every fourth seed repeats gt 0 as gt 1 (identical gts).
    """
    gen = torch.Generator().manual_seed(seed)
    anchors, sizes = grid_anchors(image_size, anchors_per_location=anchors_per_location)
    side = torch.exp(torch.empty(num_gts, 2).uniform_(math.log(2), math.log(1.2 * image_size), generator=gen))
    center = (torch.rand(num_gts, 2, generator=gen) * 1.2 - 0.1) * image_size
    boxes = torch.cat([center - side / 2, center + side / 2], 1)
    if integer:
        boxes = boxes.round()
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    if num_gts >= 2 and seed % 4 == 0:
        boxes[1] = boxes[0]
    jitter = anchors + torch.randn(anchors.shape, generator=gen) * 0.1 * (anchors[:, 2:] - anchors[:, :2]).repeat(1, 2)
    pred_boxes = torch.cat(
        [torch.minimum(jitter[:, :2], jitter[:, 2:]), torch.maximum(jitter[:, :2], jitter[:, 2:])], 1
    )
    return {
        "anchors": anchors,
        "level_sizes": sizes,
        "gt_boxes": boxes,
        "gt_labels": torch.randint(0, num_classes, (num_gts,), generator=gen),
        "pred_boxes": pred_boxes,
        "pred_scores": torch.rand(anchors.shape[0], num_classes, generator=gen),
    }


def _centers(boxes: Tensor) -> tuple[Tensor, Tensor]:
    return (boxes[:, 0] + boxes[:, 2]) * 0.5, (boxes[:, 1] + boxes[:, 3]) * 0.5


def _inside(cx: Tensor, cy: Tensor, box: Tensor, margin: float) -> Tensor:
    return (cx - box[0] > margin) & (cy - box[1] > margin) & (box[2] - cx > margin) & (box[3] - cy > margin)


def ref_max_iou(
    anchors: Tensor,
    level_sizes: list[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    pred_boxes: Tensor | None = None,
    pred_scores: Tensor | None = None,
    pos_iou_thr: float = 0.5,
    neg_iou_thr: float = 0.4,
    min_pos_iou: float = 0.0,
    match_low_quality: bool = True,
) -> tuple[Tensor, Tensor]:
    num = anchors.shape[0]
    best = anchors.new_full((num,), -1.0)
    arg = torch.full((num,), -1, dtype=torch.long)
    for g in range(gt_boxes.shape[0]):
        iou = box_iou(gt_boxes[g : g + 1], anchors)[0]
        better = iou > best
        best[better] = iou[better]
        arg[better] = g
    best = best.clamp(min=0)
    inds = torch.full((num,), -2, dtype=torch.long)
    inds[best >= pos_iou_thr] = arg[best >= pos_iou_thr]
    inds[best < neg_iou_thr] = -1
    max_iou = torch.where(inds >= 0, best, torch.zeros_like(best))
    if match_low_quality:
        lq_best = anchors.new_full((num,), -math.inf)
        lq_ind = torch.full((num,), -1, dtype=torch.long)
        for g in range(gt_boxes.shape[0]):
            iou = box_iou(gt_boxes[g : g + 1], anchors)[0]
            top = iou.max()
            if top >= min_pos_iou and top > 0:
                upd = (iou == top) & (iou > lq_best)
                lq_best[upd] = iou[upd]
                lq_ind[upd] = g
        hit = lq_ind >= 0
        inds[hit] = lq_ind[hit]
        max_iou[hit] = lq_best[hit]
    return inds, max_iou


def ref_atss(
    anchors: Tensor,
    level_sizes: list[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    pred_boxes: Tensor | None = None,
    pred_scores: Tensor | None = None,
    topk: int = 9,
    anchors_per_location: int = 1,
) -> tuple[Tensor, Tensor]:
    """ATSS, Zhang et al. 2020, Algorithm 1, one gt at a time.

    With ``n = anchors_per_location`` the candidates of a level are the ``n`` anchors of each of
    its ``topk`` closest locations, a location's center being its first anchor's.
    """
    num = anchors.shape[0]
    n = anchors_per_location
    lcx, lcy = (c[::n] for c in _centers(anchors))
    best = anchors.new_full((num,), -math.inf)
    inds = torch.full((num,), -1, dtype=torch.long)
    for g in range(gt_boxes.shape[0]):
        box = gt_boxes[g]
        gcx, gcy = (box[0] + box[2]) * 0.5, (box[1] + box[3]) * 0.5
        # Steps 3-6: per level, the topk locations whose centers are closest to the gt center.
        candidates = []
        start = 0
        for size in level_sizes:
            lo, hi = start // n, (start + size) // n
            dx = gcx - lcx[lo:hi]
            dy = gcy - lcy[lo:hi]
            d2 = dx * dx + dy * dy
            locations = torch.argsort(d2, stable=True)[:topk] + lo
            candidates.append((locations[:, None] * n + torch.arange(n)).flatten())
            start += size
        cand = torch.cat(candidates)
        if cand.numel() == 0:
            continue
        # Steps 7-10: IoU threshold = mean + standard deviation of the candidates' IoU.
        iou = box_iou(anchors[cand], gt_boxes[g : g + 1])[:, 0]
        iou64 = iou.double()
        thr = iou64.mean() + (iou64.std() if cand.numel() > 1 else 0.0)
        # Steps 11-15: candidates above the threshold whose center is inside the gt.
        pos = (iou64 >= thr) & _inside(lcx[cand // n], lcy[cand // n], box, MARGIN)
        a, v = cand[pos], iou[pos]
        upd = v > best[a]  # an anchor of several gts keeps the highest IoU; strict > keeps the lower gt on ties
        best[a[upd]] = v[upd]
        inds[a[upd]] = g
    return inds, torch.where(inds >= 0, best, torch.zeros_like(best))


def ref_eatss(
    anchors: Tensor,
    level_sizes: list[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    pred_boxes: Tensor | None = None,
    pred_scores: Tensor | None = None,
    topk: int = 9,
    extra: int = 3,
    anchors_per_location: int = 1,
) -> tuple[Tensor, Tensor]:
    """EATSS as lossreg reads HCRAL Algorithm 1 (the steps of ``EATSSAssigner``'s docstring), one gt at a time."""
    inds, max_iou = ref_atss(
        anchors, level_sizes, gt_boxes, gt_labels, topk=topk, anchors_per_location=anchors_per_location
    )
    atss_pos = inds >= 0
    n = anchors_per_location
    acx, acy = (c[::n].repeat_interleave(n) for c in _centers(anchors))  # each anchor's location center
    wanted: dict[int, list[tuple[int, float]]] = {}
    for g in range(gt_boxes.shape[0]):
        members = torch.nonzero(inds == g).flatten()
        if members.numel() == 0:
            continue
        box = gt_boxes[g]
        gcx, gcy = (box[0] + box[2]) * 0.5, (box[1] + box[3]) * 0.5
        dx, dy = gcx - acx, gcy - acy
        d2 = dx * dx + dy * dy
        bound2 = d2[members].max()
        if bound2 <= 0:
            continue
        cand = torch.nonzero((~atss_pos) & _inside(acx, acy, box, MARGIN) & (d2 <= bound2)).flatten()
        ref_boxes = pred_boxes[cand] if pred_boxes is not None else anchors[cand]
        iou = torch.nan_to_num(box_iou(ref_boxes, box[None])[:, 0], nan=0.0).clamp(min=0)
        if pred_scores is not None:
            iou = torch.maximum(iou, pred_scores[cand, gt_labels[g]])
        score = iou * (1 - d2[cand].sqrt() / bound2.sqrt())
        cand, score = cand[score > 0], score[score > 0]
        order = torch.argsort(score, descending=True, stable=True)[:extra]  # ties: lower anchor index
        wanted[g] = list(zip(cand[order].tolist(), score[order].tolist()))
    best: dict[int, tuple[float, int]] = {}
    for g, picks in wanted.items():  # gts in ascending order: strict > keeps the lower gt on ties
        for a, score in picks:
            if a not in best or score > best[a][0]:
                best[a] = (score, g)
    for a, (_, g) in best.items():
        inds[a] = g
        max_iou[a] = box_iou(anchors[a : a + 1], gt_boxes[g : g + 1])[0, 0]
    return inds, max_iou


def ref_fcos(
    anchors: Tensor,
    level_sizes: list[int],
    gt_boxes: Tensor,
    gt_labels: Tensor,
    pred_boxes: Tensor | None = None,
    pred_scores: Tensor | None = None,
    center_sampling: bool = True,
    radius: float = 1.5,
    scale_ranges: tuple[tuple[float, float], ...] = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, math.inf)),
    strides: tuple[int, ...] = (8, 16, 32, 64, 128),
) -> tuple[Tensor, Tensor]:
    """FCOS, Tian et al. 2019 with center sampling, one gt at a time."""
    num = anchors.shape[0]
    px, py = _centers(anchors)
    sizes = torch.tensor(level_sizes)
    lo = torch.repeat_interleave(torch.tensor([float(r[0]) for r in scale_ranges], dtype=anchors.dtype), sizes)
    hi = torch.repeat_interleave(torch.tensor([float(r[1]) for r in scale_ranges], dtype=anchors.dtype), sizes)
    rad = torch.repeat_interleave(torch.tensor([radius * float(s) for s in strides], dtype=anchors.dtype), sizes)
    best_area = anchors.new_full((num,), math.inf)
    inds = torch.full((num,), -1, dtype=torch.long)
    for g in range(gt_boxes.shape[0]):
        x1, y1, x2, y2 = gt_boxes[g]
        left, top, right, bottom = px - x1, py - y1, x2 - px, y2 - py
        max_dist = torch.stack([left, top, right, bottom]).max(0).values
        if center_sampling:
            cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
            left = px - torch.maximum(cx - rad, x1)
            top = py - torch.maximum(cy - rad, y1)
            right = torch.minimum(cx + rad, x2) - px
            bottom = torch.minimum(cy + rad, y2) - py
        inside = torch.stack([left, top, right, bottom]).min(0).values > 0
        ok = inside & (max_dist >= lo) & (max_dist <= hi)
        area = (x2 - x1) * (y2 - y1)
        upd = ok & (area < best_area)  # the smallest gt wins; strict < keeps the lower index on ties
        best_area[upd] = area
        inds[upd] = g
    max_iou = anchors.new_zeros(num)
    for g in range(gt_boxes.shape[0]):
        mine = inds == g
        max_iou[mine] = box_iou(anchors[mine], gt_boxes[g : g + 1])[:, 0]
    return inds, max_iou


REFERENCES = {"max_iou": ref_max_iou, "atss": ref_atss, "eatss": ref_eatss, "fcos": ref_fcos}
