"""COCO-style evaluation of a detector on a dataset split (pycocotools ``COCOeval``, bbox).

>>> metrics = evaluate(model, val_set, batch_size=8, device="cuda")      # doctest: +SKIP
>>> metrics["AP"], metrics["per_class"]["ellipse"]                       # doctest: +SKIP

The model runs in eval mode; its boxes (on the resized network input) are mapped
back to the original images with :func:`~lossreg.data.unscale_boxes` and turned into
COCO results with the dataset's ``category_ids`` (label ``k`` -> ``k + 1`` when the
set has none, as for VOC). The ground truth is the COCO annotation file when one is
given (COCO datasets: areas and crowd regions exactly as in the file), otherwise it
is built in memory from the :class:`~lossreg.data.DetectionSet` (box areas; ignore
regions become crowd regions of every class).

Metrics are COCO's in 0-1: ``AP`` (IoU 0.50:0.95), ``AP50``, ``AP75``, ``APs``,
``APm``, ``APl``, and ``per_class`` (AP per class name); VOC data adds the devkit's
``voc07_mAP`` (11-point) and ``voc12_mAP`` (all-point) at IoU 0.5 with ``difficult``
boxes ignored, and ``voc_per_class`` (:mod:`lossreg.engine.voc_metrics`). A value COCO leaves
undefined (no ground truth of that size or class) is ``None``; no detections at all
gives zeros, not an error.

``lossreg eval``'s output folder is :mod:`lossreg.engine.eval_folder`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from tqdm.auto import tqdm

from ..data import collate, unscale_boxes
from .voc_metrics import is_voc, voc_metrics

__all__ = [
    "METRIC_KEYS",
    "coco_gt_from_set",
    "coco_metrics",
    "evaluate",
    "predict_coco",
    "run_cocoeval",
    "summarize_cocoeval",
]

logger = logging.getLogger(__name__)

#: The summary keys, in the order of ``COCOeval.stats[:6]``.
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _category_ids(data: Any) -> list[int]:
    ids = getattr(data, "category_ids", None)
    return list(ids) if ids is not None else list(range(1, data.num_classes + 1))


def _quiet() -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO())


def coco_gt_from_set(data: Any) -> COCO:
    """A pycocotools ``COCO`` ground truth built in memory from a :class:`~lossreg.data.DetectionSet`."""
    cat_ids = _category_ids(data)
    images, anns = [], []
    for rec in data.records:
        images.append({"id": int(rec.image_id), "width": int(rec.width), "height": int(rec.height)})
        for box, label in zip(rec.boxes.tolist(), rec.labels.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": int(rec.image_id),
                    "category_id": cat_ids[int(label)],
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for box in rec.ignore_boxes.tolist():  # no class: a crowd region of every class
            w, h = box[2] - box[0], box[3] - box[1]
            for cid in cat_ids:
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": int(rec.image_id),
                        "category_id": cid,
                        "bbox": [box[0], box[1], w, h],
                        "area": w * h,
                        "iscrowd": 1,
                    }
                )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": cid, "name": name} for cid, name in zip(cat_ids, data.class_names)],
    }
    with _quiet():
        gt.createIndex()
    return gt


def _load_results(gt: COCO, results: list[dict[str, Any]]) -> COCO:
    if results:
        with _quiet():
            return gt.loadRes(results)
    dt = COCO()  # loadRes cannot take an empty list
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]), "annotations": []}
    with _quiet():
        dt.createIndex()
    return dt


def _defined(value: float) -> float | None:
    value = float(value)
    return None if value < 0 or math.isnan(value) else value


def run_cocoeval(
    gt: COCO,
    results: list[dict[str, Any]],
    category_ids: Sequence[int],
    image_ids: Sequence[int] | None = None,
    max_dets: int = 100,
) -> COCOeval:
    """A bbox ``COCOeval`` of ``results`` against ``gt``, evaluated, accumulated and summarised (quietly).

    Its ``stats`` hold the summary and ``eval["precision"]`` the ``[T, R, K, A, M]``
    precision array the metrics and ``pr_curve.png`` are read from.
    """
    dt = _load_results(gt, results)
    ev = COCOeval(gt, dt, iouType="bbox")
    if image_ids is not None:
        ev.params.imgIds = sorted(int(i) for i in image_ids)
    ev.params.catIds = sorted(int(c) for c in category_ids)
    if max_dets != 100:  # COCOeval sorts maxDets; the largest is the limit (below 10 the middle one repeats it)
        ev.params.maxDets = [1, min(10, int(max_dets)), int(max_dets)]
    with _quiet():
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if 100 not in ev.params.maxDets:  # pycocotools' stats[0] hard-codes maxDets=100: -1 for any other limit
        p = ev.eval["precision"][:, :, :, 0, -1]
        ev.stats[0] = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
    return ev


def summarize_cocoeval(ev: COCOeval, class_names: Sequence[str], category_ids: Sequence[int]) -> dict[str, Any]:
    """``{AP, AP50, AP75, APs, APm, APl, per_class}`` of a :func:`run_cocoeval` result."""
    out: dict[str, Any] = {key: _defined(v) for key, v in zip(METRIC_KEYS, ev.stats[:6])}
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    name_of = dict(zip((int(c) for c in category_ids), class_names))
    per_class: dict[str, float | None] = {}
    for k, cid in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[name_of[cid]] = float(np.mean(p)) if p.size else None
    out["per_class"] = per_class
    return out


def coco_metrics(
    gt: COCO,
    results: list[dict[str, Any]],
    class_names: Sequence[str],
    category_ids: Sequence[int],
    image_ids: Sequence[int] | None = None,
    max_dets: int = 100,
) -> dict[str, Any]:
    """``{AP, AP50, AP75, APs, APm, APl, per_class}`` of COCO ``results`` against ``gt``.

    ``results`` are ``{"image_id", "category_id", "bbox" [x, y, w, h], "score"}`` dicts;
    ``image_ids`` restricts the evaluation to those images (all of ``gt``'s otherwise).
    """
    ev = run_cocoeval(gt, results, category_ids, image_ids, max_dets)
    return summarize_cocoeval(ev, class_names, category_ids)


@torch.no_grad()
def predict_coco(
    model: nn.Module,
    dataset: Any,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    amp: bool | torch.dtype = False,
    num_workers: int = 0,
    progress: bool = False,
    label_map: Sequence[int] | None = None,
    indices: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Run ``model`` (eval mode) over a :class:`~lossreg.data.DetectionDataset`; COCO results on the original images.

    ``label_map[k]`` is the dataset label of the model's label ``k`` (``-1``: not a class
    of the dataset, its detections are dropped); identity when ``None``. See
    :func:`~lossreg.engine.eval_folder.match_labels`. ``indices``: only these images of
    the dataset, in this order (one process's shard).
    """
    device = torch.device(device)
    cat_ids = _category_ids(dataset.data)
    if label_map is not None:
        cat_ids = [cat_ids[m] if m >= 0 else -1 for m in label_map]
    source = dataset if indices is None else torch.utils.data.Subset(dataset, list(indices))
    loader = torch.utils.data.DataLoader(
        source, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers
    )
    amp_dtype = amp if isinstance(amp, torch.dtype) else (torch.bfloat16 if device.type == "cpu" else torch.float16)
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    try:
        for images, targets, sizes in tqdm(loader, desc="eval", disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)
            batch = [images[i, :, :h, :w] for i, (h, w) in enumerate(sizes)]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp is not False):
                dets = model(batch)
            for det, tgt in zip(dets, targets):
                boxes = unscale_boxes(det["boxes"].float().cpu(), tgt["scale"], tgt["orig_size"])
                xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
                scores = det["scores"].float().cpu().tolist()
                labels = det["labels"].cpu().tolist()
                for bb, score, label in zip(xywh, scores, labels):
                    if cat_ids[int(label)] < 0:
                        continue
                    results.append(
                        {
                            "image_id": int(tgt["image_id"]),
                            "category_id": cat_ids[int(label)],
                            "bbox": [float(v) for v in bb],
                            "score": float(score),
                        }
                    )
    finally:
        model.train(was_training)
    return results


def evaluate(
    model: nn.Module,
    dataset: Any,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    amp: bool | torch.dtype = False,
    ann_file: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    max_dets: int = 100,
    progress: bool = False,
    distributed: bool = False,
) -> dict[str, Any] | None:
    """COCO metrics of ``model`` on a :class:`~lossreg.data.DetectionDataset` (see the module docstring).

    With ``distributed`` under a process group of N ranks (every rank calls it), rank
    ``r`` predicts images ``r, r + N, ...``, rank 0 gathers every detection in dataset
    order and returns the metrics (the same as one process evaluating the whole set);
    the other ranks return None.

    Args:
        model: the detector (not a DDP wrapper); its mode is restored afterwards.
        dataset: the split to evaluate, built with ``train=False`` (no augmentation).
        batch_size, device, num_workers: inference settings.
        amp: run under ``torch.autocast``: a dtype, or True for bfloat16 on CPU and float16 on CUDA.
        ann_file: COCO ground-truth file of the split (else built from ``dataset.data``).
        max_dets: detections per image COCO keeps (the largest of its ``maxDets``).
        progress: show a tqdm bar.
    """
    data = dataset.data
    if ann_file is not None:
        with _quiet():
            gt = COCO(str(ann_file))
    else:
        gt = coco_gt_from_set(data)
    from . import distributed as dist_utils

    world = dist_utils.get_world_size() if distributed else 1
    if world > 1:
        rank = dist_utils.get_rank()
        shard = list(range(rank, len(dataset), world))
        local = predict_coco(model, dataset, batch_size, device, amp, num_workers, progress, indices=shard)
        gathered = dist_utils.all_gather_object(local)
        if rank != 0:
            return None
        by_image: dict[int, list[dict[str, Any]]] = {}
        for part in gathered:
            for det in part:
                by_image.setdefault(int(det["image_id"]), []).append(det)
        ids = dict.fromkeys(int(data.records[i].image_id) for i in range(len(dataset)))
        results = [det for image_id in ids for det in by_image.get(image_id, [])]
    else:
        results = predict_coco(model, dataset, batch_size, device, amp, num_workers, progress)
    logger.debug("evaluating %d detections on %d images", len(results), len(data))
    metrics = coco_metrics(
        gt,
        results,
        data.class_names,
        _category_ids(data),
        image_ids=[r.image_id for r in data.records],
        max_dets=max_dets,
    )
    if is_voc(data):  # the VOC papers' metric, beside COCO's
        metrics.update(voc_metrics(data, results, _category_ids(data)))
    return metrics
