"""fcos: hand-built scenes with the expected assignment written out."""

from __future__ import annotations

import math

import pytest
import torch

import lossreg


def _points(n: int, stride: int) -> torch.Tensor:
    """Square anchors (side 8 * stride) of an ``n x n`` point grid, row-major."""
    ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    cx = (xs.flatten().float() + 0.5) * stride
    cy = (ys.flatten().float() + 0.5) * stride
    half = 4 * stride
    return torch.stack([cx - half, cy - half, cx + half, cy + half], 1)


# Level 0: 8 x 8 points at stride 8 (coordinates 4, 12, ..., 60), index 8 * row + col.
# Level 1: 4 x 4 points at stride 16 (coordinates 8, 24, 40, 56), index 64 + 4 * row + col.
POINTS = torch.cat([_points(8, 8), _points(4, 16)])
SIZES = [64, 16]
PARAMS = {"strides": (8, 16), "scale_ranges": ((-1, 20), (20, math.inf))}


def test_scale_ranges_and_nested_gts_go_to_the_smaller():
    gts = torch.tensor([[0.0, 0, 30, 30], [10, 10, 26, 26]])  # A (30 px), B (16 px) nested in A
    r = lossreg.create_assigner("fcos", **PARAMS).assign(POINTS, SIZES, gts, torch.tensor([4, 5]))
    # Level 0: points (12|20, 12|20) = 9, 10, 17, 18 lie in both centre regions with max distance
    # <= 20; the smaller gt B wins them. Level 1 (max distance >= 20): A's points (8|24, 8|24)
    # = 64, 65, 68, 69 (max distance 22 or 24); B's only point (24, 24) has max distance 14.
    expected = torch.full((80,), -1)
    expected[[9, 10, 17, 18]] = 1
    expected[[64, 65, 68, 69]] = 0
    assert r.gt_inds.tolist() == expected.tolist()
    assert r.labels[[9, 64]].tolist() == [5, 4]
    # max_iou: IoU of the point's square anchor: (12, 12) -> [-20, -20, 44, 44] vs B: 256 / 4096.
    torch.testing.assert_close(r.max_iou[9], torch.tensor(256 / 4096))
    torch.testing.assert_close(r.max_iou[64], torch.tensor(900 / 16384))


def test_center_sampling_radius():
    gt = torch.tensor([[0.0, 0, 60, 20]])  # centre (30, 10); max distance >= 30, so level 1 only
    sampled = lossreg.create_assigner("fcos", **PARAMS).assign(POINTS, SIZES, gt, torch.tensor([0]))
    # Centre region x in (30 - 24, 30 + 24) = (6, 54): points x = 8, 24, 40 of row y = 8.
    assert sampled.pos_inds.tolist() == [64, 65, 66]
    full = lossreg.create_assigner("fcos", center_sampling=False, **PARAMS).assign(POINTS, SIZES, gt, torch.tensor([0]))
    assert full.pos_inds.tolist() == [64, 65, 66, 67]
    narrow = lossreg.create_assigner("fcos", radius=0.5, **PARAMS).assign(POINTS, SIZES, gt, torch.tensor([0]))
    assert narrow.pos_inds.tolist() == [65]  # x in (22, 38)


def test_scale_range_ends_are_inclusive():
    gt = torch.tensor([[4.0, 0, 44, 16]])  # 40 px wide: max distance >= 20, so level 1 only
    r = lossreg.create_assigner("fcos", **PARAMS).assign(POINTS, SIZES, gt, torch.tensor([0]))
    # Level-1 points (8, 8), (24, 8), (40, 8); (24, 8) has l = r = 20: exactly the range's lower end.
    assert r.pos_inds.tolist() == [64, 65, 66]


def test_equal_areas_tie_to_the_lower_index():
    gts = torch.tensor([[8.0, 8, 24, 24], [8, 8, 24, 24], [0, 8, 16, 24]])
    r = lossreg.create_assigner("fcos", **PARAMS).assign(POINTS, SIZES, gts, torch.tensor([0, 1, 2]))
    # Points (12|20, 12|20) belong to gts 0 and 1 (identical): gt 0; (4|12, 12|20) to gt 2 except
    # the shared column x = 12, where gts 0 and 2 have the same area: gt 0 again.
    assert r.gt_inds[[9, 10, 17, 18]].tolist() == [0, 0, 0, 0]
    assert r.gt_inds[[8, 16]].tolist() == [2, 2]
    assert 1 not in r.gt_inds.tolist()


def test_level_count_must_match_strides():
    with pytest.raises(ValueError, match="pyramid levels"):
        lossreg.create_assigner("fcos").assign(POINTS, SIZES, torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"radius": 0.0},
        {"strides": (8, 16), "scale_ranges": ((-1, 64), (64, 128), (128, math.inf))},  # one range per stride
        {"scale_ranges": ((64, -1),) * 5},
        {"center_sampling": "yes"},
    ],
)
def test_rejects_bad_parameters(kwargs):
    with pytest.raises((ValueError, TypeError), match="fcos|FCOSAssigner"):
        lossreg.create_assigner("fcos", **kwargs)
