"""Deterministic top-k: the selected set does not depend on ties or layout."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["stable_topk"]


def stable_topk(x: Tensor, k: int, largest: bool) -> Tensor:
    """Indices ``[R, k]`` of the ``k`` largest (or smallest) entries of each row of ``x [R, N]``.

    Among equal values the lower index wins, so the selected *set* does not depend
    on the layout ``torch.topk`` happens to see. The order inside a row is unspecified.
    """
    rows, n = x.shape
    if k <= 0 or rows == 0:
        return torch.zeros((rows, 0), dtype=torch.long, device=x.device)
    if k >= n:
        return torch.arange(n, device=x.device).expand(rows, n).clone()
    vals, idx = torch.topk(x, k, dim=1, largest=largest, sorted=False)
    # The set is ambiguous only when more than k entries reach the k-th value (a tie at the
    # boundary); those rows, rare outside symmetric scenes, are re-ranked by a stable sort.
    if largest:
        ambiguous = (x >= vals.min(dim=1, keepdim=True).values).sum(1) > k
    else:
        ambiguous = (x <= vals.max(dim=1, keepdim=True).values).sum(1) > k
    if bool(ambiguous.any()):
        amb = torch.nonzero(ambiguous, as_tuple=False).squeeze(1)
        idx[amb] = torch.sort(x[amb], dim=1, descending=largest, stable=True).indices[:, :k]
    return idx
