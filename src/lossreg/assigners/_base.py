"""Shared machinery of the assigners: the call convention of docs/api.md, "Assigners".

Every assigner works on the ground truths of a whole batch at once, concatenated
image by image into ``N`` rows (:class:`GtBatch`). Per-gt work (distances,
top-k, thresholds) is row-wise and therefore identical whether an image is
assigned alone or inside a batch; the only cross-gt step, deciding which gt an
anchor wanted by several gts gets, runs per image on sparse ``(gt, anchor)``
pairs (:func:`resolve_pairs`) or as a per-image running maximum. Dense
``[rows, A]`` intermediates are built for at most ``chunk_elements`` pairs at a
time, so 1,000 gts per image cost memory proportional to the chunk, not to ``G``.

Ties are broken towards the lower index everywhere (lower anchor index in
top-k selections, lower gt index in conflicts), which makes every result
deterministic and independent of batching, chunking and thread count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..ops.geometry import anchor_centers
from .result import IGNORED, AssignResult

__all__ = [
    "AssignInputs",
    "AssignOutput",
    "BaseAssigner",
    "GtBatch",
    "resolve_pairs",
    "row_chunks",
]

#: Default bound on the (gt, anchor) pairs of one dense intermediate, per device type. On CPU a chunk
#: (1 MiB per fp32 matrix) stays in cache, which makes batched assignment faster than one image at a
#: time; an accelerator wants large launches.
DEFAULT_CHUNK_ELEMENTS = {"cpu": 1 << 18}
DEFAULT_CHUNK_ELEMENTS_ACCEL = 1 << 24


def default_chunk_elements(device: torch.device) -> int:
    return DEFAULT_CHUNK_ELEMENTS.get(device.type, DEFAULT_CHUNK_ELEMENTS_ACCEL)


def row_chunks(num_rows: int, row_len: int, budget: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` row ranges whose ``rows * row_len`` stays within ``budget`` (at least one row each)."""
    step = max(1, budget // max(row_len, 1))
    for start in range(0, num_rows, step):
        yield start, min(start + step, num_rows)


def resolve_pairs(
    num_images: int, num_anchors: int, image: Tensor, anchor: Tensor, local: Tensor, score: Tensor
) -> tuple[Tensor, Tensor]:
    """For each (image, anchor), the gt of the highest-scoring pair; ties go to the lower gt index.

    Args:
        image, anchor, local: long ``[P]``: image, anchor and gt index (within the image) of each pair.
        score: float ``[P]``.

    Returns:
        ``inds`` long ``[B, A]`` (``-1`` where an anchor has no pair) and ``best`` float ``[B, A]``
        (``-inf`` there).
    """
    size = num_images * num_anchors
    best = torch.full((size,), float("-inf"), dtype=score.dtype, device=score.device)
    inds = torch.full((size,), -1, dtype=torch.long, device=score.device)
    if score.numel() == 0:
        return inds.view(num_images, num_anchors), best.view(num_images, num_anchors)
    key = image * num_anchors + anchor
    best.scatter_reduce_(0, key, score, reduce="amax", include_self=True)
    win = score == best[key]
    big = torch.iinfo(torch.long).max
    low = torch.full((size,), big, dtype=torch.long, device=score.device)
    low.scatter_reduce_(0, key[win], local[win], reduce="amin", include_self=True)
    inds = torch.where(low == big, inds, low)
    return inds.view(num_images, num_anchors), best.view(num_images, num_anchors)


# --------------------------------------------------------------------------- inputs


@dataclass
class GtBatch:
    """Ground truths of ``B`` images concatenated image by image into ``N`` rows."""

    boxes: Tensor  # [N, 4]
    labels: Tensor  # [N] long
    image: Tensor  # [N] long: image of each row
    local: Tensor  # [N] long: index of each row within its image
    counts: tuple[int, ...]  # gts per image (length B)

    @property
    def num(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def offsets(self) -> list[int]:
        """``B + 1`` row offsets: image ``b`` owns rows ``offsets[b]:offsets[b + 1]``."""
        out = [0]
        for c in self.counts:
            out.append(out[-1] + c)
        return out


@dataclass
class AssignInputs:
    """Checked inputs of one assignment call over ``B`` images sharing ``A`` anchors."""

    anchors: Tensor  # [A, 4]
    level_sizes: tuple[int, ...]
    gts: GtBatch
    pred_boxes: tuple[Tensor, ...] | None  # B x [A, 4]
    pred_scores: tuple[Tensor, ...] | None  # B x [A, C]; kept per image: stacking would copy B*A*C floats
    ignore: tuple[Tensor | None, ...]  # [K, 4] per image
    chunk_elements: int = 1 << 18
    _centers: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def num_anchors(self) -> int:
        return int(self.anchors.shape[0])

    @property
    def num_images(self) -> int:
        return len(self.gts.counts)

    @property
    def centers(self) -> tuple[Tensor, Tensor]:
        if self._centers is None:
            self._centers = anchor_centers(self.anchors)
        return self._centers

    def gather_pred(
        self, preds: tuple[Tensor, ...], image: Tensor, anchor: Tensor, column: Tensor | None = None
    ) -> Tensor:
        """``preds[image[p]][anchor[p]]`` (or ``[..., column[p]]``) for pairs ``p`` sorted by image: ``[P, 4]`` / ``[P]``."""
        parts = []
        for b, (anc, col) in enumerate(zip(anchor.split(self._image_counts(image)), self._split(column, image))):
            if anc.numel():
                parts.append(preds[b][anc, col] if col is not None else preds[b][anc])
        if parts:
            return torch.cat(parts)
        return preds[0].new_zeros((0,) if column is not None else (0, preds[0].shape[1]))

    def _image_counts(self, image: Tensor) -> list[int]:
        return torch.bincount(image, minlength=self.num_images).tolist()

    def _split(self, values: Tensor | None, image: Tensor) -> list[Tensor | None]:
        return list(values.split(self._image_counts(image))) if values is not None else [None] * self.num_images

    @property
    def level_starts(self) -> list[int]:
        out = [0]
        for n in self.level_sizes[:-1]:
            out.append(out[-1] + n)
        return out


@dataclass
class AssignOutput:
    """What an assigner computes for ``B`` images; :class:`BaseAssigner` turns it into results."""

    gt_inds: Tensor  # [B, A] long: -1, -2, or gt index within the image
    max_iou: Tensor  # [B, A] float: IoU of the anchor with its assigned gt (values at non-positives are dropped)
    per_gt: dict[str, Tensor] = field(default_factory=dict)  # name -> [N], split per image
    per_anchor: dict[str, Tensor] = field(default_factory=dict)  # name -> [B, A]


# --------------------------------------------------------------------------- base class


def _as_list(name: str, value: Sequence[Tensor] | Tensor | None, num: int, owner: str) -> list[Tensor | None]:
    if value is None:
        return [None] * num
    if isinstance(value, Tensor):
        if value.dim() == 0 or value.shape[0] != num:
            raise ValueError(f"{owner}: {name} must hold one entry per image ({num}), got shape {tuple(value.shape)}")
        return list(value.unbind(0))
    value = list(value)
    if len(value) != num:
        raise ValueError(f"{owner}: {name} must hold one entry per image ({num}), got {len(value)}")
    return value


class BaseAssigner:
    """Base of every assigner: argument checks, ``assign`` / ``assign_batch``, ignore regions.

    Subclasses implement :meth:`_assign`, which sees all images of a call at once
    (anchors shared). ``assign_batch`` falls back to one image at a time when the
    images do not share their anchors, or when a subclass overrides ``assign`` only.
    Assignment runs under ``torch.no_grad()``: predictions passed in are only read.

    Ignore regions (``gt_ignore [K, 4]``): an anchor whose *center* lies in a
    region (borders included) becomes ``-2`` unless it is positive. The center
    test (rather than IoF > 0.5) treats anchor boxes and anchor-free points alike.
    """

    paper: str | None = None
    #: Largest number of (gt, anchor) pairs held in one dense intermediate; gts are processed in chunks
    #: beyond it. ``None``: a default per device type (``DEFAULT_CHUNK_ELEMENTS``).
    chunk_elements: int | None = None

    # -- public API
    def bind_levels(self, strides: Sequence[int]) -> None:
        """Receive the pyramid's strides, finest first, from the head that owns this assigner.

        Dense heads call it once, when they build the assigner (docs/api.md, "Assigners"),
        so an assigner whose rule depends on the level layout (``fcos``: the center radius
        and the scale ranges) takes it from the head instead of keeping a second copy that
        must be changed by hand. Raise ``ValueError`` when the assigner's own settings
        cannot fit those levels. The default does nothing.
        """

    def assign(
        self,
        anchors: Tensor,
        level_sizes: Sequence[int],
        gt_boxes: Tensor,
        gt_labels: Tensor,
        pred_boxes: Tensor | None = None,
        pred_scores: Tensor | None = None,
        gt_ignore: Tensor | None = None,
    ) -> AssignResult:
        """Assign the anchors of one image.

        Args:
            anchors: float ``[A, 4]`` xyxy, level by level (anchor-free heads: each point's square anchor box).
            level_sizes: anchors per pyramid level, summing to ``A``.
            gt_boxes: float ``[G, 4]`` xyxy; ``G = 0`` is valid (everything background).
            gt_labels: long ``[G]``.
            pred_boxes: optional float ``[A, 4]`` decoded predicted boxes (used by ``eatss``).
            pred_scores: optional float ``[A, C]`` predicted probabilities (used by ``eatss``).
            gt_ignore: optional float ``[K, 4]`` ignored regions.
        """
        inputs = self._prepare(
            anchors,
            level_sizes,
            [gt_boxes],
            [gt_labels],
            None if pred_boxes is None else [pred_boxes],
            None if pred_scores is None else [pred_scores],
            None if gt_ignore is None else [gt_ignore],
        )
        return self._run(inputs)[0]

    def assign_batch(
        self,
        anchors: Tensor | Sequence[Tensor],
        level_sizes: Sequence[int],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        pred_boxes: Sequence[Tensor] | Tensor | None = None,
        pred_scores: Sequence[Tensor] | Tensor | None = None,
        gt_ignore: Sequence[Tensor | None] | None = None,
    ) -> list[AssignResult]:
        """Assign ``B`` images in one vectorised pass; equal to ``[assign(...) for each image]``.

        Args:
            anchors: ``[A, 4]`` shared by all images, or a list of ``B`` such tensors.
            gt_boxes, gt_labels: lists of ``B`` tensors ``[G_b, 4]`` / ``[G_b]``.
            pred_boxes, pred_scores: lists of ``B`` tensors (or ``[B, A, 4]`` / ``[B, A, C]``), or ``None``.
            gt_ignore: list of ``B`` ``[K_b, 4]`` tensors (or ``None`` entries), or ``None``.
        """
        owner = type(self).__name__
        num = len(gt_boxes)
        if len(gt_labels) != num:
            raise ValueError(f"{owner}: gt_boxes has {num} images but gt_labels has {len(gt_labels)}")
        preds = _as_list("pred_boxes", pred_boxes, num, owner)
        scores = _as_list("pred_scores", pred_scores, num, owner)
        ignore = _as_list("gt_ignore", gt_ignore, num, owner)
        if type(self)._assign is BaseAssigner._assign:  # a subclass that only implements assign()
            per_image = [anchors] * num if isinstance(anchors, Tensor) else list(anchors)
            return [
                self.assign(a, level_sizes, b, lab, p, s, i)
                for a, b, lab, p, s, i in zip(per_image, gt_boxes, gt_labels, preds, scores, ignore)
            ]
        if isinstance(anchors, Tensor):
            shared: Tensor | None = anchors
        else:
            per_image = list(anchors)
            if len(per_image) != num:
                raise ValueError(f"{owner}: anchors must be one tensor or one per image ({num}), got {len(per_image)}")
            first = per_image[0] if per_image else None
            same = all(a is first or (a.shape == first.shape and torch.equal(a, first)) for a in per_image)
            shared = first if same else None
            if shared is None:
                return [
                    self.assign(a, level_sizes, b, lab, p, s, i)
                    for a, b, lab, p, s, i in zip(per_image, gt_boxes, gt_labels, preds, scores, ignore)
                ]
        if num == 0:
            return []
        inputs = self._prepare(shared, level_sizes, gt_boxes, gt_labels, preds, scores, ignore)
        return self._run(inputs)

    def _assign(self, inputs: AssignInputs) -> AssignOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"

    # -- internals
    def _prepare(
        self,
        anchors: Tensor,
        level_sizes: Sequence[int],
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        pred_boxes: Sequence[Tensor | None] | None,
        pred_scores: Sequence[Tensor | None] | None,
        gt_ignore: Sequence[Tensor | None] | None,
    ) -> AssignInputs:
        owner = type(self).__name__
        if not isinstance(anchors, Tensor) or anchors.dim() != 2 or anchors.shape[1] != 4:
            shape = tuple(anchors.shape) if isinstance(anchors, Tensor) else type(anchors).__name__
            raise ValueError(f"{owner}: anchors must be a [A, 4] tensor, got {shape}")
        if not anchors.is_floating_point():
            raise TypeError(f"{owner}: anchors must be floating point, got {anchors.dtype}")
        # Half-precision IoUs are too coarse for thresholds and ties; compute in fp32 (fp64 stays fp64).
        dtype = torch.float64 if anchors.dtype == torch.float64 else torch.float32
        device = anchors.device
        anchors = anchors.to(dtype)
        num_anchors = anchors.shape[0]
        _check_boxes(owner, "anchors", anchors)
        try:
            sizes = tuple(int(n) for n in level_sizes)
        except (TypeError, ValueError):
            raise TypeError(f"{owner}: level_sizes must be a list of ints, got {level_sizes!r}") from None
        if any(n < 0 for n in sizes) or sum(sizes) != num_anchors or not sizes:
            raise ValueError(f"{owner}: level_sizes {list(sizes)} must be non-negative and sum to A = {num_anchors}")

        boxes, labels, counts = [], [], []
        for b, (box, lab) in enumerate(zip(gt_boxes, gt_labels)):
            box = torch.as_tensor(box, device=device)
            lab = torch.as_tensor(lab, device=device)
            if box.numel() == 0:
                box = box.reshape(0, 4)
            if box.dim() != 2 or box.shape[1] != 4:
                raise ValueError(f"{owner}: gt_boxes of image {b} must be [G, 4], got {tuple(box.shape)}")
            if lab.dim() != 1 or lab.shape[0] != box.shape[0]:
                raise ValueError(
                    f"{owner}: gt_labels of image {b} must be [G] = [{box.shape[0]}], got {tuple(lab.shape)}"
                )
            if lab.is_floating_point() or lab.is_complex():
                raise TypeError(f"{owner}: gt_labels must be integers, got {lab.dtype}")
            box = box.to(dtype)
            _check_boxes(owner, f"gt_boxes of image {b}", box)
            boxes.append(box)
            labels.append(lab.long())
            counts.append(int(box.shape[0]))
        num_images = len(boxes)
        image = torch.repeat_interleave(torch.arange(num_images, device=device), torch.tensor(counts, device=device))
        starts = torch.tensor([0, *counts], device=device).cumsum(0)[:-1]
        gts = GtBatch(
            boxes=torch.cat(boxes) if boxes else anchors.new_zeros((0, 4)),
            labels=torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device),
            image=image,
            local=torch.arange(image.numel(), device=device) - starts[image],
            counts=tuple(counts),
        )

        preds = self._check_optional(owner, "pred_boxes", pred_boxes, num_images, (num_anchors, 4), dtype, device)
        scores = self._check_optional(owner, "pred_scores", pred_scores, num_images, (num_anchors, None), dtype, device)
        if scores is not None and gts.num and int(gts.labels.max()) >= scores[0].shape[1]:
            raise ValueError(
                f"{owner}: gt label {int(gts.labels.max())} has no column in pred_scores [A, {scores[0].shape[1]}]"
            )
        if gts.num and int(gts.labels.min()) < 0:
            raise ValueError(f"{owner}: gt_labels must be >= 0, got {int(gts.labels.min())}")

        ignore: list[Tensor | None] = []
        for b, region in enumerate(gt_ignore if gt_ignore is not None else [None] * num_images):
            if region is None:
                ignore.append(None)
                continue
            region = torch.as_tensor(region, device=device).to(dtype)
            if region.numel() == 0:
                region = region.reshape(0, 4)
            if region.dim() != 2 or region.shape[1] != 4:
                raise ValueError(f"{owner}: gt_ignore of image {b} must be [K, 4], got {tuple(region.shape)}")
            _check_boxes(owner, f"gt_ignore of image {b}", region)
            ignore.append(region)
        chunk = self.chunk_elements if self.chunk_elements is not None else default_chunk_elements(device)
        return AssignInputs(anchors, sizes, gts, preds, scores, tuple(ignore), int(chunk))

    @staticmethod
    def _check_optional(
        owner: str,
        name: str,
        values: Sequence[Tensor | None] | None,
        num_images: int,
        shape: tuple[int, int | None],
        dtype: torch.dtype,
        device: torch.device,
    ) -> tuple[Tensor, ...] | None:
        if values is None or all(v is None for v in values):
            return None
        if any(v is None for v in values):
            raise ValueError(f"{owner}: {name} must be given for every image or for none")
        out = []
        for b, v in enumerate(values):
            v = torch.as_tensor(v, device=device)
            if v.dim() != 2 or v.shape[0] != shape[0] or (shape[1] is not None and v.shape[1] != shape[1]):
                want = f"[{shape[0]}, {shape[1] if shape[1] is not None else 'C'}]"
                raise ValueError(f"{owner}: {name} of image {b} must be {want}, got {tuple(v.shape)}")
            out.append(v.to(dtype))
        widths = {v.shape[1] for v in out}
        if len(widths) > 1:
            raise ValueError(f"{owner}: {name} must have the same width in every image, got {sorted(widths)}")
        return tuple(out) if out else None

    @torch.no_grad()
    def _run(self, inputs: AssignInputs) -> list[AssignResult]:
        out = self._assign(inputs)
        gt_inds = out.gt_inds.clone()
        gts = inputs.gts
        cx, cy = inputs.centers
        for b, region in enumerate(inputs.ignore):
            if region is None or region.shape[0] == 0:
                continue
            inside = torch.zeros(inputs.num_anchors, dtype=torch.bool, device=gt_inds.device)
            for k0, k1 in row_chunks(region.shape[0], inputs.num_anchors, inputs.chunk_elements):
                r = region[k0:k1]
                hit = (cx >= r[:, 0:1]) & (cx <= r[:, 2:3]) & (cy >= r[:, 1:2]) & (cy <= r[:, 3:4])
                inside |= hit.any(0)
            gt_inds[b] = torch.where(inside & (gt_inds[b] < 0), torch.full_like(gt_inds[b], IGNORED), gt_inds[b])

        results = []
        offsets = gts.offsets
        for b in range(inputs.num_images):
            inds = gt_inds[b]
            pos = inds >= 0
            labels_b = gts.labels[offsets[b] : offsets[b + 1]]
            if labels_b.numel():
                labels = torch.where(pos, labels_b[inds.clamp(min=0)], torch.full_like(inds, -1))
            else:
                labels = torch.full_like(inds, -1)
            max_iou = torch.where(pos, out.max_iou[b], torch.zeros_like(out.max_iou[b]))
            info = {k: v[offsets[b] : offsets[b + 1]] for k, v in out.per_gt.items()}
            info.update({k: v[b] for k, v in out.per_anchor.items()})
            results.append(AssignResult(inds, labels, max_iou, gts.counts[b], inputs.level_sizes, info))
        return results


def _check_boxes(owner: str, name: str, boxes: Tensor) -> None:
    if boxes.numel() == 0:
        return
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{owner}: {name} contain NaN or infinite coordinates")
    if bool(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
        raise ValueError(f"{owner}: {name} must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1")


def check_param(owner: str, name: str, ok: bool, requirement: str, value: object) -> None:
    """Raise ``ValueError`` naming the component and parameter when ``ok`` is false."""
    if not ok:
        raise ValueError(f"{owner}: parameter {name!r} must be {requirement}, got {value!r}")
