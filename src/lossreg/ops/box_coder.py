"""Encoding of boxes as ``(dx, dy, dw, dh)`` offsets from anchors, for delta-space losses.

The parameterisation is R-CNN's (Girshick et al., CVPR 2014), the one
``torchvision.models.detection._utils.BoxCoder`` and mmdetection's
``DeltaXYWHBBoxCoder`` use. ``means``/``stds`` normalise the deltas
(mmdetection's convention); ``stds = 1 / weights`` reproduces torchvision's
``weights`` (e.g. ``stds=(0.1, 0.1, 0.2, 0.2)`` is ``weights=(10, 10, 5, 5)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["DeltaBoxCoder", "DEFAULT_WH_CLIP"]

# torchvision's bbox_xform_clip: an object at most 1000/16 times larger than its anchor.
DEFAULT_WH_CLIP = math.log(1000.0 / 16)


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    # Half precision cannot hold pixel coordinates and exp() of the deltas accurately.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class DeltaBoxCoder:
    """Encode xyxy boxes as normalised ``(dx, dy, dw, dh)`` w.r.t. anchors, and decode them back.

    ``dx = ((x_b - x_a) / w_a - mean_0) / std_0``, ``dw = (log(w_b / w_a) - mean_2) / std_2``
    (same for y/h), with ``x, y`` box centres and ``w, h`` widths/heights.

    Args:
        means: per-coordinate mean subtracted from the raw deltas [(0, 0, 0, 0)].
        stds: per-coordinate std dividing the raw deltas [(1, 1, 1, 1)].
        wh_clip: upper clamp of the decoded raw ``dw, dh`` before ``exp`` [log(1000 / 16), as torchvision].

    Shapes: ``anchors`` and ``boxes``/``deltas`` are ``[..., 4]`` and broadcast
    against each other; results have the broadcast shape. Half-precision inputs
    are computed and returned in fp32.
    """

    def __init__(
        self,
        means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        wh_clip: float = DEFAULT_WH_CLIP,
    ) -> None:
        if len(means) != 4 or len(stds) != 4:
            raise ValueError(f"DeltaBoxCoder: means and stds need 4 values each, got {means!r} and {stds!r}")
        if any(s <= 0 for s in stds):
            raise ValueError(f"DeltaBoxCoder: stds must be positive, got {stds!r}")
        self.means = tuple(float(m) for m in means)
        self.stds = tuple(float(s) for s in stds)
        self.wh_clip = float(wh_clip)

    def __repr__(self) -> str:
        return f"DeltaBoxCoder(means={self.means}, stds={self.stds}, wh_clip={self.wh_clip:.4f})"

    def _stats(self, ref: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        means = torch.tensor(self.means, dtype=dtype, device=ref.device)
        stds = torch.tensor(self.stds, dtype=dtype, device=ref.device)
        return means, stds

    def encode(self, anchors: Tensor, boxes: Tensor) -> Tensor:
        """Deltas ``[..., 4]`` that take ``anchors [..., 4]`` to ``boxes [..., 4]`` (both xyxy).

        Widths/heights are clamped to ``>= 1e-6`` px, so a degenerate target box
        gives a large but finite ``dw``/``dh`` instead of ``-inf``.
        """
        dtype = _compute_dtype(anchors, boxes)
        anchors, boxes = anchors.to(dtype), boxes.to(dtype)
        a_wh = anchors[..., 2:] - anchors[..., :2]
        a_ctr = anchors[..., :2] + 0.5 * a_wh
        b_wh = boxes[..., 2:] - boxes[..., :2]
        b_ctr = boxes[..., :2] + 0.5 * b_wh
        a_wh, b_wh = a_wh.clamp(min=1e-6), b_wh.clamp(min=1e-6)
        deltas = torch.cat([(b_ctr - a_ctr) / a_wh, torch.log(b_wh / a_wh)], dim=-1)
        means, stds = self._stats(deltas, dtype)
        return (deltas - means) / stds

    def decode(self, anchors: Tensor, deltas: Tensor) -> Tensor:
        """Boxes ``[..., 4]`` (xyxy) from ``deltas [..., 4]`` applied to ``anchors [..., 4]``; differentiable in ``deltas``."""
        dtype = _compute_dtype(anchors, deltas)
        anchors, deltas = anchors.to(dtype), deltas.to(dtype)
        means, stds = self._stats(deltas, dtype)
        deltas = deltas * stds + means
        a_wh = anchors[..., 2:] - anchors[..., :2]
        a_ctr = anchors[..., :2] + 0.5 * a_wh
        ctr = a_ctr + deltas[..., :2] * a_wh
        # Like torchvision, clamp only from above: exp() of a large dw overflows, a very negative one is just tiny.
        wh = a_wh * torch.exp(deltas[..., 2:].clamp(max=self.wh_clip))
        return torch.cat([ctr - 0.5 * wh, ctr + 0.5 * wh], dim=-1)
