"""EATSS: expanded adaptive training sample selection (HCRAL, section 3.2 and Algorithm 1)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .._registry import register_assigner
from ..ops.geometry import center_inside, paired_box_iou
from ._base import AssignInputs, AssignOutput, check_param, resolve_pairs, row_chunks
from .atss import INSIDE_MARGIN, ATSSAssigner, location_centers

__all__ = ["EATSSAssigner"]

RANK_BY = ("iou_or_score", "iou")


def _top_per_row(row: Tensor, anchor: Tensor, score: Tensor, num_rows: int, k: int) -> Tensor:
    """Positions of the ``k`` best pairs of every row: score descending, ties to the lower anchor.

    ``row``/``anchor`` must arrive sorted by ``(row, anchor)``, so one stable sort on
    ``(row, -score)`` gives the order ``(row, -score, anchor)``. Scores are >= 0, whose IEEE bit
    patterns sort like the values, so ``(row, -score)`` packs into one int64 key (float32);
    float64 scores take two stable sorts instead.
    """
    if score.dtype == torch.float32:
        desc = torch.iinfo(torch.int32).max - score.view(torch.int32).long()
        order = torch.sort((row << 32) | desc, stable=True).indices
    else:
        order = torch.sort(score, descending=True, stable=True).indices
        order = order[torch.sort(row[order], stable=True).indices]
    row_sorted = row[order]
    counts = torch.bincount(row_sorted, minlength=num_rows)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(order.numel(), device=row.device) - starts[row_sorted]
    return order[rank < k]


@register_assigner("eatss")
class EATSSAssigner(ATSSAssigner):
    """EATSS: ATSS plus up to `extra` high-IoU or high-score anchors per gt near its center.

    "Hybrid Classification-Regression Adaptive Loss for Dense Object Detection" (HCRAL, anonymous
    ICLR submission), section 3.2 and Algorithm 1 (Expanded Adaptive Training Sample Selection);
    this is lossreg's reading of it, step by step below.

    Steps:
        1. Run ATSS (see ``atss``); its positives are never changed.
        2. For each gt ``g`` with a non-empty ATSS positive set ``P_g`` (anchors assigned to
           ``g`` after ATSS resolved conflicts): ``D_g`` = largest distance from ``g``'s center
           to the center of an anchor in ``P_g``.
        3. Candidates: anchors of any level not positive for any gt, whose center is inside
           ``g`` (more than 0.01 from every edge, as in ATSS) and within ``D_g`` of its center.
        4. Score ``max(IoU(box_a, g), s_a) * (1 - d_a / D_g)``: ``box_a`` is ``pred_boxes[a]`` when
           given, else the anchor; ``s_a`` is ``pred_scores[a, label_g]`` when given and
           ``rank_by="iou_or_score"``, else 0.
        5. Each gt wants its ``extra`` best candidates with score > 0 (ties: lower anchor index);
           an anchor wanted by several gts goes to the one that scores it highest (ties: lower
           gt index); a gt that loses an anchor does not take its next candidate instead, so
           it gains *at most* ``extra``.
    A gt with ``D_g = 0`` (its only positives sit exactly on its center) gains nothing.
    Anchors in ignore regions may be added (ignore regions only affect non-positives). With
    ``anchors_per_location = n > 1`` distances and the inside test use the location's center, as
    in ``atss``, and every anchor of a qualifying location is a candidate.

    Parameters:
        topk (int, default 9): as in ``atss``, closest locations per level.
        extra (int, default 3): the paper's ``l``, most anchors added per gt.
        anchors_per_location (int, default 1): as in ``atss``.
        rank_by (str, default "iou_or_score"): the candidates' quality in step 4.
            ``"iou_or_score"``: ``max(IoU, s_a)``, so a candidate with a high predicted score
            but a low IoU can be added, as the introduction motivates ("samples with just high
            IoU or just high classification scores", C and D of figure 1); the dense heads
            always pass ``pred_scores``, so this is what training uses. ``"iou"``: IoU only,
            ignoring ``pred_scores``, as section 3.2 words the ranking function ("the distance
            between the center of the box to the center of the ground truth and IoU"). The
            paper does not settle it; the option lets an ablation choose.

    Shapes: ``anchors [A, 4]``, ``gt_boxes [G, 4]``, ``gt_labels [G]``, optional ``pred_boxes [A, 4]``
    and ``pred_scores [A, C]`` (probabilities) -> ``AssignResult`` with ``[A]`` tensors and
    ``info``: ``"threshold"`` ``[G]`` (ATSS), ``"distance_bound"`` ``[G]`` (``D_g``, 0 without
    positives), ``"added"`` bool ``[A]``. ``max_iou`` = IoU of the *anchor* with its gt.
    """

    paper = (
        "Hybrid Classification-Regression Adaptive Loss for Dense Object Detection (HCRAL), ICLR submission; "
        "section 3.2, Algorithm 1 (EATSS)"
    )

    def __init__(
        self,
        topk: int = 9,
        extra: int = 3,
        anchors_per_location: int = 1,
        rank_by: Literal["iou_or_score", "iou"] = "iou_or_score",
    ) -> None:
        super().__init__(topk=topk, anchors_per_location=anchors_per_location)
        check_param(type(self).__name__, "extra", isinstance(extra, int) and extra >= 0, "an int >= 0", extra)
        check_param(type(self).__name__, "rank_by", rank_by in RANK_BY, f"one of {RANK_BY}", rank_by)
        self.extra = extra
        self.rank_by = rank_by

    def _assign(self, inputs: AssignInputs) -> AssignOutput:
        pairs, inds, iou = self._atss(inputs)
        gts = inputs.gts
        anchors = inputs.anchors
        device = anchors.device
        n = self.anchors_per_location
        lcx, lcy = location_centers(inputs, n)  # [L]; with one anchor per location, the anchor centers
        gcx = (gts.boxes[:, 0] + gts.boxes[:, 2]) * 0.5
        gcy = (gts.boxes[:, 1] + gts.boxes[:, 3]) * 0.5
        offsets = torch.tensor(gts.offsets[:-1], dtype=torch.long, device=device)

        pos = inds >= 0
        pb, pa = torch.nonzero(pos, as_tuple=True)
        prow = offsets[pb] + inds[pb, pa]
        dx, dy = gcx[prow] - lcx[pa // n], gcy[prow] - lcy[pa // n]
        bound2 = anchors.new_zeros(gts.num).scatter_reduce_(0, prow, dx * dx + dy * dy, "amax", include_self=True)
        added = torch.zeros_like(pos)

        active = torch.nonzero(bound2 > 0, as_tuple=False).squeeze(1)
        if self.extra > 0 and active.numel():
            rows_l, anc_l, d2_l = [], [], []
            within = torch.arange(n, device=device)
            for c0, c1 in row_chunks(active.numel(), lcx.numel(), inputs.chunk_elements):
                rows = active[c0:c1]
                dx = gcx[rows, None] - lcx[None]
                dy = gcy[rows, None] - lcy[None]
                d2 = dx.mul_(dx).add_(dy.mul_(dy))
                near = d2 <= bound2[rows, None]
                near &= center_inside(lcx, lcy, gts.boxes[rows], INSIDE_MARGIN)
                r, loc = torch.nonzero(near, as_tuple=True)
                # Every anchor of a nearby location is a candidate unless ATSS made it positive;
                # the pairs stay sorted by (row, anchor), hence by image, which _top_per_row and
                # gather_pred rely on.
                a = (loc[:, None] * n + within).reshape(-1)
                r, dd = r.repeat_interleave(n), d2[r, loc].repeat_interleave(n)
                free = ~pos[gts.image[rows[r]], a]
                rows_l.append(rows[r[free]])
                anc_l.append(a[free])
                d2_l.append(dd[free])
            row, anc, d2 = torch.cat(rows_l), torch.cat(anc_l), torch.cat(d2_l)
            img = gts.image[row]
            box = inputs.gather_pred(inputs.pred_boxes, img, anc) if inputs.pred_boxes is not None else anchors[anc]
            # A degenerate predicted box gives 0/0; it simply has no overlap.
            cand_iou = torch.nan_to_num(paired_box_iou(box, gts.boxes[row]), nan=0.0).clamp(min=0)
            if inputs.pred_scores is not None and self.rank_by == "iou_or_score":
                score_a = inputs.gather_pred(inputs.pred_scores, img, anc, gts.labels[row])
                cand_iou = torch.maximum(cand_iou, score_a)
            score = cand_iou * (1 - d2.sqrt() / bound2[row].sqrt())
            keep = score > 0
            row, anc, score = row[keep], anc[keep], score[keep]
            sel = _top_per_row(row, anc, score, gts.num, self.extra)
            extra_inds, _ = resolve_pairs(
                inputs.num_images, inputs.num_anchors, gts.image[row[sel]], anc[sel], gts.local[row[sel]], score[sel]
            )
            added = extra_inds >= 0
            inds = torch.where(added, extra_inds, inds)
            ab, aa = torch.nonzero(added, as_tuple=True)
            iou = iou.clone()
            iou[ab, aa] = paired_box_iou(anchors[aa], gts.boxes[offsets[ab] + extra_inds[ab, aa]])
        return AssignOutput(
            inds,
            iou,
            per_gt={"threshold": pairs.threshold, "distance_bound": bound2.sqrt()},
            per_anchor={"added": added},
        )
