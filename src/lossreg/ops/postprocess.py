"""Batched post-processing: per-level top-k, class-wise NMS over a whole batch, fixed-size padded outputs.

Every detection head post-processes a batch at once with these functions: candidates of
all images go through **one** NMS whose groups are ``image * num_groups + class`` (boxes of
different images or classes never suppress each other), and the kept detections are
scattered into fixed-shape padded tensors ``[B, K, ...]`` with a count per image. No
step depends on a Python-side value of the data, so the same code runs eagerly and inside
``torch.export`` / ONNX graphs (:mod:`lossreg.export`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms, nms

__all__ = [
    "Padded",
    "batched_group_nms",
    "clip_to_sizes",
    "image_sizes_tensor",
    "level_topk",
    "pad_per_image",
    "rank_in_image",
    "unpad",
]

#: Padded detections: ``boxes [B, K, 4]``, ``scores [B, K]``, ``labels [B, K]`` (``-1`` in
#: empty slots) and ``num_detections [B]``.
Padded = tuple[Tensor, Tensor, Tensor, Tensor]


def _exporting() -> bool:
    return bool(torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.jit.is_scripting())


def level_topk(scores: Tensor, level_sizes: Sequence[int], k: int, per_row: int = 1) -> tuple[Tensor, Tensor]:
    """The best ``k`` of each level and image: values and flat indices ``[B, M]`` into ``scores [B, N * per_row]``.

    ``scores`` holds ``per_row`` columns (classes) per anchor, levels one after the other
    (``level_sizes`` anchors each); a level with fewer than ``k`` entries gives all of them.
    ``M = sum_l min(k, n_l * per_row)``. Values of a level come out in decreasing order.
    """
    values, indices, start = [], [], 0
    for n in level_sizes:
        width = int(n) * per_row
        take = min(int(k), width)
        if take > 0:
            top = scores[:, start : start + width].topk(take, dim=1)
            values.append(top.values)
            indices.append(top.indices + start)
        start += width
    if not values:
        empty = scores.new_zeros((scores.shape[0], 0))
        return empty, empty.long()
    return torch.cat(values, dim=1), torch.cat(indices, dim=1)


def image_sizes_tensor(sizes: Sequence[tuple[int, int]] | Tensor, device: torch.device) -> Tensor:
    """``[B, 2]`` float (H, W) of each image."""
    if isinstance(sizes, Tensor):
        return sizes.to(device=device, dtype=torch.float32)
    return torch.tensor([[float(h), float(w)] for h, w in sizes], dtype=torch.float32, device=device)


def clip_to_sizes(boxes: Tensor, sizes: Tensor, image: Tensor | None = None) -> Tensor:
    """Boxes ``[..., 4]`` clamped to ``[0, W] x [0, H]`` of their image.

    ``sizes [B, 2]`` (H, W); ``boxes`` is ``[B, M, 4]`` (image = first dimension) or, with
    ``image [N]``, ``[N, 4]`` / ``[N, ..., 4]``.
    """
    limits = sizes.flip(-1).repeat(1, 2).to(boxes.dtype)  # [B, 4]: W, H, W, H
    lim = limits[image] if image is not None else limits
    while lim.dim() < boxes.dim():
        lim = lim.unsqueeze(1)
    return torch.minimum(boxes.clamp(min=0), lim)


def batched_group_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_thr: float, max_coordinate: float) -> Tensor:
    """Indices kept by NMS within each group, by decreasing score (as ``torchvision.ops.batched_nms``).

    Eagerly this is ``batched_nms`` (which on a CPU loops over the groups of large sets);
    when exporting, the coordinate-offset form torchvision uses for small sets: boxes of
    group ``g`` are shifted by ``g * (max_coordinate + 1)``, which keeps the graph free of
    data-dependent branches. ``max_coordinate`` bounds every box coordinate (the image
    size: boxes are clipped before NMS).
    """
    if not _exporting():
        return batched_nms(boxes, scores, groups, iou_thr)
    offsets = groups.to(boxes.dtype) * (float(max_coordinate) + 1.0)
    keep = nms(boxes + offsets[:, None], scores, iou_thr)
    # torchvision's nms leaves its output size unbounded; bounding it keeps the sizes derived
    # from it finite (an unbounded one ends as an int64-overflowing constant in ONNX)
    torch._check(keep.shape[0] <= boxes.shape[0])
    return keep


def rank_in_image(image: Tensor, num_images: int) -> tuple[Tensor, Tensor]:
    """Each entry's position among the entries of its image (``0`` first) ``[N]``, and the count per image ``[B]``."""
    onehot = (image[:, None] == torch.arange(num_images, device=image.device)[None, :]).to(torch.int64)  # [N, B]
    return (onehot.cumsum(0) * onehot).sum(1) - 1, onehot.sum(0)


def pad_per_image(
    image: Tensor, num_images: int, k: int, values: Sequence[Tensor], fills: Sequence[float]
) -> tuple[list[Tensor], Tensor]:
    """Scatter kept detections (in decreasing score order) into ``[B, k, ...]`` slots, the best ``k`` per image.

    ``image [N]`` is each detection's image; ``values`` are tensors ``[N, ...]`` filled
    into slots ``[B, k, ...]`` (empty slots get ``fills``). Returns the padded tensors and
    ``num_detections [B]`` (``min(detections of the image, k)``).
    """
    rank, counts = rank_in_image(image, num_images)
    counts = counts.clamp(max=k)
    dump = num_images * k  # one extra slot receives every detection past the k-th of its image
    slot = torch.where(rank < k, image * k + rank, torch.full_like(rank, dump))
    out = []
    for v, fill in zip(values, fills):
        buf = v.new_full((dump + 1, *v.shape[1:]), fill)
        buf = buf.index_put((slot,), v)
        out.append(buf[:dump].reshape(num_images, k, *v.shape[1:]))
    return out, counts


def unpad(boxes: Tensor, scores: Tensor, labels: Tensor, num: Tensor) -> list[dict[str, Tensor]]:
    """Padded detections as torchvision's ``[{"boxes" [K_i, 4], "scores" [K_i], "labels" [K_i]}]``."""
    return [
        {"boxes": boxes[b, :n], "scores": scores[b, :n], "labels": labels[b, :n]}
        for b, n in enumerate(num.tolist())
    ]
