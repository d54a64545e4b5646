"""eatss: a hand-built scene, and the properties its docstring's steps require on random scenes."""

from __future__ import annotations

import pytest
import torch
from _reference_assigners import REFERENCES, random_scene
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

import lossreg

# Level 0: 10 px anchors; level 1: 40 px anchors. The gt is [0, 0, 40, 40], centre (20, 20).
ANCHORS = torch.tensor(
    [
        [15.0, 15, 25, 25],  # 0: centre (20, 20), d = 0, IoU 100/1600
        [17, 15, 27, 25],  # 1: centre (22, 20), d = 2
        [15, 21, 25, 31],  # 2: centre (20, 26), d = 6
        [25, 15, 35, 25],  # 3: centre (30, 20), d = 10 = D: score 0
        [3, 3, 13, 13],  # 4: centre (8, 8), d = 17 > D
        [55, 55, 65, 65],  # 5: outside the gt
        [10, 0, 50, 40],  # 6: centre (30, 20), IoU 1200/2000 = 0.6: the ATSS positive
        [0, 14, 40, 54],  # 7: centre (20, 34), IoU 1040/2160
        [60, 60, 100, 100],  # 8
    ]
)
SIZES = [6, 3]
GT = torch.tensor([[0.0, 0, 40, 40]])
LABEL = torch.tensor([1])


def test_hand_built_scene_adds_the_best_scored_candidates():
    atss = lossreg.create_assigner("atss", topk=2).assign(ANCHORS, SIZES, GT, LABEL)
    # Candidates 0, 1 (level 0) and 6, 7 (level 1); IoU 0.0625, 0.0625, 0.6, 0.481:
    # threshold 0.3016 + 0.2803 = 0.5819, so only anchor 6 is positive; D = |(30, 20) - (20, 20)| = 10.
    assert atss.gt_inds.tolist() == [-1, -1, -1, -1, -1, -1, 0, -1, -1]
    eatss = lossreg.create_assigner("eatss", topk=2, extra=2)
    r = eatss.assign(ANCHORS, SIZES, GT, LABEL)
    # Candidates inside the gt and within D: 0, 1, 2 (3 sits at d = D, score 0). Scores
    # 0.0625 * (1 - d / 10): 0.0625, 0.05, 0.025 -> anchors 0 and 1 are added.
    assert r.gt_inds.tolist() == [0, 0, -1, -1, -1, -1, 0, -1, -1]
    assert r.info["added"].tolist() == [True, True] + [False] * 7
    assert r.info["distance_bound"].tolist() == [10.0]
    torch.testing.assert_close(r.max_iou[[0, 1, 6]], torch.tensor([0.0625, 0.0625, 0.6]))

    # A high predicted score lifts anchor 2 (the paper's "D" sample): max(0.0625, 0.9) * 0.4 = 0.36.
    scores = torch.zeros(9, 3)
    scores[2, 1] = 0.9
    assert eatss.assign(ANCHORS, SIZES, GT, LABEL, pred_scores=scores).gt_inds.tolist() == [
        0,
        -1,
        0,
        -1,
        -1,
        -1,
        0,
        -1,
        -1,
    ]
    # A predicted box equal to the gt lifts anchor 1 (a "C" sample): IoU 1 * 0.8.
    preds = ANCHORS.clone()
    preds[1] = GT[0]
    r = eatss.assign(ANCHORS, SIZES, GT, LABEL, pred_boxes=preds, pred_scores=scores)
    assert r.gt_inds.tolist() == [-1, 0, 0, -1, -1, -1, 0, -1, -1]
    # max_iou stays the IoU of the anchor itself, not of its predicted box.
    torch.testing.assert_close(r.max_iou[[1, 2]], torch.tensor([0.0625, 0.0625]))


def test_rank_by_iou_ignores_predicted_scores():
    # Same scene: anchor 2's score 0.9 lifted it under rank_by="iou_or_score"; ranked by IoU only,
    # the scores 0.0625 * (1 - d / 10) = 0.0625, 0.05, 0.025 pick anchors 0 and 1 again.
    scores = torch.zeros(9, 3)
    scores[2, 1] = 0.9
    by_iou = lossreg.create_assigner("eatss", topk=2, extra=2, rank_by="iou")
    r = by_iou.assign(ANCHORS, SIZES, GT, LABEL, pred_scores=scores)
    assert r.gt_inds.tolist() == [0, 0, -1, -1, -1, -1, 0, -1, -1]
    # Predicted boxes still count: anchor 1's box equal to the gt scores 1 * 0.8 and leads.
    preds = ANCHORS.clone()
    preds[1] = GT[0]
    r = by_iou.assign(ANCHORS, SIZES, GT, LABEL, pred_boxes=preds, pred_scores=scores)
    assert r.gt_inds.tolist() == [0, 0, -1, -1, -1, -1, 0, -1, -1]
    assert r.info["added"].tolist() == [True, True] + [False] * 7
    info = lossreg.component_info("assigner", "eatss")
    assert info["params"]["rank_by"] == "iou_or_score" and "rank_by" in info["doc"]
    with pytest.raises((TypeError, ValueError), match="rank_by"):
        lossreg.create_assigner("eatss", rank_by="score")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num_gts=st.integers(0, 10), nine=st.booleans())
def test_rank_by_iou_matches_loop_reference_without_scores(seed, num_gts, nine):
    # The loop reference (benchmarks/_reference_assigners.ref_eatss) ranks by max(IoU, score) when
    # given scores and by IoU when not: rank_by="iou" with scores is the reference without them.
    apl = 9 if nine else 1
    scene = random_scene(seed, num_gts, anchors_per_location=apl)
    result = lossreg.create_assigner("eatss", anchors_per_location=apl, rank_by="iou").assign(**scene)
    ref_inds, ref_iou = REFERENCES["eatss"](**{**scene, "pred_scores": None}, anchors_per_location=apl)
    assert result.gt_inds.tolist() == ref_inds.tolist()
    assert torch.equal(result.max_iou, ref_iou)


def test_extra_zero_is_atss():
    scene = random_scene(3, num_gts=8)
    atss = lossreg.create_assigner("atss").assign(**scene)
    eatss = lossreg.create_assigner("eatss", extra=0).assign(**scene)
    assert torch.equal(atss.gt_inds, eatss.gt_inds) and torch.equal(atss.max_iou, eatss.max_iou)
    assert not eatss.info["added"].any()


def _centers(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_gts=st.integers(1, 10),
    extra=st.integers(1, 4),
    use_preds=st.booleans(),
    integer=st.booleans(),
)
def test_properties(seed, num_gts, extra, use_preds, integer):
    scene = random_scene(seed, num_gts=num_gts, integer=integer)
    if not use_preds:
        scene["pred_boxes"] = scene["pred_scores"] = None
    anchors, gts = scene["anchors"], scene["gt_boxes"]
    atss = lossreg.create_assigner("atss").assign(**scene)
    r = lossreg.create_assigner("eatss", extra=extra).assign(**scene)
    added = r.info["added"]

    # Every ATSS positive is kept, with its gt; additions are exactly the new positives.
    assert torch.equal(r.gt_inds[atss.pos_mask], atss.gt_inds[atss.pos_mask])
    assert torch.equal(added, r.pos_mask & ~atss.pos_mask)
    # At most `extra` per gt.
    assert int(torch.bincount(r.gt_inds[added], minlength=num_gts).max()) <= extra

    centers = _centers(anchors)
    for g in range(num_gts):
        box = gts[g]
        dist = (centers - _centers(box[None])).norm(dim=1)
        members = atss.gt_inds == g
        mine = added & (r.gt_inds == g)
        if not members.any():
            assert not mine.any()
            continue
        bound = float(dist[members].max())
        inside = (centers[:, 0] - box[0] > 0.01) & (centers[:, 1] - box[1] > 0.01)
        inside &= (box[2] - centers[:, 0] > 0.01) & (box[3] - centers[:, 1] > 0.01)
        # Added anchors lie inside their gt and strictly within its distance bound.
        assert bool(inside[mine].all())
        assert bool((dist[mine] < bound + 1e-4).all())
        # Ranking follows the score: a candidate scoring clearly higher than an anchor added to g
        # was added too (to g, or to a gt that scores it higher).
        cand = inside & ~atss.pos_mask & (dist <= bound)
        ref = scene["pred_boxes"] if use_preds else anchors
        iou = box_iou(ref, box[None])[:, 0]
        if use_preds:
            iou = torch.maximum(iou, scene["pred_scores"][:, scene["gt_labels"][g]])
        score = torch.where(cand, iou * (1 - dist / bound), torch.zeros_like(iou))
        if mine.any():
            weakest = float(score[mine].min())
            assert bool(r.pos_mask[score > weakest + 1e-5].all())
        if int(mine.sum()) < extra:
            # g took fewer than `extra`: each of its `extra` best candidates went to it or to another
            # gt. A gt that loses an anchor does not take its next candidate (docstring, step 5), so
            # candidates below its `extra`-th best may stay negative.
            ranked = score[score > 1e-5].sort(descending=True).values
            kth = float(ranked[extra - 1]) if len(ranked) >= extra else 0.0
            assert bool(r.pos_mask[score > kth + 1e-5].all())
