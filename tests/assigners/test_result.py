"""AssignResult helpers and the introspection summary."""

from __future__ import annotations

import math

import torch

from lossreg.assigners.result import AssignResult, summarize_assignment


def _result(added: bool = False) -> AssignResult:
    info = {"added": torch.tensor([False, False, False, False, True])} if added else {}
    return AssignResult(
        gt_inds=torch.tensor([0, -1, 1, -2, 0]),
        labels=torch.tensor([2, -1, 0, -1, 2]),
        max_iou=torch.tensor([0.5, 0.0, 0.7, 0.0, 0.3]),
        num_gts=3,
        level_sizes=(3, 2),
        info=info,
    )


def test_masks_and_loss_labels():
    r = _result()
    assert r.num_anchors == 5 and r.num_pos == 3
    assert r.pos_inds.tolist() == [0, 2, 4]
    assert r.neg_mask.tolist() == [False, True, False, False, False]
    assert r.ignore_mask.tolist() == [False, False, False, True, False]
    assert r.level_index().tolist() == [0, 0, 0, 1, 1]
    # docs/api.md, "Classification losses": 0..C-1 positive class, C background, -1 ignored.
    assert r.loss_labels(5).tolist() == [2, 5, 0, -1, 2]


def test_summary_counts_per_gt_and_level():
    s = summarize_assignment(_result())
    assert (s.num_anchors, s.num_gts, s.num_pos, s.num_neg, s.num_ignored) == (5, 3, 3, 1, 1)
    assert s.pos_per_gt == [2, 1, 0]
    assert s.pos_per_gt_level == [[1, 1], [1, 0], [0, 0]]
    assert s.pos_per_level == [2, 1]
    assert math.isclose(s.mean_iou, 0.5, rel_tol=1e-6)
    assert math.isclose(s.mean_iou_per_gt[0], 0.4, rel_tol=1e-6)
    assert math.isclose(s.mean_iou_per_gt[1], 0.7, rel_tol=1e-6)
    assert math.isnan(s.mean_iou_per_gt[2])
    assert s.unmatched_gts == [2]
    assert s.added_per_gt is None
    text = s.format()
    assert "5 anchors, 3 gts: 3 positive, 1 background, 1 ignored" in text
    assert "gts without positives: [2]" in text
    assert s.to_dict()["pos_per_gt"] == [2, 1, 0]


def test_summary_reports_eatss_additions():
    s = _result(added=True).summary()
    assert s.added_per_gt == [1, 0, 0]
    assert "added" in s.format()


def test_summary_of_empty_image():
    r = AssignResult(torch.full((4,), -1), torch.full((4,), -1), torch.zeros(4), 0, (1, 3))
    s = summarize_assignment(r)
    assert s.pos_per_gt == [] and s.pos_per_level == [0, 0] and s.num_neg == 4
    assert math.isnan(s.mean_iou)


def test_equal_and_to():
    a, b = _result(), _result()
    assert a.equal(b) and a.to("cpu").equal(a)
    b.gt_inds[1] = -2
    assert not a.equal(b)
