"""Max-IoU assignment with positive/negative thresholds (RetinaNet, Lin et al., ICCV 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._registry import register_assigner
from ..ops.geometry import iou_matrix
from ._base import AssignInputs, AssignOutput, BaseAssigner, check_param, resolve_pairs, row_chunks
from .result import BACKGROUND, IGNORED

__all__ = ["MaxIoUAssigner"]

# Slack that keeps the IoU upper bounds above the computed IoUs despite rounding.
_REL_SLACK = 1e-4
_ABS_SLACK = 1e-6
# More distinct anchor shapes than this in a level: bound the level as a whole.
_MAX_SHAPES_PER_LEVEL = 16


@dataclass
class _Group:
    """Anchors of one level with (nearly) one shape: ``index`` into the anchors, and their size range."""

    index: slice | Tensor
    size: int
    shape_box: tuple[Tensor, Tensor, Tensor, Tensor]  # w_min, w_max, h_min, h_max

    def anchor_ids(self, cols: Tensor) -> Tensor:
        """Anchor indices of group-local columns."""
        if isinstance(self.index, slice):
            return cols + self.index.start
        return self.index[cols]


def _shape_groups(anchors: Tensor, starts: list[int], sizes: tuple[int, ...]) -> list[_Group]:
    """Split every level into groups of anchors of about one shape (width and height within ~1%).

    Rounding makes ``x2 - x1`` differ in the last bits between locations, so shapes are
    bucketed on a log scale rather than compared exactly; a group's bound uses its size range.
    """
    w = anchors[:, 2] - anchors[:, 0]
    h = anchors[:, 3] - anchors[:, 1]
    groups = []
    for start, size in zip(starts, sizes):
        if size == 0:
            continue
        sl = slice(start, start + size)
        lw, lh = w[sl], h[sl]
        key_w = torch.log2(lw.clamp(min=1e-6)).mul(64).round().long()
        key_h = torch.log2(lh.clamp(min=1e-6)).mul(64).round().long()
        uniq, inv = torch.unique(key_w * (1 << 20) + key_h, return_inverse=True)
        if uniq.numel() == 1 or uniq.numel() > _MAX_SHAPES_PER_LEVEL:
            groups.append(_Group(sl, size, (lw.min(), lw.max(), lh.min(), lh.max())))
            continue
        order = torch.argsort(inv, stable=True)  # ascending anchor index inside each group
        for idx in order.split(torch.bincount(inv, minlength=uniq.numel()).tolist()):
            gw, gh = lw[idx], lh[idx]
            groups.append(_Group(idx + start, idx.numel(), (gw.min(), gw.max(), gh.min(), gh.max())))
    return groups


def _iou_bound(gw: Tensor, gh: Tensor, shape_box: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
    """Upper bound ``[G]`` of the IoU of each gt (``gw``, ``gh``) with any anchor of a shape range.

    Intersection <= min(w_a, w_g) * min(h_a, h_g) =: I, and IoU <= I / (A_a + A_g - I), the IoU
    at perfect alignment; over w_a in [w_min, w_max] that is largest at w_a = clamp(w_g), and
    likewise for h_a, independently.
    """
    w_min, w_max, h_min, h_max = shape_box
    wa = torch.clamp(gw, min=w_min, max=w_max)
    ha = torch.clamp(gh, min=h_min, max=h_max)
    inter = torch.minimum(wa, gw) * torch.minimum(ha, gh)
    ub = (inter / (wa * ha + gw * gh - inter)).nan_to_num(nan=1.0).clamp(max=1)
    return ub * (1 + _REL_SLACK) + _ABS_SLACK


@register_assigner("max_iou")
class MaxIoUAssigner(BaseAssigner):
    """Max-IoU: positive at IoU >= pos_iou_thr, background below neg_iou_thr, ignored in between.

    Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection" (RetinaNet),
    ICCV 2017; low-quality matches as in Faster R-CNN / mmdetection ``MaxIoUAssigner``.

    Each anchor takes the gt it overlaps most (ties: lower gt index). IoU ``>= pos_iou_thr``:
    positive; ``< neg_iou_thr``: background (``-1``); in between: ignored (``-2``). With
    ``match_low_quality``, every gt's highest-IoU anchor(s) (all anchors tying for its maximum)
    become positive for it when that IoU is ``>= min_pos_iou`` and ``> 0`` (a gt that overlaps
    no anchor must not claim every anchor). These matches take precedence over the thresholds,
    as in mmdetection; an anchor that is the best anchor of several gts goes to the one it
    overlaps most (ties: lower gt index), where mmdetection lets the last gt win.
    ``low_quality_gt="argmax"`` gives such an anchor to the gt it overlaps most of *all*
    gts of its image instead, even one whose best anchor it is not (torchvision's and
    Detectron's ``Matcher``: an anchor at IoU 0.59 with gt A, A's best, and 0.68 with gt B
    becomes B's positive below ``pos_iou_thr``); the default ``"claimant"`` keeps it with a
    gt that claimed it.

    Parameters:
        pos_iou_thr (float, default 0.5).
        neg_iou_thr (float, default 0.4).
        min_pos_iou (float, default 0.0).
        match_low_quality (bool, default True).
        low_quality_gt (``"claimant"`` | ``"argmax"``, default ``"claimant"``).

    Shapes: ``anchors [A, 4]``, ``gt_boxes [G, 4]``, ``gt_labels [G]`` -> ``AssignResult`` with
    ``[A]`` tensors; ``max_iou`` = IoU with the assigned gt. The IoU matrix (values identical to
    ``torchvision.ops.box_iou``) is computed in chunks of gts, each (gt, anchor) pair at most once,
    and only for the (level, anchor shape) groups whose shapes allow IoU >= ``neg_iou_thr`` with
    the gt (or hold its best anchor); skipping the others does not change the result.
    """

    paper = "Lin et al., Focal Loss for Dense Object Detection, ICCV 2017 (arXiv:1708.02002)"

    def __init__(
        self,
        pos_iou_thr: float = 0.5,
        neg_iou_thr: float = 0.4,
        min_pos_iou: float = 0.0,
        match_low_quality: bool = True,
        low_quality_gt: str = "claimant",
    ) -> None:
        owner = type(self).__name__
        check_param(owner, "pos_iou_thr", 0 < pos_iou_thr <= 1, "in (0, 1]", pos_iou_thr)
        check_param(owner, "neg_iou_thr", 0 <= neg_iou_thr <= pos_iou_thr, "in [0, pos_iou_thr]", neg_iou_thr)
        check_param(owner, "min_pos_iou", 0 <= min_pos_iou <= 1, "in [0, 1]", min_pos_iou)
        check_param(owner, "match_low_quality", isinstance(match_low_quality, bool), "a bool", match_low_quality)
        self.pos_iou_thr = float(pos_iou_thr)
        self.neg_iou_thr = float(neg_iou_thr)
        self.min_pos_iou = float(min_pos_iou)
        self.match_low_quality = match_low_quality
        check_param(owner, "low_quality_gt", low_quality_gt in ("claimant", "argmax"), "'claimant' or 'argmax'",
                    low_quality_gt)
        self.low_quality_gt = low_quality_gt

    def _assign(self, inputs: AssignInputs) -> AssignOutput:
        gts = inputs.gts
        num_images, num_anchors = inputs.num_images, inputs.num_anchors
        anchors = inputs.anchors
        device = anchors.device
        best = anchors.new_full((num_images, num_anchors), -1.0)
        arg = torch.full((num_images, num_anchors), -1, dtype=torch.long, device=device)
        groups = _shape_groups(anchors, inputs.level_starts, inputs.level_sizes)
        gw = gts.boxes[:, 2] - gts.boxes[:, 0]
        gh = gts.boxes[:, 3] - gts.boxes[:, 1]
        bounds = [_iou_bound(gw, gh, g.shape_box) for g in groups]
        gt_best = gw.new_full((gts.num,), float("-inf"))
        no_gt = torch.iinfo(torch.long).max
        lq: list[tuple[Tensor, Tensor, Tensor]] = []

        def visit(group: _Group, rows: Tensor, update_anchors: bool) -> None:
            members = anchors[group.index]
            for c0, c1 in row_chunks(rows.numel(), group.size, inputs.chunk_elements):
                rr = rows[c0:c1]
                iou = iou_matrix(gts.boxes[rr], members)  # [rows, group size]
                if update_anchors:
                    img = gts.image[rr]
                    # Per image, the best IoU of every anchor over this chunk's gts (rows of other
                    # images do not touch it: scatter by image).
                    val = best.new_full((num_images, group.size), -1.0)
                    val.scatter_reduce_(0, img[:, None].expand_as(iou), iou, reduce="amax")
                    cur = best[:, group.index]
                    # Strictly greater: an earlier chunk (lower gt index) keeps a tie.
                    better = val > cur
                    best[:, group.index] = torch.where(better, val, cur)
                    # Only anchors that end up positive need their gt's index, and max(dim=0) with
                    # indices is ~20x slower than amax on CPU: find the first row of the right image
                    # reaching the maximum, for the few anchors at or above pos_iou_thr only.
                    pb, pc = torch.nonzero(better & (val >= self.pos_iou_thr), as_tuple=True)
                    if pb.numel():
                        hit = (iou[:, pc] == val[pb, pc]) & (img[:, None] == pb)
                        first = torch.where(hit, gts.local[rr, None], no_gt).amin(dim=0)
                        arg[pb, group.anchor_ids(pc)] = first
                if self.match_low_quality:
                    row_max = iou.amax(dim=1)
                    gt_best[rr] = torch.maximum(gt_best[rr], row_max)
                    # Keep the anchors reaching the gt's best IoU so far, for gts that can still
                    # match: a gt overlapping nothing would otherwise tie on every anchor at IoU 0.
                    live = (row_max >= gt_best[rr]) & (row_max > 0) & (row_max >= self.min_pos_iou)
                    if bool(live.any()):
                        live = torch.nonzero(live).squeeze(1)
                        r, a = torch.nonzero(iou[live] == row_max[live, None], as_tuple=True)
                        lq.append((rr[live[r]], group.anchor_ids(a), row_max[live[r]]))

        done = []
        for group, bound in zip(groups, bounds):
            need = bound >= self.neg_iou_thr
            done.append(need)
            if bool(need.any()):
                visit(group, torch.nonzero(need).squeeze(1), update_anchors=True)
        if self.match_low_quality and groups:
            # Groups skipped above hold IoUs < neg_iou_thr; only a gt's best anchor can live there.
            # Visit them per gt in decreasing order of their bound, until the bound drops below
            # the best IoU found: a gt far smaller than every anchor needs one or two groups.
            bound_all = torch.stack(bounds, 1)  # [N, groups]
            seen_all = torch.stack(done, 1)
            order = torch.argsort(bound_all, dim=1, descending=True)
            for rank in range(len(groups)):
                group_idx = order[:, rank]
                bound = bound_all.gather(1, group_idx[:, None])[:, 0]
                alive = (bound >= gt_best.clamp(min=self.min_pos_iou)) & (bound > _ABS_SLACK)
                if not bool(alive.any()):
                    break
                need = alive & ~seen_all.gather(1, group_idx[:, None])[:, 0]
                for g in torch.unique(group_idx[need]).tolist():
                    visit(groups[g], torch.nonzero(need & (group_idx == g)).squeeze(1), update_anchors=False)

        best = best.clamp(min=0)  # anchors no gt reached: IoU 0
        inds = torch.where(best >= self.pos_iou_thr, arg, torch.full_like(arg, IGNORED))
        inds = torch.where(best < self.neg_iou_thr, torch.full_like(arg, BACKGROUND), inds)
        max_iou = best
        if lq:
            row, anc, val = (torch.cat(t) for t in zip(*lq))
            top = gt_best[row]
            keep = (val == top) & (top >= self.min_pos_iou) & (top > 0)
            row, anc, val = row[keep], anc[keep], val[keep]
            lq_inds, lq_best = resolve_pairs(num_images, num_anchors, gts.image[row], anc, gts.local[row], val)
            matched = lq_inds >= 0
            if self.low_quality_gt == "argmax" and bool(matched.any()):
                # torchvision's Matcher: the anchor's own best gt of its image (ties: lower index)
                mb, ma = torch.nonzero(matched, as_tuple=True)
                iou = iou_matrix(anchors[ma], gts.boxes)  # [M, N]: few anchors, all gts of the batch
                iou = torch.where(gts.image[None, :] == mb[:, None], iou, iou.new_full((), -1.0))
                top, rows = iou.max(dim=1)
                lq_inds[mb, ma] = gts.local[rows]
                lq_best[mb, ma] = top
            inds = torch.where(matched, lq_inds, inds)
            max_iou = torch.where(matched, lq_best, max_iou)
        return AssignOutput(inds, max_iou)
