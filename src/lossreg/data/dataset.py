"""A ``torch`` dataset over a :class:`~lossreg.data.records.DetectionSet`, built from a recipe.

Each item is ``(image, target)``:

- ``image``: ``float32 [3, H, W]`` RGB in 0-1 (after augmentation, resize, letterbox);
- ``target``: ``{"boxes" float32 [G, 4] xyxy px, "labels" int64 [G], "ignore_boxes" float32
  [K, 4], "image_id" int, "orig_size" (h, w) of the file, "scale" (sy, sx)}``, where
  ``scale`` maps boxes on ``image`` back to the original image
  (:func:`~lossreg.data.transforms.unscale_boxes`; exact in evaluation, where nothing
  geometric is augmented).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .._registry import close_matches
from .coco import read_coco
from .records import DetectionRecord, DetectionSet
from .synthetic import read_synthetic
from .transforms import DetectionTransforms, build_transforms
from .voc import read_voc

__all__ = ["DetectionDataset", "build_dataset", "check_dataset_params", "load_image", "read_dataset"]


def load_image(record: DetectionRecord) -> np.ndarray:
    """The record's image as ``uint8 [H, W, 3]`` RGB.

    Raises ``ValueError`` naming the file when it cannot be decoded or its size differs
    from the annotation's (the boxes would be wrong), ``FileNotFoundError`` if it is gone.
    """
    try:
        with Image.open(record.image_path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {record.image_path!r} does not exist") from None
    except OSError as exc:
        raise ValueError(f"{record.image_path}: cannot read image: {exc}") from None
    if rgb.shape[:2] != (record.height, record.width):
        raise ValueError(
            f"{record.image_path}: image is {rgb.shape[1]}x{rgb.shape[0]} but its annotation says "
            f"{record.width}x{record.height}"
        )
    return rgb


class DetectionDataset(torch.utils.data.Dataset):
    """Images and targets of ``data`` through ``transforms`` (``None``: original size, no augmentation).

    See the module docstring for the item format. ``class_names`` and ``num_classes``
    come from ``data``.
    """

    def __init__(self, data: DetectionSet, transforms: DetectionTransforms | None = None) -> None:
        self.data = data
        self.transforms = transforms

    @property
    def class_names(self) -> list[str]:
        return self.data.class_names

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        record = self.data[index]
        image = load_image(record)
        if self.transforms is not None:
            out = self.transforms(image, record.boxes, record.labels, record.ignore_boxes)
            image, boxes, labels, ignore, scale = (
                out["image"],
                out["boxes"],
                out["labels"],
                out["ignore_boxes"],
                out["scale"],
            )
        else:
            boxes, labels, ignore, scale = record.boxes, record.labels, record.ignore_boxes, (1.0, 1.0)
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            "ignore_boxes": torch.as_tensor(ignore, dtype=torch.float32).reshape(-1, 4),
            "image_id": int(record.image_id),
            "orig_size": (record.height, record.width),
            "scale": (float(scale[0]), float(scale[1])),
        }
        return tensor, target


def _check_params(func: Any, params: Mapping[str, Any], where: str, skip: Sequence[str] = ()) -> None:
    accepted = [p for p in inspect.signature(func).parameters if p not in skip]
    for key in params:
        if key not in accepted:
            near = close_matches(str(key), accepted)
            hint = f"did you mean {', '.join(repr(n) for n in near)}?" if near else f"it takes {', '.join(accepted)}"
            raise TypeError(f"{where}: unknown parameter {key!r}; {hint}")


def check_dataset_params(dataset_cfg: Any) -> None:
    """Raise ``TypeError`` for a ``params`` key the split's reader does not take (nothing is read)."""
    from .synthetic import make_synthetic

    readers = {
        "coco": (read_coco, ("ann_file", "image_root")),
        "voc": (read_voc, ("root", "split", "class_names")),
        "synthetic": (make_synthetic, ("root",)),
    }
    if dataset_cfg.format in readers:
        func, skip = readers[dataset_cfg.format]
        _check_params(func, dict(dataset_cfg.params), f"{dataset_cfg.format} dataset params", skip=skip)


def read_dataset(dataset_cfg: Any, class_names: Sequence[str] | None = None) -> DetectionSet:
    """Read the split a :class:`lossreg.recipe.DatasetCfg` describes into a :class:`DetectionSet`.

    ``coco``: ``read_coco(ann_file, root, **params)``; ``voc``: ``read_voc(root, split,
    class_names, **params)`` (``split`` None: every XML file); ``synthetic``:
    ``read_synthetic(root, **params)`` with ``params.split`` defaulting to ``split`` or
    ``"train"`` (``root``: the cache folder, default ``~/.cache/lossreg/synthetic``).
    ``class_names`` fixes the label order (VOC; give the training set's for validation).
    ``max_images`` keeps the first N records (in the file's order).

    Raises ``ValueError`` for a missing path or unknown format and ``TypeError`` for a
    parameter the reader does not take, plus the readers' own errors.
    """
    fmt = dataset_cfg.format
    params = dict(dataset_cfg.params)
    if fmt == "coco":
        if dataset_cfg.ann_file is None or dataset_cfg.root is None:
            raise ValueError("a coco dataset needs 'ann_file' (JSON) and 'root' (image folder)")
        _check_params(read_coco, params, "coco dataset params", skip=("ann_file", "image_root"))
        data = read_coco(dataset_cfg.ann_file, dataset_cfg.root, **params)
    elif fmt == "voc":
        if dataset_cfg.root is None:
            raise ValueError("a voc dataset needs 'root' (the folder holding Annotations/)")
        _check_params(read_voc, params, "voc dataset params", skip=("root", "split", "class_names"))
        data = read_voc(dataset_cfg.root, dataset_cfg.split, class_names=class_names, **params)
    elif fmt == "synthetic":
        from .synthetic import make_synthetic

        params.setdefault("split", dataset_cfg.split or "train")
        _check_params(make_synthetic, params, "synthetic dataset params", skip=("root",))
        data = read_synthetic(dataset_cfg.root, **params)
    else:
        raise ValueError(f"unknown dataset format {fmt!r}; expected 'coco', 'voc' or 'synthetic'")
    limit = getattr(dataset_cfg, "max_images", None)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_images must be a positive integer, got {limit!r}")
        data.records = data.records[:limit]
    return data


def build_dataset(
    dataset_cfg: Any,
    data_cfg: Any,
    train: bool = True,
    class_names: Sequence[str] | None = None,
) -> DetectionDataset:
    """A :class:`DetectionDataset` for one split of a recipe.

    Args:
        dataset_cfg: ``recipe.data.train`` or ``recipe.data.val`` (a ``DatasetCfg``).
        data_cfg: ``recipe.data`` (``image_size`` and ``augment``).
        train: apply ``augment`` (evaluation only resizes).
        class_names: label order for VOC (see :func:`read_dataset`).

    Errors: see :func:`read_dataset` and :func:`~lossreg.data.transforms.build_transforms`.
    """
    data = read_dataset(dataset_cfg, class_names=class_names)
    transforms = build_transforms(data_cfg.augment, data_cfg.image_size, train=train)
    return DetectionDataset(data, transforms)
