"""GroupNorm that also normalises groups holding a single value."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["GroupNorm"]


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` without torch's "more than 1 value per channel" check.

    ``F.group_norm`` refuses an input whose groups hold one value each (``N * C/G * H * W ==
    1``): a head with one channel per group (32 channels, 32 groups) on a 1 x 1 pyramid level
    of a one-image batch, which a small image gives at stride 64 or 128. The normalised value
    of a single element is 0 (its mean is itself, its variance 0), so the output is the bias
    (0 without affine parameters), returned exactly (the kernel's rounding, divided by
    ``sqrt(eps)``, would add noise of ~3e-5 x the input). Everything else, the state dict
    included, is ``nn.GroupNorm``'s. Input ``[N, C, *]``.
    """

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() < 2:
            raise ValueError(f"GroupNorm expects an [N, C, ...] input, got shape {tuple(input.shape)}")
        if input.shape[1] // self.num_groups * input[0, 0].numel() > 1:
            return super().forward(input)
        out = input * 0  # keeps the input in the graph (zero gradient), and its dtype and shape
        if self.bias is not None:
            out = out + self.bias.view(1, -1, *([1] * (input.dim() - 2))).to(out.dtype)
        return out
