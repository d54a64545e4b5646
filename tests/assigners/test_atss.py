"""atss: hand-built scenes with the expected assignment written out."""

from __future__ import annotations

import pytest
import torch

import lossreg


def _grid(n: int, stride: float, side: float) -> torch.Tensor:
    """``n x n`` square anchors of ``side`` px at ``stride``, row-major."""
    ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    cx = (xs.flatten().float() + 0.5) * stride
    cy = (ys.flatten().float() + 0.5) * stride
    return torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


def test_boundary_ties_zero_std_and_conflicts():
    # 5 x 5 anchors of 10 px tiling [0, 50]^2; anchor r * 5 + c is centred at (10c + 5, 10r + 5).
    anchors = _grid(5, 10, 10)
    gts = torch.tensor([[10.0, 10, 30, 30], [10, 10, 30, 40]])
    r = lossreg.create_assigner("atss", topk=3).assign(anchors, [25], gts, torch.tensor([0, 1]))
    # gt 0, centre (20, 20): anchors 6, 7, 11, 12 are equally close; the tie keeps 6, 7, 11.
    # Each lies inside the gt with IoU 100 / 400, so mean + std = 0.25 and all three pass.
    # gt 1, centre (20, 25): 11 and 12 (d^2 = 25), then 6 of the tying 6, 7, 16, 17 (d^2 = 125);
    # IoU 100 / 600 each. Anchors 6 and 11 are positive for both and go to gt 0 (higher IoU).
    expected = torch.full((25,), -1)
    expected[[6, 7, 11]] = 0
    expected[12] = 1
    assert r.gt_inds.tolist() == expected.tolist()
    torch.testing.assert_close(r.max_iou[[6, 7, 11, 12]], torch.tensor([0.25, 0.25, 0.25, 1 / 6]))
    torch.testing.assert_close(r.info["threshold"], torch.tensor([0.25, 1 / 6], dtype=torch.float64))


def test_threshold_mean_plus_std_across_levels():
    anchors = torch.tensor(
        [
            # level 0: 10 px anchors centred at x = 5, 15, 25, 35, 45 (y = 5)
            [0.0, 0, 10, 10],
            [10, 0, 20, 10],
            [20, 0, 30, 10],
            [30, 0, 40, 10],
            [40, 0, 50, 10],
            # level 1: 20 px anchors centred at x = 10, 30, 50 (y = 10)
            [0, 0, 20, 20],
            [20, 0, 40, 20],
            [40, 0, 60, 20],
        ]
    )
    gt = torch.tensor([[8.0, 0, 30, 10]])  # centre (19, 5)
    # topk 3: level 0 candidates 1, 2, 0 with IoU 100/220, 100/220, 20/300; level 1 candidates
    # 5, 6, 7 with IoU 120/500, 100/520, 0. mean 0.2347 + std 0.1907 = 0.42537: anchors 1 and 2.
    r = lossreg.create_assigner("atss", topk=3).assign(anchors, [5, 3], gt, torch.tensor([2]))
    assert r.gt_inds.tolist() == [-1, 0, 0, -1, -1, -1, -1, -1]
    assert r.labels.tolist() == [-1, 2, 2, -1, -1, -1, -1, -1]
    assert r.info["threshold"].item() == pytest.approx(0.425365, abs=1e-6)
    # topk 2 drops the low candidates 0 and 7: the threshold rises to 0.47436 and nothing passes.
    r = lossreg.create_assigner("atss", topk=2).assign(anchors, [5, 3], gt, torch.tensor([2]))
    assert r.gt_inds.tolist() == [-1] * 8
    assert r.info["threshold"].item() == pytest.approx(0.474355, abs=1e-6)


def test_anchors_per_location_takes_every_anchor_of_the_closest_locations():
    # 3 x 3 locations at stride 20 with anchors of 10, 20 and 40 px each (location-major).
    boxes = []
    for row in range(3):
        for col in range(3):
            cx, cy = 10 + 20 * col, 10 + 20 * row
            boxes += [[cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2] for s in (10, 20, 40)]
    anchors = torch.tensor(boxes)
    gt = torch.tensor([[20.0, 20, 40, 40]])  # location 4 = anchors 12 (10 px), 13 (20 px), 14 (40 px)
    r = lossreg.create_assigner("atss", topk=1, anchors_per_location=3).assign(anchors, [27], gt, torch.tensor([0]))
    # Candidates 12, 13, 14 with IoU 0.25, 1, 0.25: threshold 0.5 + 0.433; only the matching anchor.
    assert r.pos_inds.tolist() == [13]
    # One anchor per level: the tie between the three co-centred anchors keeps anchor 12 alone.
    r = lossreg.create_assigner("atss", topk=1).assign(anchors, [27], gt, torch.tensor([0]))
    assert r.pos_inds.tolist() == [12]
    with pytest.raises(ValueError, match="anchors_per_location"):
        lossreg.create_assigner("atss", anchors_per_location=2).assign(anchors, [27], gt, torch.tensor([0]))


def test_gt_without_inside_candidate_gets_nothing():
    anchors = _grid(5, 10, 10)
    # A 4 x 4 gt between anchor centres: its candidates' centres all lie outside it.
    r = lossreg.create_assigner("atss", topk=3).assign(
        anchors, [25], torch.tensor([[16.0, 16, 24, 24]]), torch.tensor([0])
    )
    assert r.num_pos == 0


@pytest.mark.parametrize("kwargs", [{"topk": 0}, {"topk": 2.5}, {"anchors_per_location": 0}])
def test_rejects_bad_parameters(kwargs):
    with pytest.raises((ValueError, TypeError), match="atss|ATSSAssigner"):
        lossreg.create_assigner("atss", **kwargs)
