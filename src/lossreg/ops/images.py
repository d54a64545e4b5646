"""Batching images of different sizes, and the checks every detector input goes through."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["IMAGE_RANGE", "pad_images"]

#: Pixel values a model accepts: RGB in 0-1 with this much slack for augmentation overshoot.
#: Values outside are 0-255 images not divided by 255, or images already normalised.
IMAGE_RANGE = (-0.5, 1.5)


def _tracing() -> bool:
    """torch.export / torch.compile / jit tracing: no data-dependent checks on the Python side."""
    return bool(torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing())


def _check_values(items: Sequence[Tensor]) -> None:
    lo, hi = IMAGE_RANGE
    for i, im in enumerate(items):
        if im.numel() == 0:
            continue
        finite = torch.isfinite(im)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(
                f"images[{i}] has {bad} NaN or infinite pixel value(s); the model takes finite RGB values in 0-1 "
                "(check the image decoding or the augmentation that produced them)"
            )
        vmin, vmax = float(im.min()), float(im.max())
        if vmin < lo or vmax > hi:
            raise ValueError(
                f"images[{i}] has values in [{vmin:.4g}, {vmax:.4g}]; the model takes RGB in 0-1: divide 0-255 "
                "images by 255, and do not normalise them (the model normalises with its backbone's mean and std)"
            )


def pad_images(
    images: Tensor | Sequence[Tensor], divisor: int = 32, min_side: int = 0
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Batch ``[3, H_i, W_i]`` images (or a ``[B, 3, H, W]`` tensor) zero-padded to a multiple of ``divisor``.

    Returns the ``[B, 3, H, W]`` batch and each image's own ``(H_i, W_i)``. ``min_side`` pads
    both sides to at least that many pixels (training pads to twice the backbone's coarsest
    stride, so that BatchNorm never sees a 1 x 1 map of a one-image batch).

    Input rules (``ValueError`` naming the image otherwise): every image is a floating-point
    ``[3, H, W]`` tensor (uint8 and other integer images are refused, not rescaled: divide
    them by 255), with ``H, W >= 1``, finite values in 0-1 (:data:`IMAGE_RANGE` allows a
    little overshoot). Images of different float dtypes are batched as float32; the
    detectors cast the batch to their own dtype. The value checks are skipped while tracing
    (``torch.export``), where they would be data-dependent.
    """
    if isinstance(images, Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a float [B, 3, H, W] tensor or a list of [3, H, W], got {tuple(images.shape)}")
        items = list(images)
    elif isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise ValueError(
            f"images must be a float [B, 3, H, W] tensor or a list of [3, H, W] tensors, got {type(images).__name__}"
        )
    else:
        items = list(images)
        for i, im in enumerate(items):
            if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3:
                what = tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__
                raise ValueError(f"images[{i}] must be a float [3, H, W] RGB tensor, got {what}")
    if not items:
        raise ValueError("images is empty: give at least one [3, H, W] image")
    for i, im in enumerate(items):
        if not im.is_floating_point():
            raise ValueError(
                f"images[{i}] is {im.dtype}; the model takes float RGB in 0-1: convert with image.float() / 255 "
                "(every image of a batch is checked)"
            )
        if im.shape[-2] < 1 or im.shape[-1] < 1:
            raise ValueError(f"images[{i}] is {im.shape[-1]} x {im.shape[-2]} pixels; an image needs at least 1 x 1")
    if not _tracing():
        _check_values(items)
    sizes = [(int(im.shape[1]), int(im.shape[2])) for im in items]
    h = -(-max(max(s[0] for s in sizes), min_side) // divisor) * divisor
    w = -(-max(max(s[1] for s in sizes), min_side) // divisor) * divisor
    if isinstance(images, Tensor) and images.shape[-2:] == (h, w):
        return images, sizes
    dtypes = {im.dtype for im in items}
    dtype = items[0].dtype if len(dtypes) == 1 else torch.float32
    batch = items[0].new_zeros((len(items), 3, h, w), dtype=dtype)
    for i, im in enumerate(items):
        batch[i, :, : im.shape[1], : im.shape[2]] = im
    return batch, sizes
