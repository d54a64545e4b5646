"""Bbox-aware augmentation (albumentations) and resizing to the recipe's ``image_size``.

``build_transforms(augment, image_size, train)`` returns a :class:`DetectionTransforms`:
called on an ``uint8 [H, W, 3]`` image with ``[G, 4]`` xyxy pixel boxes, it applies the
recipe's augmentations (training only), resizes, and reports the scale factors that map
the network's boxes back to the image it was given (:func:`unscale_boxes`).

``image_size`` follows the recipe:

- an int ``S``: letterbox. The longer side becomes ``S`` (aspect ratio kept), then the
  image is zero-padded at the bottom/right to ``S x S`` (``PadIfNeeded``, top-left), so
  boxes are only scaled, never shifted.
- a pair ``(a, b)``: keep-ratio resize as mmdetection's ``img_scale`` does: the largest
  scale with the shorter side <= ``min(a, b)`` and the longer side <= ``max(a, b)``
  (``[800, 1333]``: COCO's usual 800 px short side, at most 1333 px long). No padding:
  :func:`~lossreg.data.collate.collate` pads the batch to a multiple of 32.

Augmentations are albumentations classes by name with their keyword arguments (the
recipe's ``data.augment``: ``[{name: HorizontalFlip, p: 0.5}]``); ``OneOf`` / ``SomeOf``
/ ``Sequential`` take a nested ``transforms`` list of the same form.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import numpy as np

from .._registry import close_matches

__all__ = ["DetectionTransforms", "build_augmentation", "build_transforms", "resized_shape", "unscale_boxes"]


def _spec(item: Any, where: str) -> tuple[str, dict[str, Any]]:
    """``(name, params)`` from a ComponentSpec, a name, a ``{name, **params}`` mapping or a pair."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, Mapping):
        if "name" not in item:
            raise ValueError(f"{where}: a transform mapping needs a 'name' key, got keys {sorted(item)}")
        return str(item["name"]), {k: v for k, v in item.items() if k != "name"}
    if hasattr(item, "name") and hasattr(item, "params"):  # lossreg.recipe.ComponentSpec
        return str(item.name), dict(item.params)
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str):
        return item[0], dict(item[1])
    raise ValueError(f"{where}: expected a transform name, {{name, **params}} or (name, params), got {item!r}")


def _transform_names() -> list[str]:
    return sorted(
        n
        for n in dir(A)
        if isinstance(getattr(A, n), type)
        and issubclass(getattr(A, n), (A.BasicTransform, A.BaseCompose))
        and n not in ("Compose", "BasicTransform", "BaseCompose")
    )


def build_augmentation(item: Any, where: str = "augment") -> A.BasicTransform | A.BaseCompose:
    """One albumentations transform from ``(name, params)`` (see :func:`_spec` for the forms).

    Raises ``ValueError`` for an unknown name (with close matches) or a rejected value, and
    ``TypeError`` for a parameter the transform does not take (with close matches).
    """
    name, params = _spec(item, where)
    cls = getattr(A, name, None)
    if name not in _transform_names() or cls is None:
        near = close_matches(name, _transform_names())
        hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        raise ValueError(f"{where}: unknown albumentations transform {name!r}{hint}")
    signature = inspect.signature(cls.__init__).parameters
    accepted = [p for p, v in signature.items() if p != "self" and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
    takes_any = any(v.kind == v.VAR_KEYWORD for v in signature.values())
    for key in params:
        if key not in accepted and not takes_any:
            near = close_matches(key, accepted)
            hint = f"did you mean {', '.join(repr(n) for n in near)}?" if near else f"it takes {', '.join(accepted)}"
            raise TypeError(f"{where}: transform {name!r} has no parameter {key!r}; {hint}")
    if issubclass(cls, A.BaseCompose):
        inner = params.get("transforms")
        if not isinstance(inner, (list, tuple)) or not inner:
            raise ValueError(f"{where}: {name!r} needs a non-empty 'transforms' list")
        params = {
            **params,
            "transforms": [build_augmentation(t, f"{where}.transforms[{i}]") for i, t in enumerate(inner)],
        }
    try:
        return cls(**params)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: bad parameters for {name!r}: {exc}") from None


def resized_shape(height: int, width: int, image_size: int | Sequence[int]) -> tuple[int, int]:
    """The ``(h, w)`` an ``height x width`` image is resized to (before any padding); see the module doc."""
    if isinstance(image_size, (int, np.integer)):
        scale = int(image_size) / max(height, width)
    else:
        short, long = sorted(int(s) for s in image_size)
        scale = min(short / min(height, width), long / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def unscale_boxes(boxes: Any, scale: Sequence[float], orig_size: Sequence[int] | None = None) -> Any:
    """Map ``[N, 4]`` xyxy boxes from the network's input back to the original image.

    ``scale`` is a sample's ``(sy, sx)``; with ``orig_size`` ``(h, w)`` the result is clipped
    to the image. Works on numpy arrays and torch tensors (a new array/tensor is returned).
    """
    sy, sx = float(scale[0]), float(scale[1])
    div = [sx, sy, sx, sy]
    if hasattr(boxes, "new_tensor"):  # torch
        out = boxes / boxes.new_tensor(div)
        if orig_size is not None:
            h, w = orig_size
            out[:, 0::2] = out[:, 0::2].clamp(0, float(w))
            out[:, 1::2] = out[:, 1::2].clamp(0, float(h))
        return out
    out = np.asarray(boxes, dtype=np.float32) / np.asarray(div, dtype=np.float32)
    if orig_size is not None:
        h, w = orig_size
        out[:, 0::2] = np.clip(out[:, 0::2], 0, w)
        out[:, 1::2] = np.clip(out[:, 1::2], 0, h)
    return out


def _bbox_params(min_visibility: float = 0.0, min_size: float = 0.0) -> A.BboxParams:
    return A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        min_visibility=min_visibility,
        min_width=min_size,
        min_height=min_size,
        clip=True,
        filter_invalid_bboxes=True,
    )


def _clip_and_filter(sample: dict[str, Any], h: int, w: int) -> dict[str, Any]:
    """``sample`` with its boxes clipped to the ``h x w`` image and those left without area dropped
    (what an albumentations step with ``clip=True, filter_invalid_bboxes=True`` does to the boxes)."""
    boxes = np.array(sample["bboxes"], dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(sample["labels"], dtype=np.int64).reshape(-1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # albumentations drops < 1e-7 px^2 unclipped
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    keep = (area >= 1e-7) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {**sample, "bboxes": boxes[keep], "labels": labels[keep]}


class DetectionTransforms:
    """Augment (training), resize and pad one sample; see the module docstring.

    ``self(image, boxes, labels, ignore_boxes=None)`` takes an ``uint8 [H, W, 3]`` image,
    ``[G, 4]`` xyxy pixel boxes, ``[G]`` labels and optional ``[K, 4]`` ignore boxes, and
    returns ``{"image" uint8 [H', W', 3], "boxes" float32 [G', 4], "labels" int64 [G'],
    "ignore_boxes" float32 [K', 4], "scale" (sy, sx), "input_size" (h, w)}``: ``scale``
    maps boxes in the output back to the ``input_size`` image that entered the resize
    (the original image when nothing geometric was augmented, as in evaluation).
    Boxes made smaller than ``min_visibility`` of their area or 1 px by an augmentation
    are dropped. Raises ``ValueError`` on an image that is not ``[H, W, 3]``.
    """

    def __init__(
        self,
        augment: Sequence[A.BasicTransform | A.BaseCompose] = (),
        image_size: int | Sequence[int] = 512,
        min_visibility: float = 0.1,
        seed: int | None = None,
    ) -> None:
        if isinstance(image_size, (int, np.integer)):
            sizes: tuple[int, ...] = (int(image_size),)
        else:
            sizes = tuple(int(s) for s in image_size)
            if len(sizes) != 2:
                raise ValueError(f"image_size must be an int or a pair, got {image_size!r}")
        if min(sizes) < 1:
            raise ValueError(f"image_size must be positive, got {image_size!r}")
        self.image_size: int | tuple[int, int] = sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])
        self.augment = None
        if augment:
            with warnings.catch_warnings():  # colour-only augmentation leaves the boxes alone: fine
                warnings.filterwarnings("ignore", message="Got processor for bboxes, but no transform")
                self.augment = A.Compose(list(augment), bbox_params=_bbox_params(min_visibility, 1.0), seed=seed)
        self._resizers: dict[tuple[int, int], A.Compose] = {}
        side = self.image_size if isinstance(self.image_size, int) else None
        self.pad = (
            A.Compose(
                [A.PadIfNeeded(min_height=side, min_width=side, position="top_left", border_mode=0, fill=0)],
                bbox_params=_bbox_params(),
            )
            if side is not None
            else None
        )

    def _resizer(self, shape: tuple[int, int]) -> A.Compose:
        if shape not in self._resizers:
            if len(self._resizers) > 64:
                self._resizers.clear()
            self._resizers[shape] = A.Compose([A.Resize(*shape)], bbox_params=_bbox_params())
        return self._resizers[shape]

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        ignore_boxes: np.ndarray | None = None,
    ) -> dict[str, Any]:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an [H, W, 3] RGB image, got shape {image.shape}")
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        ign = np.zeros((0, 4), np.float32) if ignore_boxes is None else np.asarray(ignore_boxes, np.float32)
        all_boxes = np.concatenate([boxes, ign.reshape(-1, 4)])
        all_labels = np.concatenate([labels, np.full(len(ign), -1, dtype=np.int64)])  # -1: ignore region
        sample = {"image": image, "bboxes": all_boxes, "labels": all_labels}
        if self.augment is not None:
            sample = self.augment(**sample)
        in_h, in_w = sample["image"].shape[:2]
        out_h, out_w = resized_shape(in_h, in_w, self.image_size)
        if (out_h, out_w) == (in_h, in_w):
            # an identity resize: albumentations would copy the image and round-trip the boxes
            # through normalised coordinates (about 1 ms a sample) only to clip and filter them
            sample = _clip_and_filter(sample, in_h, in_w)
        else:
            sample = self._resizer((out_h, out_w))(**sample)
        side = self.image_size if isinstance(self.image_size, int) else None  # the pad exists for a square size only
        if self.pad is not None and side is not None and (out_h < side or out_w < side):
            sample = self.pad(**sample)
        out_boxes = np.asarray(sample["bboxes"], dtype=np.float32).reshape(-1, 4)
        out_labels = np.asarray(sample["labels"], dtype=np.int64).reshape(-1)
        keep = out_labels >= 0
        return {
            "image": sample["image"],
            "boxes": out_boxes[keep],
            "labels": out_labels[keep],
            "ignore_boxes": out_boxes[~keep],
            "scale": (out_h / in_h, out_w / in_w),
            "input_size": (in_h, in_w),
        }


def build_transforms(
    augment: Sequence[Any] = (),
    image_size: int | Sequence[int] = 512,
    train: bool = True,
    min_visibility: float = 0.1,
    seed: int | None = None,
) -> DetectionTransforms:
    """The sample transform for a recipe's ``data.augment`` and ``data.image_size``.

    ``augment`` items are ``ComponentSpec``s, names, ``{name, **params}`` mappings or
    ``(name, params)`` pairs of albumentations classes; they apply only when ``train``.
    Raises ``ValueError`` (unknown name, with suggestions; bad value) or ``TypeError``
    (unknown parameter) naming the item, e.g. ``augment[0]``.
    """
    steps = [build_augmentation(item, f"augment[{i}]") for i, item in enumerate(augment)] if train else []
    return DetectionTransforms(steps, image_size, min_visibility=min_visibility, seed=seed)
