"""Read a COCO detection JSON (through pycocotools) into a :class:`~lossreg.data.records.DetectionSet`.

Category ids become contiguous labels in increasing id order (``category_ids[label]``
maps back), with their names kept. COCO boxes ``[x, y, w, h]`` become xyxy pixels,
clipped to the image; boxes narrower or lower than ``min_size`` after clipping are
dropped and counted in one :class:`~lossreg.data.records.DegenerateBoxWarning` per
file. ``iscrowd`` boxes go to ``ignore_boxes``, not to the training targets.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._limits import InputLimitError, load_json
from .records import DetectionRecord, DetectionSet, make_record, warn_dropped

__all__ = ["load_coco_json", "read_coco"]


def load_coco_json(ann_file: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and shape-check a COCO JSON file.

    Raises ``FileNotFoundError`` if it does not exist and ``ValueError`` naming the file
    if it is not JSON or lacks the ``images`` / ``categories`` lists.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {str(path)!r} does not exist")
    try:
        data = load_json(path.read_bytes())  # nesting depth bounded (lossreg._limits)
    except InputLimitError as exc:
        raise ValueError(f"{path}: not a COCO file: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a valid COCO JSON file: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a COCO file must hold a JSON object, got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: a COCO file needs a list under {key!r}")
    if not isinstance(data.setdefault("annotations", []), list):
        raise ValueError(f"{path}: 'annotations' must be a list")
    return dict(data)


def _index(data: dict[str, Any], path: Path):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: malformed COCO entry (missing or bad key {exc})") from None
    return coco


def read_coco(
    ann_file: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    min_size: float = 1.0,
    check_images: bool = True,
) -> DetectionSet:
    """Read ``ann_file`` (COCO JSON) with images under ``image_root``.

    Args:
        ann_file: the instances JSON.
        image_root: folder that ``images[].file_name`` is relative to.
        min_size: boxes with a clipped side below this many pixels are dropped
            (mmdetection drops sides < 1 px too).
        check_images: check that every image file exists (a ``stat`` per image).

    Returns a :class:`DetectionSet` with one record per image (images without
    annotations included, with empty boxes), in the file's image order.

    Raises:
        FileNotFoundError: ``ann_file`` or an image file is missing (the message names it).
        ValueError: malformed JSON or entries (bad bbox, unknown image or category id);
            the message names the file.
    """
    path = Path(ann_file)
    root = Path(image_root)
    data = load_coco_json(path)
    coco = _index(data, path)

    cat_ids = sorted(int(c) for c in coco.cats)
    names = [str(coco.cats[c].get("name", c)) for c in cat_ids]
    cat_to_label = {c: i for i, c in enumerate(cat_ids)}

    records: list[DetectionRecord] = []
    missing: list[str] = []
    dropped = 0
    examples: list[str] = []
    for img in data["images"]:
        try:
            image_id = int(img["id"])
            file_name = str(img["file_name"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: image entry without a valid 'id' and 'file_name': {img!r}") from None
        image_path = root / file_name
        if check_images and not image_path.is_file():
            missing.append(str(image_path))
            continue
        width, height = img.get("width"), img.get("height")
        if not width or not height:
            from PIL import Image

            with Image.open(image_path) as im:  # reads the header only
                width, height = im.size
        boxes, labels, crowd = [], [], []
        for ann in coco.imgToAnns.get(image_id, []):
            bbox = ann.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise ValueError(f"{path}: annotation {ann.get('id')!r} has no [x, y, w, h] bbox (got {bbox!r})")
            cat = ann.get("category_id")
            if cat not in cat_to_label:
                raise ValueError(f"{path}: annotation {ann.get('id')!r} has unknown category_id {cat!r}")
            x, y, w, h = (float(v) for v in bbox)
            xyxy = [x, y, x + w, y + h]
            if ann.get("iscrowd", 0):
                crowd.append(xyxy)
            else:
                boxes.append(xyxy)
                labels.append(cat_to_label[cat])
        record, n_bad = make_record(image_path, int(width), int(height), boxes, labels, crowd, image_id, min_size)
        if n_bad:
            dropped += n_bad
            examples.append(f"image {image_id}")
        records.append(record)
    unknown_images = set(coco.imgToAnns) - set(coco.imgs)
    if unknown_images:
        raise ValueError(f"{path}: annotations refer to image ids not in 'images': {sorted(unknown_images)[:5]}")
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{path}: image file {missing[0]!r} does not exist{more} (image_root={str(root)!r})")
    warn_dropped(dropped, str(path), min_size, examples)
    return DetectionSet(records=records, class_names=names, source=f"coco:{path}", category_ids=cat_ids)
