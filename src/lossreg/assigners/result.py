"""What an assigner returns (:class:`AssignResult`) and its introspection summary.

``gt_inds`` follows docs/api.md, "Assigners": ``-1`` background, ``-2`` ignored,
``k >= 0`` the index of the assigned ground truth. :func:`summarize_assignment`
condenses one result into the numbers ``explain_assignment`` reports (positives
per ground truth and per pyramid level, the IoU of the positives, ignored count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["AssignResult", "AssignSummary", "summarize_assignment", "BACKGROUND", "IGNORED"]

BACKGROUND = -1
IGNORED = -2


@dataclass(eq=False)
class AssignResult:
    """Assignment of the ``A`` anchors (or points) of one image to its ``G`` ground truths.

    Attributes:
        gt_inds: long ``[A]``: ``-1`` background, ``-2`` ignored, ``k >= 0`` index of the assigned gt.
        labels: long ``[A]``: class of the assigned gt at positives, ``-1`` elsewhere.
        max_iou: float ``[A]``: IoU of the anchor box with its assigned gt at positives, 0 elsewhere.
        num_gts: ``G``.
        level_sizes: anchors per pyramid level (sum ``A``), as passed to ``assign``.
        info: assigner-specific diagnostics, e.g. ``"threshold"`` ``[G]`` (ATSS IoU threshold per gt),
            ``"distance_bound"`` ``[G]`` and ``"added"`` bool ``[A]`` (EATSS).
    """

    gt_inds: Tensor
    labels: Tensor
    max_iou: Tensor
    num_gts: int
    level_sizes: tuple[int, ...] = ()
    info: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_anchors(self) -> int:
        return int(self.gt_inds.numel())

    @property
    def pos_mask(self) -> Tensor:
        """bool ``[A]``: anchors assigned to a ground truth."""
        return self.gt_inds >= 0

    @property
    def neg_mask(self) -> Tensor:
        """bool ``[A]``: background anchors."""
        return self.gt_inds == BACKGROUND

    @property
    def ignore_mask(self) -> Tensor:
        """bool ``[A]``: ignored anchors (no loss at all)."""
        return self.gt_inds == IGNORED

    @property
    def pos_inds(self) -> Tensor:
        """long ``[P]``: indices of the positive anchors, ascending."""
        return torch.nonzero(self.pos_mask, as_tuple=False).squeeze(1)

    @property
    def num_pos(self) -> int:
        return int(self.pos_mask.sum())

    def level_index(self) -> Tensor:
        """long ``[A]``: pyramid level of every anchor (all 0 when ``level_sizes`` is empty)."""
        sizes = self.level_sizes or (self.num_anchors,)
        levels = torch.arange(len(sizes), device=self.gt_inds.device)
        return torch.repeat_interleave(levels, torch.tensor(sizes, device=self.gt_inds.device))

    def loss_labels(self, num_classes: int) -> Tensor:
        """long ``[A]`` in the convention of docs/api.md, "Classification losses".

        ``0..C-1`` positive class, ``C`` background, ``-1`` ignored.
        """
        out = torch.full_like(self.gt_inds, num_classes)
        out = torch.where(self.pos_mask, self.labels, out)
        return torch.where(self.ignore_mask, torch.full_like(out, -1), out)

    def to(self, device: torch.device | str) -> AssignResult:
        return AssignResult(
            self.gt_inds.to(device),
            self.labels.to(device),
            self.max_iou.to(device),
            self.num_gts,
            self.level_sizes,
            {k: v.to(device) for k, v in self.info.items()},
        )

    def equal(self, other: AssignResult) -> bool:
        """Exact equality of every field (tensors compared with ``torch.equal``)."""
        return (
            self.num_gts == other.num_gts
            and tuple(self.level_sizes) == tuple(other.level_sizes)
            and torch.equal(self.gt_inds, other.gt_inds)
            and torch.equal(self.labels, other.labels)
            and torch.equal(self.max_iou, other.max_iou)
            and self.info.keys() == other.info.keys()
            and all(torch.equal(v, other.info[k]) for k, v in self.info.items())
        )

    def summary(self) -> AssignSummary:
        return summarize_assignment(self)


@dataclass
class AssignSummary:
    """Numbers that describe one assignment (see :func:`summarize_assignment`).

    Per-gt lists have ``G`` entries; per-level lists one entry per pyramid level.
    ``mean_iou*`` is ``nan`` where there is no positive to average.
    """

    num_anchors: int
    num_gts: int
    num_pos: int
    num_neg: int
    num_ignored: int
    pos_per_gt: list[int]
    pos_per_level: list[int]
    pos_per_gt_level: list[list[int]]
    mean_iou: float
    mean_iou_per_gt: list[float]
    unmatched_gts: list[int]
    added_per_gt: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def format(self) -> str:
        """A short text table: one row per ground truth, one column per level."""
        levels = len(self.pos_per_level)
        head = (
            f"{self.num_anchors} anchors, {self.num_gts} gts: {self.num_pos} positive, "
            f"{self.num_neg} background, {self.num_ignored} ignored; mean IoU of positives {self.mean_iou:.3f}"
        )
        cols = " ".join(f"P{lvl:<3d}" for lvl in range(levels))
        extra = "  added" if self.added_per_gt is not None else ""
        lines = [head, f"  gt   pos  {cols}  meanIoU{extra}"]
        for g in range(self.num_gts):
            per_level = " ".join(f"{n:<4d}" for n in self.pos_per_gt_level[g])
            row = f"  {g:<4d} {self.pos_per_gt[g]:<4d} {per_level}  {self.mean_iou_per_gt[g]:.3f}"
            if self.added_per_gt is not None:
                row += f"  {self.added_per_gt[g]}"
            lines.append(row)
        if self.unmatched_gts:
            lines.append(f"  gts without positives: {self.unmatched_gts}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def summarize_assignment(result: AssignResult) -> AssignSummary:
    """Positives per gt and per level, mean IoU of the positives, ignored count of one result."""
    gt_inds = result.gt_inds
    num_gts = int(result.num_gts)
    num_levels = max(len(result.level_sizes), 1)
    pos = gt_inds >= 0
    level = result.level_index()[pos]
    g = gt_inds[pos]
    iou = result.max_iou[pos].double()
    per_gt_level = torch.bincount(g * num_levels + level, minlength=num_gts * num_levels)
    per_gt_level = per_gt_level[: num_gts * num_levels].view(num_gts, num_levels)
    per_gt = per_gt_level.sum(1)
    iou_sum = torch.zeros(num_gts, dtype=torch.float64, device=gt_inds.device).index_add_(0, g, iou)
    mean_per_gt = [float(s) / int(n) if int(n) else math.nan for s, n in zip(iou_sum.tolist(), per_gt.tolist())]
    added = result.info.get("added")
    added_per_gt = None
    if added is not None:
        added_per_gt = torch.bincount(gt_inds[added & pos], minlength=num_gts)[:num_gts].tolist()
    return AssignSummary(
        num_anchors=result.num_anchors,
        num_gts=num_gts,
        num_pos=int(pos.sum()),
        num_neg=int((gt_inds == BACKGROUND).sum()),
        num_ignored=int((gt_inds == IGNORED).sum()),
        pos_per_gt=per_gt.tolist(),
        pos_per_level=per_gt_level.sum(0).tolist(),
        pos_per_gt_level=per_gt_level.tolist(),
        mean_iou=float(iou.mean()) if iou.numel() else math.nan,
        mean_iou_per_gt=mean_per_gt,
        unmatched_gts=[i for i, n in enumerate(per_gt.tolist()) if n == 0],
        added_per_gt=added_per_gt,
    )
