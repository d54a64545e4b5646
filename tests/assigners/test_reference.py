"""Every vectorised assigner equals its straightforward per-gt loop (benchmarks/_reference_assigners.py)."""

from __future__ import annotations

import pytest
import torch
from _reference_assigners import REFERENCES, random_scene
from hypothesis import given, settings
from hypothesis import strategies as st

import lossreg


@pytest.mark.parametrize("name", sorted(REFERENCES))
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_gts=st.integers(0, 12),
    integer=st.booleans(),
    nine=st.booleans(),
    use_preds=st.booleans(),
)
def test_matches_loop_reference(name, seed, num_gts, integer, nine, use_preds):
    # Nine anchors per location only where the assigner has that notion (fcos is anchor-free).
    apl = 9 if nine and name != "fcos" else 1
    scene = random_scene(seed, num_gts, integer=integer, anchors_per_location=apl)
    if not use_preds:
        scene["pred_boxes"] = scene["pred_scores"] = None
    params = {"anchors_per_location": apl} if name in ("atss", "eatss") else {}
    result = lossreg.create_assigner(name, **params).assign(**scene)
    ref_inds, ref_iou = REFERENCES[name](**scene, **params)
    assert result.gt_inds.tolist() == ref_inds.tolist()
    assert torch.equal(result.max_iou, ref_iou)
    gt_labels = torch.cat([scene["gt_labels"], torch.tensor([-1])])  # index -1 and -2 land on the -1
    assert torch.equal(result.labels, gt_labels[torch.where(ref_inds >= 0, ref_inds, -1)])


def test_atss_nine_anchors_per_location_uses_topk_locations():
    scene = random_scene(11, 6, anchors_per_location=9)
    result = lossreg.create_assigner("atss", anchors_per_location=9).assign(**scene)
    ref_inds, _ = REFERENCES["atss"](**scene, anchors_per_location=9)
    assert torch.equal(result.gt_inds, ref_inds)
    # With 9 candidates per level instead of 81 the selection differs.
    one = lossreg.create_assigner("atss").assign(**scene)
    assert not torch.equal(one.gt_inds, result.gt_inds)
