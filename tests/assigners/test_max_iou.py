"""max_iou: hand-built scenes with the expected assignment written out."""

from __future__ import annotations

import pytest
import torch
from _reference_assigners import grid_anchors
from torchvision.ops import box_iou

import lossreg
from lossreg.assigners import max_iou as max_iou_module
from lossreg.ops.geometry import iou_matrix, paired_box_iou


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_thresholds_ignore_band_and_low_quality_match():
    anchors = _t(
        [
            [0, 0, 10, 10],  # 0: IoU 1 with gt 0
            [5, 0, 15, 10],  # 1: 50 / 150 = 0.333 with gt 0 -> background
            [20, 20, 30, 30],  # 2: 100 / 120 = 0.833 with gt 1
            [0, 0, 10, 22],  # 3: 100 / 220 = 0.4545 with gt 0 -> between the thresholds: ignored
            [100, 100, 110, 110],  # 4: overlaps nothing
            [50, 50, 60, 60],  # 5: 100 / 400 = 0.25 with gt 2, its best anchor -> low-quality positive
            [2, 0, 12, 10],  # 6: 80 / 120 = 0.667 with gt 0
        ]
    )
    gts = _t([[0, 0, 10, 10], [20, 20, 32, 30], [50, 50, 70, 70]])
    labels = torch.tensor([3, 1, 0])
    r = lossreg.create_assigner("max_iou").assign(anchors, [7], gts, labels)
    assert r.gt_inds.tolist() == [0, -1, 1, -2, -1, 2, 0]
    assert r.labels.tolist() == [3, -1, 1, -1, -1, 0, 3]
    expected_iou = torch.tensor([1.0, 0.0, 100 / 120, 0.0, 0.0, 0.25, 80 / 120])
    torch.testing.assert_close(r.max_iou, expected_iou)

    r = lossreg.create_assigner("max_iou", match_low_quality=False).assign(anchors, [7], gts, labels)
    assert r.gt_inds.tolist() == [0, -1, 1, -2, -1, -1, 0]


def test_low_quality_match_overrides_threshold_positive():
    anchors = _t([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]])
    # gt 0's best anchor is 0 (IoU 1); anchor 1 has IoU 0.667 with gt 0 but is the only
    # anchor gt 1 overlaps (20 / 380 = 0.0526), so the low-quality match gives it to gt 1.
    gts = _t([[0, 0, 10, 10], [10, 0, 40, 10]])
    labels = torch.tensor([0, 1])
    r = lossreg.create_assigner("max_iou").assign(anchors, [3], gts, labels)
    assert r.gt_inds.tolist() == [0, 1, -1]
    torch.testing.assert_close(r.max_iou, torch.tensor([1.0, 20 / 380, 0.0]))
    r = lossreg.create_assigner("max_iou", min_pos_iou=0.1).assign(anchors, [3], gts, labels)
    assert r.gt_inds.tolist() == [0, 0, -1]


def test_ties_go_to_the_lower_gt_index():
    anchors = _t([[0, 0, 10, 10], [20, 0, 30, 10]])
    # Anchor 0 overlaps gts 1 and 2 equally (IoU 0.5 each); gts 0 and 3 are identical.
    gts = _t([[20, 0, 30, 10], [0, 0, 10, 5], [0, 5, 10, 10], [20, 0, 30, 10]])
    r = lossreg.create_assigner("max_iou", neg_iou_thr=0.3).assign(anchors, [2], gts, torch.arange(4))
    assert r.gt_inds.tolist() == [1, 0]
    assert r.labels.tolist() == [1, 0]


def test_gt_smaller_than_every_anchor_takes_all_its_tying_best_anchors():
    anchors, sizes = grid_anchors(128)  # level 0: 16 x 16 anchors of 64 px at stride 8
    gts = _t([[3, 3, 5, 5]])
    r = lossreg.create_assigner("max_iou").assign(anchors, sizes, gts, torch.tensor([7]))
    # Every level-0 anchor centred at 4, 12, 20 or 28 (x and y) contains the 2x2 gt: IoU 4 / 4096.
    expected = sorted(row * 16 + col for row in range(4) for col in range(4))
    assert r.pos_inds.tolist() == expected
    assert torch.all(r.max_iou[r.pos_mask] == 4 / 4096)


def test_fast_iou_helpers_are_bit_identical_to_torchvision():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(50, 2, generator=gen) * 100
    a = torch.cat([a, a + torch.rand(50, 2, generator=gen) * 60], 1)
    b = torch.cat([a[:10], a[10:40] + torch.randn(30, 4, generator=gen).abs().cumsum(1)])
    expected = box_iou(b, a)
    assert torch.equal(iou_matrix(b, a), expected)
    assert torch.equal(paired_box_iou(a[None].expand(40, 50, 4), b[:, None, :]), expected)


def test_iou_matrix_computed_at_most_once_and_in_bounded_chunks(monkeypatch):
    anchors, sizes = grid_anchors(640)  # 8,525 anchors
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 100, 2, generator=gen) * 600
    boxes = [torch.cat([p, p + 8 + torch.rand(100, 2, generator=gen) * 300], 1) for p in xy]
    labels = [torch.zeros(100, dtype=torch.long)] * 2
    calls: list[tuple[int, int]] = []
    real = max_iou_module.iou_matrix

    def counting(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append((a.shape[0], b.shape[0]))
        return real(a, b)

    monkeypatch.setattr(max_iou_module, "iou_matrix", counting)
    assigner = lossreg.create_assigner("max_iou")
    assigner.chunk_elements = 50_000
    out = assigner.assign_batch(anchors, sizes, boxes, labels)
    assert calls and max(r * c for r, c in calls) <= 50_000
    assert sum(r * c for r, c in calls) <= 2 * 100 * anchors.shape[0]
    monkeypatch.setattr(max_iou_module, "iou_matrix", real)
    assigner.chunk_elements = None
    for res, again in zip(out, assigner.assign_batch(anchors, sizes, boxes, labels)):
        assert res.equal(again)


@pytest.mark.parametrize(
    "kwargs", [{"pos_iou_thr": 0.0}, {"neg_iou_thr": 0.6}, {"min_pos_iou": -0.1}, {"match_low_quality": 1}]
)
def test_rejects_bad_parameters(kwargs):
    with pytest.raises((ValueError, TypeError), match="max_iou|MaxIoUAssigner"):
        lossreg.create_assigner("max_iou", **kwargs)


def test_low_quality_gt_argmax_gives_the_anchor_its_own_best_gt():
    """Anchor 0 is gt 0's best anchor (IoU 0.5) but overlaps gt 1 more (0.667 < pos_iou_thr 0.7), whose
    best is anchor 1 (0.818): ``claimant`` keeps anchor 0 with gt 0, ``argmax`` (torchvision's Matcher)
    gives it to gt 1."""
    anchors = _t([[0, 0, 10, 10], [3, 0, 13, 10]])
    gts = _t([[-10, 0, 10, 10], [2, 0, 12, 10]])
    iou = box_iou(gts, anchors)
    assert iou[0].argmax() == 0 and iou[1, 0] > iou[0, 0] and iou[1].argmax() == 1
    kw = {"pos_iou_thr": 0.7, "neg_iou_thr": 0.3}
    claimant = lossreg.create_assigner("max_iou", **kw).assign(anchors, [2], gts, torch.tensor([0, 1]))
    argmax = lossreg.create_assigner("max_iou", low_quality_gt="argmax", **kw).assign(anchors, [2], gts, torch.tensor([0, 1]))
    assert claimant.gt_inds.tolist() == [0, 1]
    assert argmax.gt_inds.tolist() == [1, 1]
    torch.testing.assert_close(argmax.max_iou[0], iou[1, 0])


@pytest.mark.parametrize("seed", range(4))
def test_low_quality_gt_argmax_equals_torchvision_matcher(seed):
    from torchvision.models.detection._utils import Matcher

    gen = torch.Generator().manual_seed(seed)
    anchors = grid_anchors(64, (8, 16, 32), 9)[0]
    wh = 6 + torch.rand(12, 2, generator=gen) * 40
    xy = torch.rand(12, 2, generator=gen) * (64 - wh)
    gts = torch.cat([xy, xy + wh], 1)
    for pos, neg in ((0.5, 0.4), (0.7, 0.3)):
        ours = lossreg.create_assigner("max_iou", pos_iou_thr=pos, neg_iou_thr=neg, low_quality_gt="argmax")
        got = ours.assign(anchors, [anchors.shape[0]], gts, torch.zeros(12, dtype=torch.long)).gt_inds
        ref = Matcher(pos, neg, allow_low_quality_matches=True)(box_iou(gts, anchors))
        assert got.tolist() == ref.tolist()


def test_iou_matrix_broadcasts_leading_dims_as_per_image_box_iou():
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(3, 20, 2, generator=gen) * 100
    a = torch.cat([xy, xy + 1 + torch.rand(3, 20, 2, generator=gen) * 50], -1)
    xy = torch.rand(3, 5, 2, generator=gen) * 100
    b = torch.cat([xy, xy + 1 + torch.rand(3, 5, 2, generator=gen) * 50], -1)
    out = iou_matrix(a, b)
    assert out.shape == (3, 20, 5)
    for i in range(3):
        assert torch.equal(out[i], box_iou(a[i], b[i]))
