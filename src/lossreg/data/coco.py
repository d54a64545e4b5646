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
    if it is a folder, is not JSON (or nests deeper than :data:`lossreg._limits.MAX_DEPTH`),
    or lacks the ``images`` / ``annotations`` / ``categories`` lists (a set without objects
    has ``"annotations": []``; a file without the key is an image list, not a detection set).
    """
    path = Path(ann_file)
    if path.is_dir():
        raise ValueError(f"COCO annotation file {str(path)!r} is a folder; give the JSON file inside it")
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {str(path)!r} does not exist")
    try:
        data = load_json(path.read_bytes())
    except InputLimitError as exc:
        raise ValueError(f"{path}: not a COCO file: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a valid COCO JSON file: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a COCO file must hold a JSON object, got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: a COCO file needs a list under {key!r}")
    if "annotations" not in data:
        raise ValueError(
            f"{path}: no 'annotations' list, so this is not a COCO detection file (an image list?); add "
            "\"annotations\": [] if the images really hold no objects"
        )
    if not isinstance(data["annotations"], list):
        raise ValueError(f"{path}: 'annotations' must be a list")
    return dict(data)


def _check_unique(path: Path, data: dict[str, Any]) -> None:
    """Refuse repeated image ids, category ids and category names (pycocotools would silently merge them)."""
    seen: dict[Any, int] = {}
    for i, img in enumerate(data["images"]):
        key = img.get("id") if isinstance(img, Mapping) else None
        if key is not None and key in seen:
            raise ValueError(
                f"{path}: image id {key!r} is used by images[{seen[key]}] and images[{i}]; every image needs its own id"
            )
        seen[key] = i
    ids: dict[Any, int] = {}
    names: dict[str, Any] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, Mapping) or "id" not in cat:
            raise ValueError(f"{path}: categories[{i}] must be an object with an 'id' and a 'name', got {cat!r}")
        cid = cat["id"]
        if cid in ids:
            raise ValueError(f"{path}: category id {cid!r} is used by categories[{ids[cid]}] and categories[{i}]")
        ids[cid] = i
        name = str(cat.get("name", cid))
        if name in names:
            raise ValueError(
                f"{path}: category name {name!r} is used by ids {names[name]!r} and {cid!r}; class names must be "
                "unique (they name the model's classes): rename one or merge them"
            )
        names[name] = cid


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
    _check_unique(path, data)
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
            try:
                if any(isinstance(v, bool) for v in bbox):
                    raise TypeError("a bool")
                x, y, w, h = (float(v) for v in bbox)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path}: annotation {ann.get('id')!r} (image {image_id}) has a non-numeric bbox {bbox!r}; "
                    "expected four numbers [x, y, width, height]"
                ) from None
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
