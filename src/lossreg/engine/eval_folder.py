"""``lossreg eval``: the split to evaluate on, the model's classes matched to it, and the output folder.

:func:`open_eval_data` (a COCO JSON, a VOC folder or a recipe's ``data.val``),
:func:`match_labels` (the model's classes to the dataset's, by name) and
:func:`evaluate_to_folder` (``metrics.json``, ``detections.json``, ``pr_curve.png`` and
``score_iou.png``); the metrics are :mod:`lossreg.engine.evaluate`'s.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import nn

from .evaluate import _category_ids, _quiet, coco_gt_from_set, predict_coco, run_cocoeval, summarize_cocoeval
from .precision import resolve_precision
from .voc_metrics import is_voc, voc_metrics

__all__ = ["EvalData", "evaluate_to_folder", "match_labels", "model_image_size", "open_eval_data"]

logger = logging.getLogger(__name__)


@dataclass
class EvalData:
    """A split to evaluate on, as :func:`open_eval_data` finds it.

    Attributes:
        data: the :class:`~lossreg.data.DetectionSet`.
        ann_file: its COCO ground-truth file (exact areas and crowd regions), or ``None``
            to build the ground truth from ``data``.
        name: a short name for output folders (``eval-<name>``).
    """

    data: Any
    ann_file: Path | None
    name: str


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "data"


def _coco_image_root(ann_file: Path) -> Path:
    """Where the images of ``ann_file`` are: its folder, ``images/`` next to it, or COCO's ``<split>/``
    next to an ``annotations/`` folder (``annotations/instances_val2017.json`` -> ``val2017/``)."""
    from ..data.coco import load_coco_json

    images = load_coco_json(ann_file)["images"]
    folder = ann_file.parent
    candidates = [folder, folder / "images"]
    if "_" in ann_file.stem:
        candidates.append(folder.parent / ann_file.stem.rsplit("_", 1)[1])
    first = next((str(img.get("file_name")) for img in images if isinstance(img, dict) and img.get("file_name")), None)
    if first is None:
        return folder
    for cand in candidates:
        if (cand / first).is_file():
            return cand
    looked = ", ".join(repr(str(c)) for c in candidates)
    raise FileNotFoundError(
        f"cannot find the images of {ann_file}: its first image {first!r} is in none of {looked}; "
        "give the image folder with --images DIR"
    )


def _voc_split(root: Path, split: str | None) -> str | None:
    if split is not None:
        return split
    main = root / "ImageSets" / "Main"
    have = sorted(p.stem for p in main.glob("*.txt")) if main.is_dir() else []
    for cand in ("val", "test"):
        if cand in have:
            return cand
    if not have:
        return None  # no split files: every annotation
    raise ValueError(f"VOC folder {str(root)!r} has no val or test split in ImageSets/Main (found {have}); choose one with --split")


def open_eval_data(
    data: str | os.PathLike[str] | None = None,
    ann_file: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
    split: str | None = None,
    recipe: Any = None,
    class_names: Sequence[str] | None = None,
) -> EvalData:
    """The split ``lossreg eval`` evaluates on.

    Args:
        data: a COCO JSON file; a Pascal VOC folder (``Annotations/``, ``JPEGImages/``,
            ``ImageSets/Main/<split>.txt``); with ``ann_file``, the COCO images folder;
            ``None``: the recipe's ``data.val``.
        ann_file: a COCO JSON file (``--ann``).
        images: the COCO images folder (``--images``). Default: the JSON's folder,
            ``images/`` next to it, or ``<split>/`` next to an ``annotations/`` folder,
            whichever holds its first image.
        split: the VOC split; default ``val``, else ``test``, else every XML file when
            the folder has no ``ImageSets/Main``.
        recipe: the model's recipe, for ``data.val``.
        class_names: the label order for a recipe's VOC split (the model's classes).

    Raises ``FileNotFoundError`` / ``ValueError`` naming what is missing or wrong.
    """
    from ..data import read_coco, read_dataset, read_voc

    if data is None and ann_file is None:
        if recipe is None:
            raise ValueError("the model has no recipe to take a validation split from; give --data PATH")
        val = recipe.data.val
        if val is None:
            raise ValueError("the model's recipe has no data.val split; give --data PATH (a COCO JSON or a VOC folder)")
        ds = read_dataset(val, class_names=class_names)
        name = val.split or dict(val.params).get("split") or "val"
        ann = Path(val.ann_file) if val.format == "coco" and val.ann_file else None
        return EvalData(ds, ann, _safe_name(str(name)))
    path = Path(data) if data is not None else None
    if ann_file is not None or (path is not None and not path.is_dir()):
        ann = Path(ann_file) if ann_file is not None else path
        assert ann is not None
        if not ann.is_file():
            raise FileNotFoundError(f"COCO annotation file {str(ann)!r} does not exist")
        if images is not None:
            root = Path(images)
        elif ann_file is not None and path is not None:
            root = path
        else:
            root = _coco_image_root(ann)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
        return EvalData(read_coco(ann, root), ann, _safe_name(ann.stem))
    assert path is not None
    if not path.exists():
        raise FileNotFoundError(f"--data {str(path)!r} does not exist")
    if not (path / "Annotations").is_dir():
        raise ValueError(
            f"{str(path)!r} is not a VOC folder (no Annotations/); give a COCO JSON file "
            "(--data FILE.json, or --data IMAGES_DIR --ann FILE.json) or a VOC folder"
        )
    if images is not None:
        raise ValueError("--images is for COCO JSON data; a VOC folder has its images in JPEGImages/")
    voc_split = _voc_split(path, split)
    ds = read_voc(path, voc_split)
    return EvalData(ds, None, _safe_name(f"{path.resolve().name}-{voc_split or 'all'}"))


def match_labels(model_names: Sequence[str] | None, num_classes: int, data_names: Sequence[str]) -> list[int]:
    """``label_map`` for :func:`~lossreg.engine.evaluate.predict_coco`: entry ``k`` is the dataset label of the
    model's label ``k``.

    Classes match by name: every class of the dataset must be one of the model's (a
    model's extra classes are allowed; their detections are left out). A model without
    ``label_names`` must have as many classes as the dataset, matched by position.
    Raises ``ValueError`` naming both class lists otherwise.
    """
    data_names = list(data_names)
    if model_names is None:
        if num_classes != len(data_names):
            raise ValueError(
                f"the model has {num_classes} unnamed classes but the dataset has {len(data_names)} "
                f"({', '.join(data_names)}); a model without label_names needs the same number of classes"
            )
        return list(range(num_classes))
    model_names = list(model_names)
    missing = [n for n in data_names if n not in model_names]
    if missing:
        raise ValueError(
            f"the dataset's classes do not match the model's: {missing} are not classes of the model "
            f"(model: {model_names}; dataset: {data_names})"
        )
    index = {n: i for i, n in enumerate(data_names)}
    extra = [n for n in model_names if n not in index]
    if extra:
        logger.warning("the model's classes %s are not in the dataset; their detections are left out", extra)
    return [index.get(n, -1) for n in model_names]


def model_image_size(model: nn.Module) -> int | tuple[int, int] | None:
    """The input size a model was trained at: its recipe's ``data.image_size``, else the
    ``input_size`` of its ``pretrained_cfg``; ``None`` when neither says."""
    recipe = getattr(model, "recipe", None)
    if recipe is not None and getattr(recipe, "data", None) is not None:
        size = recipe.data.image_size
        return int(size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    if size:
        return int(max(size[-2:]))
    return None


def evaluate_to_folder(
    model: nn.Module,
    dataset: Any,
    output_dir: str | os.PathLike[str],
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    ann_file: str | os.PathLike[str] | None = None,
    label_map: Sequence[int] | None = None,
    max_dets: int = 100,
    score_thr: float = 0.05,
    num_workers: int = 0,
    progress: bool = False,
    extra: dict[str, Any] | None = None,
    amp: str | bool = "fp32",
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` and write the results into ``output_dir``.

    ``amp``: the autocast the model runs under (``fp32`` [default]: none; ``bf16``, ``fp16``,
    ``auto`` as ``train.amp``, :mod:`lossreg.engine.precision`).

    Files: ``metrics.json`` (:func:`~lossreg.engine.evaluate.evaluate`'s metrics, then
    ``score_iou_correlation`` (Pearson r), ``score_iou_spearman``, ``score_iou_pairs``, ``score_thr``,
    ``num_images``, ``num_detections`` and ``extra``), ``detections.json`` (COCO results
    on the original images), ``pr_curve.png`` (:func:`~lossreg.engine.plots.plot_pr_curves`
    from COCOeval's precision array) and ``score_iou.png``
    (:func:`~lossreg.engine.plots.plot_score_iou` of the detections scoring at least
    ``score_thr``; see :mod:`lossreg.engine.consistency`). Returns the metrics.
    """
    from .._io import atomic_write_text
    from .consistency import score_iou_correlation, score_iou_pairs
    from .plots import plot_pr_curves, plot_score_iou

    data = dataset.data
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if ann_file is not None:
        with _quiet():
            gt = COCO(str(ann_file))
    else:
        gt = coco_gt_from_set(data)
    dtype = resolve_precision(amp, torch.device(device)).dtype
    results = predict_coco(model, dataset, batch_size, device, amp=dtype if dtype is not None else False,
                           num_workers=num_workers, progress=progress, label_map=label_map)
    cat_ids = _category_ids(data)
    ev = run_cocoeval(gt, results, cat_ids, image_ids=[r.image_id for r in data.records], max_dets=max_dets)
    metrics = summarize_cocoeval(ev, data.class_names, cat_ids)
    if is_voc(data):  # as evaluate(): the devkit's VOC07/VOC12 mAP beside COCO's
        metrics.update(voc_metrics(data, results, cat_ids))
    scores, ious = score_iou_pairs(results, data, score_thr)
    corr = score_iou_correlation(scores, ious)
    metrics.update(
        score_iou_correlation=corr["pearson"],
        score_iou_spearman=corr["spearman"],
        score_iou_pairs=corr["num_pairs"],
        score_thr=float(score_thr),
        num_images=len(data),
        num_detections=len(results),
        **(extra or {}),
    )
    atomic_write_text(out / "detections.json", json.dumps(results) + "\n")
    name_of = dict(zip(cat_ids, data.class_names))
    plot_pr_curves(ev.eval["precision"], ev.params.recThrs, ev.params.iouThrs,
                   [name_of[c] for c in ev.params.catIds], out / "pr_curve.png")
    plot_score_iou(scores, ious, out / "score_iou.png", stats=corr, score_thr=score_thr)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
