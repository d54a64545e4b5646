"""Helpers of the torchvision conversion tests: random torchvision detectors that detect something, and
the detection comparison (boxes 1e-3 px, scores 1e-5, same labels, same order)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import Tensor, nn

from lossreg.convert.coco import TORCHVISION_COCO_SLOTS

UNUSED_SLOTS = [s for s in range(91) if s not in TORCHVISION_COCO_SLOTS]


def spread_(tv: nn.Module, suppress_unused: bool = True, seed: int = 0) -> nn.Module:
    """Re-draw a random-init torchvision detector's weights so that it detects things, in place.

    BatchNorm / GroupNorm get non-trivial statistics and affine terms; head convs larger
    weights and biases, so that scores spread over (0, 1) without saturating (saturated
    sigmoids make exact ties). ``suppress_unused`` gives torchvision's unused COCO slots
    (and slot 0 of the sigmoid heads) a very negative bias, as trained weights have.
    """
    g = torch.Generator().manual_seed(seed)

    def u(t: Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    def n(t: Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=g) * std)

    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, (nn.BatchNorm2d, torchvision.ops.FrozenBatchNorm2d)):
                u(m.running_mean, -0.2, 0.2), u(m.running_var, 0.5, 2.0), u(m.weight, 0.5, 1.0), u(m.bias, -0.2, 0.2)
            elif isinstance(m, nn.GroupNorm):
                u(m.weight, 0.5, 1.5), u(m.bias, -0.2, 0.2)
        if hasattr(tv, "head"):  # RetinaNet, FCOS
            for m in tv.head.modules():
                if isinstance(m, nn.Conv2d):
                    n(m.weight, 0.03)
                    if m.bias is not None:
                        u(m.bias, -0.5, 0.5)
            logits = tv.head.classification_head.cls_logits
            u(logits.bias, -3.0, -1.0)
            if suppress_unused:
                anchors = logits.out_channels // 91
                for a in range(anchors):
                    for s in UNUSED_SLOTS:
                        logits.bias[a * 91 + s] = -30.0
        else:  # Faster R-CNN
            for m in [*tv.rpn.head.modules(), *tv.roi_heads.modules()]:
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    n(m.weight, 0.02 if isinstance(m, nn.Conv2d) else 0.01)
                    if m.bias is not None:
                        u(m.bias, -0.3, 0.3)
            cls = tv.roi_heads.box_predictor.cls_score
            n(cls.weight, 0.3)
            u(cls.bias, -1.0, 1.0)
            if suppress_unused:
                cls.bias[UNUSED_SLOTS[1:]] = -40.0
    return tv.eval()


def no_resize(tv: nn.Module) -> nn.Module:
    """Make torchvision's transform keep the images' sizes (it still normalises and pads them)."""
    tv.transform.resize = lambda image, target=None: (image, target)
    return tv


def assert_same_detections(
    ref: Sequence[dict[str, Tensor]], out: Sequence[dict[str, Tensor]], slots: Sequence[int],
    box_tol: float = 1e-3, score_tol: float = 1e-5,
) -> dict[str, float]:
    """Same count, labels (lossreg label i = torchvision ``slots[i]``), order, boxes and scores per image.

    Detections whose reference scores differ by less than ``score_tol`` may come in either
    order (float ties); they are compared as a group. Returns the largest differences.
    """
    worst = {"boxes": 0.0, "scores": 0.0}
    assert len(ref) == len(out)
    slot_of = torch.as_tensor(list(slots))
    for b, (r, o) in enumerate(zip(ref, out)):
        assert len(r["boxes"]) == len(o["boxes"]), f"image {b}: {len(r['boxes'])} vs {len(o['boxes'])} detections"
        if len(r["boxes"]) == 0:
            continue
        labels = slot_of[o["labels"]]
        ds = (r["scores"] - o["scores"]).abs().max().item()
        assert ds <= score_tol, f"image {b}: scores differ by {ds}"
        worst["scores"] = max(worst["scores"], ds)
        # groups of near-equal scores (ties) are compared as sets
        s = r["scores"]
        starts = [0] + [i for i in range(1, len(s)) if float(s[i - 1] - s[i]) >= score_tol]
        ends = starts[1:] + [len(s)]
        for lo, hi in zip(starts, ends):
            rb, ob = r["boxes"][lo:hi], o["boxes"][lo:hi]
            rl, ol = r["labels"][lo:hi], labels[lo:hi]
            diff = (rb[:, None, :] - ob[None, :, :]).abs().amax(-1)  # [n, n]
            diff[rl[:, None] != ol[None, :]] = float("inf")
            best = diff.min(dim=1).values
            assert bool((best <= box_tol).all()), (
                f"image {b}, detections {lo}-{hi - 1}: boxes/labels differ (max {best.max().item():.3g} px)"
            )
            worst["boxes"] = max(worst["boxes"], best.max().item())
    return worst
