"""Read a Pascal VOC folder (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``).

VOC stores 1-based inclusive pixel indices: a box ``xmin=1 .. xmax=W`` covers the whole
image. They become continuous xyxy pixels as detectron2 does: ``(xmin - 1, ymin - 1, xmax,
ymax)``, so that box is ``(0, 0, W, H)``. A box with ``xmax <= xmin`` or ``ymax <= ymin``
in the file (a point or an inverted box), or with a side below ``min_size`` after
clipping, is degenerate: dropped and counted in one
:class:`~lossreg.data.records.DegenerateBoxWarning` per split. ``difficult`` objects go
to ``ignore_boxes``, their class to ``ignore_labels`` (the VOC metrics need it). The
image is the XML file's stem with ``.jpg`` (or ``.jpeg``/``.png``) in ``JPEGImages/``:
the XML ``<filename>`` field is not trusted.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from .records import DetectionSet, make_record, warn_dropped

__all__ = ["parse_voc_xml", "read_voc"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def parse_voc_xml(xml_file: str | os.PathLike[str]) -> dict:
    """Parse one VOC annotation file.

    Returns ``{"width", "height" (None when <size> is missing or zero), "objects": [{"name",
    "box" (x1, y1, x2, y2 as written, 1-based), "difficult"}]}``.
    Raises ``ValueError`` naming the file when it is not XML or an object lacks a name
    or a numeric ``bndbox``.
    """
    path = Path(xml_file)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path}: unreadable VOC XML: {exc}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read VOC XML: {exc.strerror or exc}") from None
    if root.tag != "annotation":
        raise ValueError(f"{path}: not a VOC annotation (root element <{root.tag}>, expected <annotation>)")
    width = height = None
    size = root.find("size")
    if size is not None:
        try:
            width = int(float(size.findtext("width", "0"))) or None
            height = int(float(size.findtext("height", "0"))) or None
        except ValueError:
            raise ValueError(f"{path}: <size> must hold numbers") from None
    objects = []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise ValueError(f"{path}: object {i} has no <name>")
        bnd = obj.find("bndbox")
        try:
            box = [float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore[union-attr]
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"{path}: object {i} ({name}) lacks a numeric <bndbox> xmin/ymin/xmax/ymax") from None
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "")
        objects.append({"name": name, "box": box, "difficult": difficult})
    return {"width": width, "height": height, "objects": objects}


def _split_ids(root: Path, split: str | None) -> list[str]:
    if split is None:
        ann_dir = root / "Annotations"
        if not ann_dir.is_dir():
            raise FileNotFoundError(f"VOC folder {str(root)!r} has no Annotations/ folder")
        return sorted(p.stem for p in ann_dir.glob("*.xml"))
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        have = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt"))
        raise FileNotFoundError(f"VOC split file {str(split_file)!r} does not exist (splits found: {have})")
    return [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]


def _find_image(root: Path, stem: str) -> Path:
    for suffix in _IMAGE_SUFFIXES:
        cand = root / "JPEGImages" / f"{stem}{suffix}"
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"VOC image file {str(root / 'JPEGImages' / (stem + '.jpg'))!r} does not exist")


def read_voc(
    root: str | os.PathLike[str],
    split: str | None = "trainval",
    class_names: Sequence[str] | None = None,
    min_size: float = 1.0,
) -> DetectionSet:
    """Read the ``split`` of the VOC folder ``root`` (``None``: every XML in Annotations/).

    Args:
        root: folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``.
        split: file stem in ``ImageSets/Main`` (``train``, ``val``, ``trainval``, ...).
        class_names: label order; by default the sorted names found in the split. Give
            the training set's ``class_names`` when reading its validation split.
        min_size: boxes with a clipped side below this many pixels are dropped.

    Records get ``image_id`` = position in the split.

    Raises:
        FileNotFoundError: the split file, an annotation or an image file is missing (named).
        ValueError: an unreadable XML file (named), or an object whose class is not in
            the given ``class_names``.
    """
    root = Path(root)
    if root.is_file():
        raise ValueError(f"VOC root {str(root)!r} is a file; give the folder that holds Annotations/ and JPEGImages/")
    if not root.is_dir():
        raise FileNotFoundError(f"VOC folder {str(root)!r} does not exist")
    if class_names is not None:
        repeated = sorted({n for n in class_names if list(class_names).count(n) > 1})
        if repeated:
            raise ValueError(f"class_names repeats {', '.join(map(repr, repeated))}; each class needs its own name")
    ids = _split_ids(root, split)
    parsed = []
    for stem in ids:
        xml_file = root / "Annotations" / f"{stem}.xml"
        if not xml_file.is_file():
            raise FileNotFoundError(f"VOC annotation file {str(xml_file)!r} does not exist")
        parsed.append((stem, xml_file, parse_voc_xml(xml_file), _find_image(root, stem)))

    if class_names is None:
        names = sorted({o["name"] for _, _, ann, _ in parsed for o in ann["objects"]})
    else:
        names = list(class_names)
    label_of = {n: i for i, n in enumerate(names)}

    records = []
    dropped = 0
    examples: list[str] = []
    for index, (_stem, xml_file, ann, image_path) in enumerate(parsed):
        width, height = ann["width"], ann["height"]
        if width is None or height is None:
            from PIL import Image

            with Image.open(image_path) as im:  # header only
                width, height = im.size
        boxes, labels, ignore, ignore_labels = [], [], [], []
        bad = 0
        for obj in ann["objects"]:
            if obj["name"] not in label_of:
                raise ValueError(f"{xml_file}: class {obj['name']!r} is not in class_names {names}")
            x1, y1, x2, y2 = obj["box"]
            if x2 <= x1 or y2 <= y1:  # a point or inverted box in VOC's inclusive indices
                bad += 1
                continue
            box = [x1 - 1.0, y1 - 1.0, x2, y2]
            if obj["difficult"]:
                ignore.append(box)
                ignore_labels.append(label_of[obj["name"]])
            else:
                boxes.append(box)
                labels.append(label_of[obj["name"]])
        record, n_bad = make_record(image_path, width, height, boxes, labels, ignore, index, min_size, ignore_labels)
        bad += n_bad
        if bad:
            dropped += bad
            examples.append(xml_file.name)
        records.append(record)
    warn_dropped(dropped, f"{root} ({split or 'all'})", min_size, examples)
    return DetectionSet(records=records, class_names=names, source=f"voc:{root}:{split or 'all'}")
