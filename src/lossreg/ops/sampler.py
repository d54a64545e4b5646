"""Random positive/negative minibatch sampling of anchors or RoIs (Faster R-CNN, Ren et al., NeurIPS 2015).

The sampling is the one of torchvision's ``BalancedPositiveNegativeSampler`` and
mmdetection's ``RandomSampler``: at most ``num * pos_fraction`` positives drawn
at random, the rest of the ``num`` filled with random negatives; ignored
anchors are never drawn. Randomness comes from ``torch.randperm`` on the input's
device, so ``torch.manual_seed`` makes it reproducible (or pass a generator).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RandomSampler"]


class RandomSampler:
    """Draw up to ``num`` samples per image, at most ``num * pos_fraction`` of them positive.

    Paper: Ren et al., Faster R-CNN: Towards Real-Time Object Detection with Region
    Proposal Networks, NeurIPS 2015 (RPN: 256 anchors, up to 1:1; RoI head: 512 RoIs,
    25% positive, as torchvision and mmdetection use).

    Args:
        num: samples per image [512].
        pos_fraction: largest fraction of positives [0.25]; when an image has fewer
            positives, negatives fill the rest (torchvision's rule).

    ``sample(gt_inds)`` takes the assigner's ``gt_inds [A]`` (``k >= 0`` positive,
    ``-1`` background, ``-2`` ignored) and returns ``(pos_inds [P], neg_inds [N])``,
    long index tensors with ``P <= int(num * pos_fraction)`` and ``P + N <= num``.
    """

    def __init__(self, num: int = 512, pos_fraction: float = 0.25) -> None:
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"RandomSampler: num must be an int >= 1, got {num!r}")
        if not (isinstance(pos_fraction, (int, float)) and 0.0 <= pos_fraction <= 1.0):
            raise ValueError(f"RandomSampler: pos_fraction must be in [0, 1], got {pos_fraction!r}")
        self.num = num
        self.pos_fraction = float(pos_fraction)

    def __repr__(self) -> str:
        return f"RandomSampler(num={self.num}, pos_fraction={self.pos_fraction})"

    def sample(self, gt_inds: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Indices of the sampled positives and negatives of one image (each in random order)."""
        if not isinstance(gt_inds, Tensor) or gt_inds.dim() != 1 or gt_inds.is_floating_point():
            shape = tuple(gt_inds.shape) if isinstance(gt_inds, Tensor) else type(gt_inds).__name__
            raise ValueError(f"RandomSampler: gt_inds must be an integer [A] tensor, got {shape}")
        pos = torch.nonzero(gt_inds >= 0, as_tuple=False).squeeze(1)
        neg = torch.nonzero(gt_inds == -1, as_tuple=False).squeeze(1)
        num_pos = min(int(self.num * self.pos_fraction), pos.numel())
        num_neg = min(self.num - num_pos, neg.numel())
        return _choose(pos, num_pos, generator), _choose(neg, num_neg, generator)


def _choose(inds: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    # shuffled even when everything is kept, so the order never encodes the anchor position
    perm = torch.randperm(inds.numel(), device=inds.device, generator=generator)[:k]
    return inds[perm]
