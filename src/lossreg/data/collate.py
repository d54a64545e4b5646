"""Batch collation: pad images to a common size, keep every image's own size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..ops.images import pad_images

__all__ = ["collate"]


def collate(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]], divisor: int = 32
) -> tuple[torch.Tensor, list[dict[str, Any]], list[tuple[int, int]]]:
    """``DataLoader`` ``collate_fn`` for :class:`~lossreg.data.dataset.DetectionDataset` items.

    Returns ``(images, targets, image_sizes)``: ``images`` ``float [B, 3, H, W]`` with each
    ``[3, H_i, W_i]`` image at the top-left, zero-padded to ``H, W`` = the largest size
    rounded up to a multiple of ``divisor`` (the detectors' own
    :func:`~lossreg.ops.images.pad_images`); ``targets`` the list of target dicts
    unchanged (boxes need no shift); ``image_sizes`` each image's ``(H_i, W_i)``.
    Raises ``ValueError`` for an empty batch or images that are not float ``[3, H, W]``.
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    padded, sizes = pad_images(images, divisor=divisor)
    return padded, targets, sizes
