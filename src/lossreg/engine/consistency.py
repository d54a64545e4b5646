"""Score-IoU consistency: do a detector's classification scores agree with its localisation?

The HCRAL paper's figure 3a plots, for every detection, its classification score
against the IoU of its box with the best-matching ground-truth box of the same class.
A detector whose scores rank boxes by how well they are localised puts its points
near the diagonal and has a high correlation; NMS and AP both assume it does, since a
well-placed box with a low score is suppressed by a badly placed one with a high score.

>>> results = predict_coco(model, val_set)                       # doctest: +SKIP
>>> scores, ious = score_iou_pairs(results, val_set.data)        # doctest: +SKIP
>>> score_iou_correlation(scores, ious)                          # doctest: +SKIP
{'pearson': 0.41, 'spearman': 0.38, 'num_pairs': 1234}

``lossreg eval`` writes the figure as ``score_iou.png``
(:func:`lossreg.engine.plots.plot_score_iou`) and the correlations into
``metrics.json``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["score_iou_correlation", "score_iou_pairs"]


def score_iou_pairs(
    detections: Iterable[Mapping[str, Any]],
    data: Any,
    score_thr: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(score, IoU)`` pair of every detection scoring at least ``score_thr``.

    Args:
        detections: COCO results on the original images: ``{"image_id", "category_id",
            "bbox" [x, y, w, h] px, "score"}`` dicts, as :func:`~lossreg.engine.evaluate.predict_coco`
            returns them and ``lossreg eval`` writes them to ``detections.json``.
        data: the :class:`~lossreg.data.DetectionSet` they were predicted on; its
            ``category_ids`` map categories to labels (``label + 1`` when it has none).
        score_thr: detections scoring below it are left out.

    Returns ``(scores, ious)``, two ``float64 [N]`` arrays in the order of ``detections``:
    ``ious[i]`` is the largest IoU (:func:`torchvision.ops.box_iou`) of detection ``i``
    with a ground-truth box of its own class in its own image, ``0`` when the image
    has none. Ignore regions (COCO crowd, VOC difficult) are not ground truth here.

    Raises ``ValueError`` for a detection naming an image or category not in ``data``.
    """
    cat_ids = list(data.category_ids) if getattr(data, "category_ids", None) is not None else list(
        range(1, data.num_classes + 1)
    )
    label_of = {int(c): k for k, c in enumerate(cat_ids)}
    records = {int(r.image_id): r for r in data.records}
    per_image: dict[int, list[tuple[int, int, list[float]]]] = defaultdict(list)
    scores: list[float] = []
    for det in detections:
        score = float(det["score"])
        if score < score_thr:
            continue
        image_id, category = int(det["image_id"]), int(det["category_id"])
        if image_id not in records:
            raise ValueError(f"a detection refers to image_id {image_id}, which is not in the dataset")
        if category not in label_of:
            raise ValueError(f"a detection has category_id {category}; the dataset's are {cat_ids}")
        x, y, w, h = (float(v) for v in det["bbox"])
        per_image[image_id].append((len(scores), label_of[category], [x, y, x + w, y + h]))
        scores.append(score)
    ious = np.zeros(len(scores), dtype=np.float64)
    for image_id, items in per_image.items():
        rec = records[image_id]
        gt = torch.as_tensor(rec.boxes, dtype=torch.float64).reshape(-1, 4)
        gt_labels = torch.as_tensor(rec.labels, dtype=torch.int64).reshape(-1)
        if len(gt) == 0:
            continue
        boxes = torch.tensor([b for _, _, b in items], dtype=torch.float64)
        labels = torch.tensor([lbl for _, lbl, _ in items], dtype=torch.int64)
        iou = box_iou(boxes, gt)  # [D, G]
        iou[labels[:, None] != gt_labels[None, :]] = 0.0  # only boxes of the detection's class count
        best = iou.max(dim=1).values.numpy()
        ious[[i for i, _, _ in items]] = best
    return np.asarray(scores, dtype=np.float64), ious


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (as ``scipy.stats.rankdata``)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    value = float(np.corrcoef(a, b)[0, 1])
    return None if math.isnan(value) else value


def score_iou_correlation(scores: Any, ious: Any) -> dict[str, Any]:
    """``{"pearson", "spearman", "num_pairs"}`` of paired scores and IoUs.

    ``pearson`` is the linear correlation coefficient, ``spearman`` that of their ranks
    (ties averaged); both are ``None`` with fewer than two pairs or when either side is
    constant (the correlation is undefined).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    u = np.asarray(ious, dtype=np.float64).reshape(-1)
    if len(s) != len(u):
        raise ValueError(f"{len(s)} scores but {len(u)} IoUs; they must pair up")
    spearman = _pearson(_ranks(s), _ranks(u)) if len(s) >= 2 else None
    return {"pearson": _pearson(s, u), "spearman": spearman, "num_pairs": int(len(s))}
