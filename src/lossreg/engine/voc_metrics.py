"""Pascal VOC mAP at IoU 0.5: VOC07's 11-point and VOC12's all-point AP, ``difficult`` boxes ignored.

>>> m = voc_metrics(val_set.data, results)          # doctest: +SKIP
>>> m["voc07_mAP"], m["voc12_mAP"]                  # doctest: +SKIP

The devkit's algorithm (``VOCevaldet.m``; the Python port ``voc_eval.py`` of py-faster-rcnn
that mmdetection and detectron2 follow), per class:

1. the class's detections of every image, sorted by score (descending; ties keep the
   results' order, a stable sort where the devkit's quicksort leaves them arbitrary);
2. each detection takes the ground-truth box of its class and image it overlaps most
   (difficult ones included; the first on equal IoU). IoU ``> 0.5`` (strictly): a
   difficult box makes the detection count neither as TP nor FP; otherwise a TP if that
   box is not yet taken (it is taken now), else a FP. IoU ``<= 0.5``: FP;
3. ``recall = TP / npos`` with ``npos`` = the class's non-difficult boxes,
   ``precision = TP / (TP + FP)``;
4. VOC07 AP: the mean over ``t = 0, 0.1, ..., 1`` (``np.arange(0, 1.1, 0.1)``, as the
   devkit port computes them) of the highest precision at recall ``>= t`` (0 if none);
   VOC12 AP: the area under the precision envelope (precision made monotone from the
   right), summed where recall changes.

IoU is computed on lossreg's continuous pixel boxes without the devkit's ``+ 1``: VOC's
1-based inclusive ``(xmin, ymin, xmax, ymax)`` is ``(xmin - 1, ymin - 1, xmax, ymax)``
here (:mod:`lossreg.data.voc`), and detections are written back the same way, so the
widths, heights and intersections agree with the devkit's.

``difficult`` boxes are a record's ``ignore_boxes`` with their class in
``ignore_labels``; an ignore box without a class (label ``-1``) counts as a difficult box
of every class. A class with no non-difficult box has an undefined AP (``None``) and is
left out of the mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["is_voc", "match_class", "voc_ap", "voc_metrics"]


def is_voc(data: Any) -> bool:
    """Whether a :class:`~lossreg.data.DetectionSet` was read from a VOC folder (``source`` ``"voc:..."``)."""
    return str(getattr(data, "source", "")).startswith("voc:")


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from cumulative ``recall [D]`` and ``precision [D]`` (detections in score order)."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):  # the devkit port's thresholds (0.30000000000000004, ...)
            above = recall >= t
            ap += (float(precision[above].max()) if above.any() else 0.0) / 11.0
        return ap
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou(det: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box ``[4]`` with ``gts [G, 4]`` -> ``[G]``."""
    iw = np.clip(np.minimum(det[2], gts[:, 2]) - np.maximum(det[0], gts[:, 0]), 0.0, None)
    ih = np.clip(np.minimum(det[3], gts[:, 3]) - np.maximum(det[1], gts[:, 1]), 0.0, None)
    inter = iw * ih
    union = (det[2] - det[0]) * (det[3] - det[1]) + (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1]) - inter
    return inter / np.maximum(union, np.finfo(np.float64).tiny)


def match_class(
    gt: Mapping[int, tuple[np.ndarray, np.ndarray]],
    image_ids: np.ndarray,
    scores: np.ndarray,
    boxes: np.ndarray,
    iou_thr: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Devkit matching of one class: ``(tp [D], fp [D], npos)`` in descending score order.

    ``gt[image_id] = (boxes [G, 4] xyxy, difficult [G] bool)`` of the class;
    ``image_ids [D]``, ``scores [D]``, ``boxes [D, 4]`` are its detections.
    """
    npos = int(sum(int((~d).sum()) for _, d in gt.values()))
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    taken = {img: np.zeros(len(d), dtype=bool) for img, (_, d) in gt.items()}
    for rank, k in enumerate(order):
        img = int(image_ids[k])
        if img not in gt or len(gt[img][0]) == 0:
            fp[rank] = 1.0
            continue
        g_boxes, difficult = gt[img]
        ious = _iou(boxes[k], g_boxes)
        j = int(np.argmax(ious))
        if ious[j] > iou_thr:
            if difficult[j]:
                continue
            if not taken[img][j]:
                tp[rank] = 1.0
                taken[img][j] = True
            else:
                fp[rank] = 1.0
        else:
            fp[rank] = 1.0
    return tp, fp, npos


def voc_metrics(
    data: Any,
    results: Sequence[Mapping[str, Any]],
    category_ids: Sequence[int] | None = None,
    iou_thr: float = 0.5,
) -> dict[str, Any]:
    """``{"voc07_mAP", "voc12_mAP", "voc_per_class": {name: {"voc07", "voc12"}}}`` in 0-1.

    Args:
        data: the :class:`~lossreg.data.DetectionSet` (its records' ``boxes``/``labels`` and
            their difficult ``ignore_boxes``/``ignore_labels``).
        results: COCO-style detections ``{"image_id", "category_id", "bbox" [x, y, w, h], "score"}``
            on the original images (:func:`~lossreg.engine.evaluate.predict_coco`).
        category_ids: ``category_ids[label]`` of the results (default ``label + 1``).
        iou_thr: the match threshold (IoU must exceed it) [0.5].

    A ``None`` mAP means no class has a non-difficult box.
    """
    names = list(data.class_names)
    cat_ids = list(category_ids) if category_ids is not None else list(range(1, len(names) + 1))
    label_of = {int(c): k for k, c in enumerate(cat_ids)}
    gts: list[dict[int, tuple[np.ndarray, np.ndarray]]] = [{} for _ in names]
    for rec in data.records:
        boxes = np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(rec.labels, dtype=np.int64).reshape(-1)
        ign = np.asarray(rec.ignore_boxes, dtype=np.float64).reshape(-1, 4)
        ign_labels = np.asarray(getattr(rec, "ignore_labels", np.full(len(ign), -1)), dtype=np.int64).reshape(-1)
        for c in range(len(names)):
            hard = ign[(ign_labels == c) | (ign_labels < 0)]
            easy = boxes[labels == c]
            gts[c][int(rec.image_id)] = (
                np.concatenate([easy, hard]),
                np.concatenate([np.zeros(len(easy), dtype=bool), np.ones(len(hard), dtype=bool)]),
            )
    per_label: list[list[Mapping[str, Any]]] = [[] for _ in names]
    for r in results:
        label = label_of.get(int(r["category_id"]))
        if label is not None:
            per_label[label].append(r)
    per_class: dict[str, dict[str, float | None]] = {}
    ap07, ap12 = [], []
    for c, name in enumerate(names):
        dets = per_label[c]
        image_ids = np.array([int(d["image_id"]) for d in dets], dtype=np.int64)
        scores = np.array([float(d["score"]) for d in dets], dtype=np.float64)
        xywh = np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        tp, fp, npos = match_class(gts[c], image_ids, scores, boxes, iou_thr)
        if npos == 0:
            per_class[name] = {"voc07": None, "voc12": None}
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / npos
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        a07, a12 = voc_ap(recall, precision, True), voc_ap(recall, precision, False)
        per_class[name] = {"voc07": a07, "voc12": a12}
        ap07.append(a07)
        ap12.append(a12)
    return {
        "voc07_mAP": float(np.mean(ap07)) if ap07 else None,
        "voc12_mAP": float(np.mean(ap12)) if ap12 else None,
        "voc_per_class": per_class,
    }
