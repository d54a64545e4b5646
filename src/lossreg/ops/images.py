"""Batching images of different sizes."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["pad_images"]


def pad_images(images: Tensor | Sequence[Tensor], divisor: int = 32) -> tuple[Tensor, list[tuple[int, int]]]:
    """Batch ``[3, H_i, W_i]`` images (or a ``[B, 3, H, W]`` tensor) zero-padded to a multiple of ``divisor``.

    Returns the ``[B, 3, H, W]`` batch and each image's own ``(H_i, W_i)``.
    """
    if isinstance(images, Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a float [B, 3, H, W] tensor or a list of [3, H, W], got {tuple(images.shape)}")
        items = list(images)
    else:
        items = list(images)
        for i, im in enumerate(items):
            if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3:
                raise ValueError(f"images[{i}] must be a float [3, H, W] tensor, got {getattr(im, 'shape', type(im))}")
    if not items:
        raise ValueError("images is empty")
    if not items[0].is_floating_point():
        raise ValueError(f"images must be float (0-1 range), got {items[0].dtype}; divide uint8 images by 255")
    sizes = [(int(im.shape[1]), int(im.shape[2])) for im in items]
    h = -(-max(s[0] for s in sizes) // divisor) * divisor
    w = -(-max(s[1] for s in sizes) // divisor) * divisor
    if isinstance(images, Tensor) and images.shape[-2:] == (h, w):
        return images, sizes
    batch = items[0].new_zeros((len(items), 3, h, w))
    for i, im in enumerate(items):
        batch[i, :, : im.shape[1], : im.shape[2]] = im
    return batch, sizes
