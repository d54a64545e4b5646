"""What a detector accepts: training targets, class names, and a head that fits its neck.

The model API applies the same rule to boxes as the dataset readers
(:func:`lossreg.data.records.clip_boxes`): a target box is clipped to its image's own
size (``(H_i, W_i)`` before padding), and a box whose clipped width or height is below
1 pixel (entirely outside the image, or of zero area) is dropped, counted in one
:class:`~lossreg.data.records.DegenerateBoxWarning` per call. A box that is malformed
rather than outside (NaN or inf, ``x2 < x1`` or ``y2 < y1``, not ``[G, 4]``) raises
``ValueError`` naming the image, as does a label that is not an integer class index in
``0..num_classes-1`` (float labels are refused rather than truncated, bool labels too).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.records import DegenerateBoxWarning

__all__ = ["MIN_BOX_SIZE", "check_label_names", "check_targets", "check_head_strides", "neck_strides"]

#: The readers' ``min_size``: boxes narrower or lower than this after clipping are dropped.
MIN_BOX_SIZE = 1.0


def _as_tensor(value: Any, where: str, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            return torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{where}: {what} cannot be made a tensor ({exc}); give a tensor") from None
    raise ValueError(f"{where}: {what} must be a tensor (or a list of numbers), got {type(value).__name__}")


def check_targets(
    targets: Any,
    num_images: int,
    num_classes: int,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> list[dict[str, Any]]:
    """Validate ``[{"boxes": [G, 4] xyxy px, "labels": [G]}]`` (see the module docstring); return fresh dicts
    with float32 boxes and int64 labels, clipped to ``sizes`` (each image's ``(H, W)``) when given.

    Boxes and labels may be tensors, numpy arrays or (nested) lists. Raises ``ValueError``
    naming the bad image and field.
    """
    if not isinstance(targets, (list, tuple)) or len(targets) != num_images:
        got = f"{len(targets)} target dicts" if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"training needs one target dict per image ({num_images}), got {got}")
    out = []
    dropped, examples = 0, []
    for i, t in enumerate(targets):
        where = f"targets[{i}]"
        if not isinstance(t, Mapping) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"{where} must be a dict with 'boxes' [G, 4] (xyxy pixels) and 'labels' [G]")
        boxes = _as_tensor(t["boxes"], where, "'boxes'")
        labels = _as_tensor(t["labels"], where, "'labels'")
        if boxes.numel() == 0 and boxes.dim() < 2:
            boxes = boxes.reshape(0, 4)
        if labels.numel() == 0:  # an image without objects: any empty tensor will do
            labels = torch.zeros(0, dtype=torch.int64, device=labels.device)
        if boxes.dtype == torch.bool or boxes.is_complex() or not (boxes.is_floating_point() or _is_int(boxes)):
            raise ValueError(f"{where}: 'boxes' must be float pixel coordinates, got {boxes.dtype}")
        if labels.dtype == torch.bool or not _is_int(labels):
            raise ValueError(
                f"{where}: 'labels' must be integer class indices (torch.int64), got {labels.dtype}; float labels "
                "would be truncated and bool labels read as classes 0/1"
            )
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:1]:
            raise ValueError(
                f"{where}: boxes must be [G, 4] and labels [G], got {tuple(boxes.shape)} and {tuple(labels.shape)}"
            )
        boxes = boxes.float()
        if boxes.numel() and not bool(torch.isfinite(boxes).all()):
            raise ValueError(f"{where}: boxes contain NaN or inf")
        if boxes.numel() and bool(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
            raise ValueError(f"{where}: boxes must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"{where}: labels must be in [0, {num_classes - 1}] (num_classes={num_classes}, no background "
                f"label), got values in {int(labels.min())}..{int(labels.max())}"
            )
        labels = labels.long()
        if sizes is not None and boxes.numel():
            h, w = sizes[i]
            boxes = torch.stack(
                [boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)],
                dim=1,
            )
            keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIZE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIZE)
            if not bool(keep.all()):
                dropped += int((~keep).sum())
                examples.append(f"image {i}")
                boxes, labels = boxes[keep], labels[keep]
        out.append({**t, "boxes": boxes, "labels": labels})
    if dropped:
        warnings.warn(
            f"dropped {dropped} target box{'es' if dropped != 1 else ''} outside the image or smaller than "
            f"{MIN_BOX_SIZE:g} px after clipping to it (e.g. {', '.join(examples[:3])}); the readers drop the same "
            "boxes",
            DegenerateBoxWarning,
            stacklevel=3,
        )
    return out


def _is_int(t: Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def check_label_names(owner: str, label_names: Sequence[str] | None, num_classes: int) -> list[str] | None:
    """``label_names`` as a list of distinct strings, one per class (``None`` stays ``None``); ``ValueError`` otherwise."""
    if label_names is None:
        return None
    if isinstance(label_names, str) or not isinstance(label_names, Sequence):
        raise ValueError(f"{owner}: label_names must be a list of class names, got {type(label_names).__name__}")
    names = list(label_names)
    if len(names) != num_classes:
        raise ValueError(f"{owner}: {len(names)} label_names for num_classes={num_classes}")
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise ValueError(f"{owner}: label_names must be non-empty strings, got {bad[0]!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"{owner}: label_names repeats {', '.join(map(repr, repeated))}; class names must be unique (fine-tuning "
            "and evaluation match classes by name)"
        )
    return names


def neck_strides(backbone_strides: Sequence[int], neck: Any) -> tuple[int, ...] | None:
    """The strides of the neck's outputs: the backbone's, then each extra level twice the one before
    (FPN's P6/P7 or max-pooled P6); None for a neck that does not say how many levels it has."""
    num = getattr(neck, "num_outs", None)
    if not isinstance(num, int):
        return None
    strides = [int(s) for s in backbone_strides]
    while len(strides) < num:
        strides.append(strides[-1] * 2)
    return tuple(strides[:num])


def check_head_strides(owner: str, head_name: str, head: Any, levels: tuple[int, ...] | None) -> None:
    """Refuse, at construction, a dense head whose strides do not match the neck's levels (it would fail at
    the first forward, or place its anchors at the wrong positions)."""
    gen = getattr(head, "anchor_generator", None)
    if levels is None or gen is None:
        return
    strides = tuple(int(s) for s in gen.strides)
    if strides != levels:
        raise ValueError(
            f"{owner}: the {head_name} head's strides {list(strides)} do not match the neck's {len(levels)} levels "
            f"(strides {list(levels)}); set the head's strides to {list(levels)} or change the neck"
        )
