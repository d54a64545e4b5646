"""The in-memory detection format every reader produces: one record per image, plus class names.

Boxes are ``float32 [G, 4]`` ``(x1, y1, x2, y2)`` in pixels of the original image, in
continuous coordinates (a box covering the whole image is ``(0, 0, W, H)``); labels are
``int64 [G]`` contiguous 0-based indices into ``DetectionSet.class_names``. Boxes that
must not count as background nor as objects (COCO ``iscrowd``, VOC ``difficult``) are
kept apart in ``ignore_boxes``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DegenerateBoxWarning", "DetectionRecord", "DetectionSet", "clip_boxes", "warn_dropped"]


class DegenerateBoxWarning(UserWarning):
    """Boxes dropped by a reader because they are empty or smaller than its ``min_size``."""


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


@dataclass
class DetectionRecord:
    """One image and its annotations.

    Attributes:
        image_path: path of the image file (checked to exist by the readers).
        width, height: image size in pixels, as stated by the annotation file.
        boxes: ``float32 [G, 4]`` xyxy pixels.
        labels: ``int64 [G]`` in ``[0, num_classes)``.
        image_id: the annotation file's id (COCO) or the index in the split (VOC).
        ignore_boxes: ``float32 [K, 4]`` xyxy pixels of crowd / difficult regions.
        ignore_labels: ``int64 [K]``, the class of each ignore box where the file gives one
            (VOC ``difficult`` objects, for the VOC metrics), ``-1`` where it has none
            (crowd regions; the default).

    Raises ``ValueError`` on boxes or labels of the wrong shape.
    """

    image_path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=_empty_boxes)
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    image_id: int = 0
    ignore_boxes: np.ndarray = field(default_factory=_empty_boxes)
    ignore_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.ignore_boxes = np.asarray(self.ignore_boxes, dtype=np.float32).reshape(-1, 4)
        if self.ignore_labels is None:
            self.ignore_labels = np.full(len(self.ignore_boxes), -1, dtype=np.int64)
        self.ignore_labels = np.asarray(self.ignore_labels, dtype=np.int64).reshape(-1)
        if len(self.ignore_labels) != len(self.ignore_boxes):
            raise ValueError(
                f"{self.image_path}: {len(self.ignore_boxes)} ignore boxes but {len(self.ignore_labels)} ignore labels"
            )
        if len(self.boxes) != len(self.labels):
            raise ValueError(
                f"{self.image_path}: {len(self.boxes)} boxes but {len(self.labels)} labels; they must match"
            )
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"{self.image_path}: image size must be positive, got {self.width}x{self.height}")


@dataclass
class DetectionSet:
    """A list of :class:`DetectionRecord` with its ``class_names`` (index = label).

    ``category_ids`` (COCO only) maps a label back to the file's category id:
    ``category_ids[label]``. ``source`` says where the set was read from.
    """

    records: list[DetectionRecord]
    class_names: list[str]
    source: str = ""
    category_ids: list[int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_boxes(self) -> int:
        """Training boxes in all records (ignore regions not counted)."""
        return sum(len(r.boxes) for r in self.records)

    def class_counts(self) -> dict[str, int]:
        """Boxes per class name, every class listed (zero when absent)."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for r in self.records:
            counts += np.bincount(r.labels, minlength=self.num_classes)[: self.num_classes]
        return {name: int(c) for name, c in zip(self.class_names, counts)}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> DetectionRecord:
        return self.records[index]

    def __iter__(self) -> Iterator[DetectionRecord]:
        return iter(self.records)


def clip_boxes(boxes: np.ndarray, width: int, height: int, min_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Clip ``[N, 4]`` xyxy boxes to the image and flag the usable ones.

    Returns the clipped ``float32 [N, 4]`` boxes and a ``bool [N]`` mask that is False
    for boxes whose clipped width or height is below ``min_size`` (or not positive),
    and for boxes with NaN/inf coordinates.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    out = boxes.copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    w = out[:, 2] - out[:, 0]
    h = out[:, 3] - out[:, 1]
    keep = finite & (w > 0) & (h > 0) & (w >= min_size) & (h >= min_size)
    return out, keep


def make_record(
    image_path: str,
    width: int,
    height: int,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    ignore: Sequence[Sequence[float]],
    image_id: int,
    min_size: float,
    ignore_labels: Sequence[int] | None = None,
) -> tuple[DetectionRecord, int]:
    """A record with its boxes and ignore regions clipped to the image; also the number of boxes dropped.

    ``ignore_labels``: the class of each ignore region (``-1``: none, the default)."""
    box_arr, keep = clip_boxes(np.array(boxes, dtype=np.float32), width, height, min_size)
    ign_arr, keep_ign = clip_boxes(np.array(ignore, dtype=np.float32), width, height, min_size)
    record = DetectionRecord(
        image_path=str(image_path),
        width=int(width),
        height=int(height),
        boxes=box_arr[keep],
        labels=np.array(labels, dtype=np.int64)[keep],
        image_id=image_id,
        ignore_boxes=ign_arr[keep_ign],
        ignore_labels=None if ignore_labels is None else np.array(ignore_labels, dtype=np.int64).reshape(-1)[keep_ign],
    )
    return record, int((~keep).sum() + (~keep_ign).sum())


def warn_dropped(count: int, source: str, min_size: float, examples: Sequence[str] = ()) -> None:
    """One :class:`DegenerateBoxWarning` for ``count`` boxes dropped from ``source`` (nothing if 0)."""
    if count <= 0:
        return
    where = f" (e.g. {', '.join(examples[:3])})" if examples else ""
    warnings.warn(
        f"{source}: dropped {count} degenerate box{'es' if count != 1 else ''} "
        f"(width or height < {min_size:g} px after clipping to the image){where}",
        DegenerateBoxWarning,
        stacklevel=3,
    )
