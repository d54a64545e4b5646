"""A deterministic synthetic detection set: coloured shapes on cluttered backgrounds.

``make_synthetic(split="train", num_images=200, image_size=256, seed=0)`` writes COCO JSON
plus PNG images into a cache folder and returns their paths; the same arguments give
byte-identical files, and a finished folder is re-used. It is the quick start's dataset
and the tests' fixture::

    ann_file, image_dir = make_synthetic(split="train", num_images=200, seed=0)
    ds = read_coco(ann_file, image_dir)          # or read_synthetic(...)

Each image holds 1-8 objects of the classes in :data:`CLASS_NAMES`, with longer sides from
``min_size`` (8 px) to half the image (log-uniform) and aspect ratios up to 3:1 either way, overlapping
(an object may cover at most 40% of an earlier one), over a gradient background with
clutter that is never an object: blurred blobs, thin lines, specks smaller than any
object, and Gaussian noise. Boxes are the tight extent of each drawn shape.

The cache is ``$LOSSREG_CACHE/synthetic`` (default ``~/.cache/lossreg/synthetic``); each
parameter set has its own ``<split>-<n>x<size>-seed<seed>-<hash>`` folder, built in a
temporary folder whose ``COMPLETE`` marker is written last and then renamed into place,
so a reader never sees a half-written set.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .coco import read_coco
from .records import DetectionSet

__all__ = ["CLASS_NAMES", "GENERATOR_VERSION", "cache_dir", "make_synthetic", "read_synthetic"]

CLASS_NAMES = ("ellipse", "rectangle", "triangle", "cross")
#: Bumped whenever the drawing changes, so old cache folders are not re-used.
GENERATOR_VERSION = 1
CACHE_ENV = "LOSSREG_CACHE"
_MARKER = "COMPLETE"
_MIN_SIDE = 8  # the smallest object's longer side, in pixels (default)
_MAX_OBJECTS = 8  # objects per image at most (default)
_MAX_COVER = 0.4  # a new object may cover at most this fraction of an earlier one's box


def cache_dir() -> Path:
    """lossreg's cache folder: ``$LOSSREG_CACHE`` if set, else ``~/.cache/lossreg``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lossreg"


def _check_args(split: str, num_images: int, image_size: int, seed: int, min_size: int = 8, max_objects: int = 8) -> None:
    if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", split):
        raise ValueError(f"split must be a non-empty name of letters, digits, '_', '-', '.', got {split!r}")
    checks = (("num_images", num_images, 1), ("image_size", image_size, 32), ("seed", seed, 0),
              ("min_size", min_size, 4), ("max_objects", max_objects, 1))
    for name, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if min_size > image_size // 2:
        raise ValueError(f"min_size={min_size} must be at most half of image_size={image_size}")


def _folder_name(split: str, num_images: int, image_size: int, seed: int, min_size: int, max_objects: int) -> str:
    params = {"v": GENERATOR_VERSION, "split": split, "n": num_images, "size": image_size, "seed": seed}
    # only non-default values enter the name, so sets generated before these options keep their folders
    if min_size != _MIN_SIDE:
        params["min_size"] = min_size
    if max_objects != _MAX_OBJECTS:
        params["max_objects"] = max_objects
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return f"{split}-{num_images}x{image_size}-seed{seed}-{digest}"


# --------------------------------------------------------------------------- drawing


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    base = rng.uniform(40, 215, 3)
    slope = rng.uniform(-50, 50, (2, 3))
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    bg = base + ramp[:, None, None] * slope[0] + ramp[None, :, None] * slope[1]
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    # soft blobs: low-contrast, blurred, edge-less, never objects
    layer = img.copy()
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(2, 6))):
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(size / 12, size / 4)
        tint = tuple(int(v) for v in np.clip(base + rng.uniform(-45, 45, 3), 0, 255))
        draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r], fill=tint)
    img = layer.filter(ImageFilter.GaussianBlur(radius=size / 24))
    # thin lines and specks (smaller than any object)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 7))):
        x1, y1, x2, y2 = (float(v) for v in rng.uniform(0, size, 4))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.line([x1, y1, x2, y2], fill=colour, width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(0, 12))):
        x, y = (float(v) for v in rng.uniform(0, size - 3, 2))
        d = float(rng.uniform(1, 3))
        draw.ellipse([x, y, x + d, y + d], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def _shape_mask(rng: np.random.Generator, cls: int, size: int, x0: float, y0: float, w: float, h: float) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    x1, y1 = x0 + w - 1, y0 + h - 1
    name = CLASS_NAMES[cls]
    if name == "ellipse":
        draw.ellipse([x0, y0, x1, y1], fill=255)
    elif name == "rectangle":
        draw.rectangle([x0, y0, x1, y1], fill=255)
    elif name == "triangle":
        u = float(rng.uniform(0, 1))
        side = int(rng.integers(4))  # which side the apex points to
        if side == 0:
            pts = [(x0 + u * (w - 1), y0), (x0, y1), (x1, y1)]
        elif side == 1:
            pts = [(x0 + u * (w - 1), y1), (x0, y0), (x1, y0)]
        elif side == 2:
            pts = [(x0, y0 + u * (h - 1)), (x1, y0), (x1, y1)]
        else:
            pts = [(x1, y0 + u * (h - 1)), (x0, y0), (x0, y1)]
        draw.polygon(pts, fill=255)
    else:  # cross: a plus sign of two bars
        t = max(2.0, min(w, h) * float(rng.uniform(0.25, 0.4)))
        cx, cy = x0 + (w - 1) / 2, y0 + (h - 1) / 2
        draw.rectangle([x0, cy - t / 2, x1, cy + t / 2], fill=255)
        draw.rectangle([cx - t / 2, y0, cx + t / 2, y1], fill=255)
    return mask


def _cover(box: list[float], other: list[float]) -> float:
    """Fraction of ``other``'s area inside ``box`` (both xyxy)."""
    iw = min(box[2], other[2]) - max(box[0], other[0])
    ih = min(box[3], other[3]) - max(box[1], other[1])
    area = (other[2] - other[0]) * (other[3] - other[1])
    return max(iw, 0) * max(ih, 0) / area if area > 0 else 1.0


def _draw_image(
    rng: np.random.Generator, size: int, min_size: int = _MIN_SIDE, max_objects: int = _MAX_OBJECTS
) -> tuple[np.ndarray, list[tuple[int, list[float], int]]]:
    """One image ``uint8 [size, size, 3]`` and its objects ``(class, xyxy box, pixel area)``."""
    img = _background(rng, size)
    pixels = np.asarray(img)
    objects: list[tuple[int, list[float], int]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(len(CLASS_NAMES)))
        long_side = float(np.exp(rng.uniform(np.log(min_size), np.log(size / 2))))
        short_side = max(min_size / 2, long_side / float(np.exp(rng.uniform(0, np.log(3)))))
        w, h = (long_side, short_side) if rng.uniform() < 0.5 else (short_side, long_side)
        for _attempt in range(20):
            x0 = float(rng.uniform(0, size - w))
            y0 = float(rng.uniform(0, size - h))
            cand = [x0, y0, x0 + w, y0 + h]
            if all(_cover(cand, box) <= _MAX_COVER for _, box, _ in objects):
                break
        else:
            continue
        mask = _shape_mask(rng, cls, size, x0, y0, w, h)
        bbox = mask.getbbox()  # (left, top, right + 1, bottom + 1): continuous xyxy
        if bbox is None:
            continue
        m = np.asarray(mask) > 0
        under = pixels[m].mean(axis=0)
        for _try in range(10):  # a colour that stands out from what lies beneath
            colour = rng.integers(0, 256, 3)
            if np.abs(colour - under).sum() > 120:
                break
        img.paste(tuple(int(v) for v in colour), (0, 0, size, size), mask)
        pixels = np.asarray(img)
        objects.append((cls, [float(v) for v in bbox], int(m.sum())))
    sigma = float(rng.uniform(0, 6))
    noisy = pixels.astype(np.float32) + rng.normal(0, sigma, pixels.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), objects


def _generate(folder: Path, split: str, num_images: int, image_size: int, seed: int, min_size: int, max_objects: int) -> None:
    image_dir = folder / "images"
    image_dir.mkdir(parents=True)
    split_code = zlib.crc32(split.encode())
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, split_code, i])
        pixels, objects = _draw_image(rng, image_size, min_size, max_objects)
        file_name = f"{i:06d}.png"
        Image.fromarray(pixels).save(image_dir / file_name, format="PNG", compress_level=1)
        images.append({"id": i + 1, "file_name": file_name, "width": image_size, "height": image_size})
        for cls, (x1, y1, x2, y2), area in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": area,
                    "iscrowd": 0,
                }
            )
    data = {
        "info": {
            "description": "lossreg synthetic shapes",
            "generator_version": GENERATOR_VERSION,
            "split": split,
            "num_images": num_images,
            "image_size": image_size,
            "seed": seed,
            "min_size": min_size,
            "max_objects": max_objects,
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASS_NAMES)],
    }
    (folder / "annotations.json").write_text(json.dumps(data, separators=(",", ":")))
    (folder / _MARKER).write_text("ok\n")  # last: the folder is complete


def make_synthetic(
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    num_images: int = 200,
    image_size: int = 256,
    seed: int = 0,
    min_size: int = _MIN_SIDE,
    max_objects: int = _MAX_OBJECTS,
) -> tuple[Path, Path]:
    """Generate (or re-use) the synthetic set; returns ``(ann_file, image_dir)``.

    Args:
        root: cache folder holding one sub-folder per parameter set
            [``cache_dir() / "synthetic"``].
        split: any name; different splits with the same seed draw different images.
        num_images: images to draw (image ``i`` depends only on ``seed``, ``split``, ``i``).
        image_size: square image side in pixels (>= 32).
        seed: random seed (>= 0).
        min_size: the smallest object's longer side in pixels (>= 4, at most half the image);
            short sides are at least half of it.
        max_objects: objects per image are drawn uniformly from 1..max_objects.

    Raises ``ValueError`` on bad arguments. 200 images of 256 px take a few seconds.
    """
    _check_args(split, num_images, image_size, seed, min_size, max_objects)
    num_images, image_size, seed, min_size, max_objects = map(int, (num_images, image_size, seed, min_size, max_objects))
    base = Path(root).expanduser() if root is not None else cache_dir() / "synthetic"
    final = base / _folder_name(split, num_images, image_size, seed, min_size, max_objects)
    if not (final / _MARKER).is_file():
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=base))
        try:
            _generate(tmp, split, num_images, image_size, seed, min_size, max_objects)
            if final.exists() and not (final / _MARKER).is_file():
                shutil.rmtree(final)  # a leftover without its marker: incomplete
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / _MARKER).is_file():  # not a concurrent writer's finished copy
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final / "annotations.json", final / "images"


def read_synthetic(root: str | os.PathLike[str] | None = None, **params) -> DetectionSet:
    """``read_coco(*make_synthetic(root, **params))``: the synthetic set as a :class:`DetectionSet`."""
    ann_file, image_dir = make_synthetic(root, **params)
    ds = read_coco(ann_file, image_dir)
    ds.source = f"synthetic:{ann_file.parent.name}"
    return ds
