"""Gradient-harmonizing (GHM-C) sample weights, shared by ``ghm_c`` and ``hcra_c``.

HCRAL's ``beta`` (eq. 2) is exactly the GHM-C weight, so both losses derive from
:class:`GHMWeightedLoss`, which owns the momentum accumulator (a registered
buffer, hence saved in ``state_dict``) and the built-in ``sum / tot`` normalisation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lossreg.losses._base import ClsLoss


class GHMWeightedLoss(ClsLoss):
    """Base class: ``elementwise`` multiplies its BCE by :meth:`ghm_weights`; ``avg_factor`` is ignored.

    ``acc_sum [bins]`` holds the momentum-averaged number of elements per gradient-norm bin.
    """

    acc_sum: Tensor
    uses_avg_factor = False

    def __init__(self, bins: int, momentum: float, reduction: str, loss_weight: float, owner: str) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"{owner}: parameter 'bins' must be a positive int, got {bins!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"{owner}: parameter 'momentum' must be in [0, 1), got {momentum!r}")
        self.bins = bins
        self.momentum = float(momentum)
        self.register_buffer("acc_sum", torch.zeros(bins))

    @torch.no_grad()
    def ghm_weights(self, probs: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
        """GHM-C weight per element (detached).

        Args:
            probs: ``[M, C]`` sigmoid probabilities.
            targets: ``[M, C]`` targets in [0, 1].
            valid: ``[M]`` bool, rows that count (the others get weight 0 and are not binned).

        Returns ``[M, C]``: ``tot / density_k / n_nonempty`` for an element in bin ``k``,
        where ``density_k`` is the bin count (``momentum = 0``) or its running average.
        The running average is updated only in training mode; in eval mode it is used
        as is (the batch count stands in for a bin it has never seen).
        """
        bins = self.bins
        g = (probs - targets).abs()
        # Bin k holds k/bins <= g < (k+1)/bins and g = 1 falls in the last bin, as the reference code's
        # widened last edge does; truncation is ~3x faster than torch.bucketize on 10^7 elements.
        idx = (g * bins).long().clamp_(max=bins - 1)
        idx.masked_fill_(~valid[:, None], bins)  # a spare bin for ignored rows: never counted, weight 0
        # NaN/inf logits (a diverged step) are not binned either: their loss stays NaN for the trainer's
        # divergence check to report, and the running density never records them
        idx.masked_fill_(~torch.isfinite(g), bins)
        num = torch.bincount(idx.view(-1), minlength=bins + 1)[:bins].to(probs.dtype)
        nonempty = num > 0
        tot = valid.sum().to(probs.dtype) * probs.shape[1]
        if self.momentum > 0:
            acc = self.acc_sum.to(probs.dtype)
            if self.training:
                acc = torch.where(nonempty, self.momentum * acc + (1.0 - self.momentum) * num, acc)
                self.acc_sum.copy_(acc)
            density = torch.where(acc > 0, acc, num)
        else:
            density = num
        bin_weight = torch.where(nonempty, tot / torch.where(nonempty, density, 1.0), 0.0)
        bin_weight = bin_weight / nonempty.sum().clamp_min(1)
        table = torch.cat([bin_weight, bin_weight.new_zeros(1)])
        return torch.take(table, idx)

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        quality: Tensor | None = None,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        # The GHM normalisation (sum / tot, tot = valid elements) is built in, as in the GHM paper's code:
        # "mean" always divides by tot, which is ClsLoss's count, so avg_factor is dropped.
        return super().forward(logits, labels, quality, weight, None)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, momentum={self.momentum}, " + super().extra_repr()
