"""Construction-time checks shared by the heads: post-processing ranges and layer sizes.

A head refuses a setting that would fail (or silently do nothing) later at construction,
before any weight is allocated, with a one-line ``ValueError`` naming the head, the
setting and the range it must be in. The size limits are :mod:`lossreg._limits`'.
"""

from __future__ import annotations

from typing import Any

from .._limits import MAX_CHANNELS, MAX_NUM_CLASSES, MAX_STACKED_CONVS, check_count, check_numel

__all__ = ["check_channels", "check_head_size", "check_num_classes", "check_postprocess"]


def check_postprocess(owner: str, score_thr: Any, nms_thr: Any, pre_nms_topk: Any, max_dets: Any) -> None:
    """``0 <= score_thr <= 1``, ``0 < nms_thr <= 1``, ``pre_nms_topk`` and ``max_dets`` ints >= 1; else ``ValueError``."""
    for key, value, lo_open, want in (
        ("score_thr", score_thr, False, "in [0, 1] (a score)"),
        ("nms_thr", nms_thr, True, "in (0, 1] (an IoU)"),
    ):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not ((0 < value) if lo_open else (0 <= value)) or not value <= 1:
            raise ValueError(f"{owner}: {key} must be {want}, got {value!r}")
    for key, value in (("pre_nms_topk", pre_nms_topk), ("max_dets", max_dets)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: {key} must be an int >= 1, got {value!r}")


def check_num_classes(owner: str, num_classes: Any) -> int:
    """A positive int within :data:`~lossreg._limits.MAX_NUM_CLASSES`."""
    return check_count(owner, "num_classes", num_classes, MAX_NUM_CLASSES, "a detector's classes are its dataset's")


def check_channels(owner: str, **channels: Any) -> None:
    """Every channel width a positive int within :data:`~lossreg._limits.MAX_CHANNELS`."""
    for key, value in channels.items():
        check_count(owner, key, value, MAX_CHANNELS, "heads and necks use 256 channels (RoI heads 1024)")


def check_head_size(owner: str, in_channels: Any, feat_channels: Any, stacked_convs: Any, cls_rows: int) -> None:
    """Channels, tower depth and the classification output (``cls_rows = anchors x classes`` rows of
    ``feat_channels x 3 x 3``) within the limits, before a tower is built."""
    check_channels(owner, in_channels=in_channels, feat_channels=feat_channels)
    check_count(owner, "stacked_convs", stacked_convs, MAX_STACKED_CONVS, "detectors use 1-4", minimum=0)
    check_numel(owner, "the classification output (anchors x num_classes rows)", (cls_rows, feat_channels, 3, 3),
                "lower num_classes or feat_channels")
