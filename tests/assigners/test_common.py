"""The one interface shared by every assigner: registry entries, edge cases, batching, chunking, determinism."""

from __future__ import annotations

import pytest
import torch
from _reference_assigners import grid_anchors, random_scene
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import lossreg

NAMES = ["atss", "eatss", "fcos", "max_iou"]
ANCHORS, SIZES = grid_anchors(128)  # 341 anchors; level 0 is 16 x 16, anchor 16 * row + col at (8 col + 4, 8 row + 4)


def _assigner(name: str, **kwargs):
    return lossreg.create_assigner(name, **kwargs)


def _centers(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


# --------------------------------------------------------------------------- registry


def test_registered_with_documented_defaults():
    assert set(NAMES) <= set(lossreg.list_components("assigner"))
    params = {name: lossreg.component_info("assigner", name)["params"] for name in NAMES}
    assert params["max_iou"] == {"pos_iou_thr": 0.5, "neg_iou_thr": 0.4, "min_pos_iou": 0.0, "match_low_quality": True,
                                 "low_quality_gt": "claimant"}
    assert params["atss"] == {"topk": 9, "anchors_per_location": 1}
    assert params["eatss"] == {"topk": 9, "extra": 3, "anchors_per_location": 1, "rank_by": "iou_or_score"}
    assert params["fcos"]["center_sampling"] is True and params["fcos"]["radius"] == 1.5
    # None: taken from the head (bind_levels); on its own the assigner uses FCOS's 8-128 pyramid
    assert params["fcos"]["strides"] is None and params["fcos"]["scale_ranges"] is None
    assert lossreg.create_assigner("fcos").strides == (8, 16, 32, 64, 128)
    for name in NAMES:
        info = lossreg.component_info("assigner", name)
        assert info["paper"] and info["doc"].splitlines()[0].strip()
        assert "Parameters" in info["doc"] and "Shapes" in info["doc"]


def test_unknown_keyword_names_the_component():
    with pytest.raises(TypeError, match="eatss"):
        lossreg.create_assigner("eatss", extras=3)


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("name", NAMES)
def test_no_ground_truths_is_all_background(name):
    r = _assigner(name).assign(ANCHORS, SIZES, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert r.num_gts == 0 and r.gt_inds.tolist() == [-1] * 341
    assert r.labels.tolist() == [-1] * 341 and not r.max_iou.any()
    # An ignore region still marks the anchors centred in it, borders included: level-0 centres
    # (4|12, 4|12) and the level-1 centre (8, 8).
    r = _assigner(name).assign(
        ANCHORS, SIZES, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), gt_ignore=torch.tensor([[0.0, 0, 12, 12]])
    )
    assert r.pos_inds.numel() == 0 and r.ignore_mask.nonzero().flatten().tolist() == [0, 1, 16, 17, 256]


@pytest.mark.parametrize("name", NAMES)
def test_one_ground_truth(name):
    gt = torch.tensor([[30.0, 22, 90, 100]])
    r = _assigner(name).assign(ANCHORS, SIZES, gt, torch.tensor([4]))
    assert r.num_pos > 0
    assert set(r.gt_inds[r.pos_mask].tolist()) == {0} and set(r.labels[r.pos_mask].tolist()) == {4}
    assert bool((r.max_iou[r.pos_mask] > 0).all()) and not r.max_iou[~r.pos_mask].any()


@pytest.mark.parametrize(
    "name, expected",
    [
        # Every 64 px level-0 anchor centred at 4..28 contains the 2 px gt: 16 anchors tie for its max IoU.
        ("max_iou", sorted(16 * row + col for row in range(4) for col in range(4))),
        # Only the anchor (point) centred at (4, 4) has its centre inside the gt.
        ("atss", [0]),
        ("eatss", [0]),  # D_g = 0: nothing to add
        ("fcos", [0]),
    ],
)
def test_gt_smaller_than_any_anchor(name, expected):
    r = _assigner(name).assign(ANCHORS, SIZES, torch.tensor([[3.0, 3, 5, 5]]), torch.tensor([1]))
    assert r.pos_inds.tolist() == expected


@pytest.mark.parametrize("name", NAMES)
def test_identical_gts_go_to_the_lower_index(name):
    gt = torch.tensor([[20.0, 30, 70, 90]])
    single = _assigner(name).assign(ANCHORS, SIZES, gt, torch.tensor([2]))
    double = _assigner(name).assign(ANCHORS, SIZES, gt.repeat(2, 1), torch.tensor([2, 3]))
    assert single.num_pos > 0
    assert torch.equal(single.gt_inds, double.gt_inds) and torch.equal(single.max_iou, double.max_iou)


@pytest.mark.parametrize("name", NAMES)
def test_gt_partly_outside_the_image(name):
    gt = torch.tensor([[-40.0, -40, 40, 40]])  # centre at the image corner
    r = _assigner(name).assign(ANCHORS, SIZES, gt, torch.tensor([0]))
    assert r.num_pos > 0
    if name != "max_iou":  # the centre-based assigners only take anchors centred inside the gt
        centers = _centers(ANCHORS[r.pos_mask])
        assert bool(((centers > -40) & (centers < 40)).all())


@pytest.mark.parametrize("name", NAMES)
def test_ignore_regions_only_touch_non_positives(name):
    scene = {
        "anchors": ANCHORS,
        "level_sizes": SIZES,
        "gt_boxes": torch.tensor([[10.0, 10, 60, 60], [70, 70, 120, 110]]),
        "gt_labels": torch.tensor([0, 1]),
    }
    region = torch.tensor([[0.0, 0, 40, 40], [100, 100, 110, 128]])  # over part of gt 0's positives
    plain = _assigner(name).assign(**scene)
    ignored = _assigner(name).assign(**scene, gt_ignore=region)
    centers = _centers(ANCHORS)
    in_region = torch.zeros(len(centers), dtype=torch.bool)
    for x1, y1, x2, y2 in region.tolist():
        in_region |= (centers[:, 0] >= x1) & (centers[:, 0] <= x2) & (centers[:, 1] >= y1) & (centers[:, 1] <= y2)
    expected = torch.where(in_region & ~plain.pos_mask, torch.full_like(plain.gt_inds, -2), plain.gt_inds)
    assert torch.equal(ignored.gt_inds, expected)
    assert (in_region & ~plain.pos_mask).any() and (in_region & plain.pos_mask).any()


# --------------------------------------------------------------------------- batching and chunking


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    counts=st.lists(st.integers(0, 8), min_size=1, max_size=4),
    use_preds=st.booleans(),
    chunk=st.sampled_from([None, 1, 500]),
)
def test_assign_batch_equals_per_image_assign(name, seed, counts, use_preds, chunk):
    scenes = [random_scene(seed + i, n, integer=bool(i % 2)) for i, n in enumerate(counts)]
    ignore = [torch.tensor([[0.0, 0, 30, 30]]) if i % 2 else None for i in range(len(counts))]
    assigner = _assigner(name)
    assigner.chunk_elements = chunk  # 1: one gt per chunk; 500: chunks cut through images
    preds = {}
    if use_preds:
        preds = {"pred_boxes": [s["pred_boxes"] for s in scenes], "pred_scores": [s["pred_scores"] for s in scenes]}
    batch = assigner.assign_batch(
        ANCHORS, SIZES, [s["gt_boxes"] for s in scenes], [s["gt_labels"] for s in scenes], gt_ignore=ignore, **preds
    )
    assigner.chunk_elements = None
    for i, (scene, res) in enumerate(zip(scenes, batch)):
        one = assigner.assign(
            ANCHORS,
            SIZES,
            scene["gt_boxes"],
            scene["gt_labels"],
            pred_boxes=scene["pred_boxes"] if use_preds else None,
            pred_scores=scene["pred_scores"] if use_preds else None,
            gt_ignore=ignore[i],
        )
        assert res.equal(one)


@pytest.mark.parametrize("name", NAMES)
def test_assign_batch_accepts_stacked_predictions_and_per_image_anchors(name):
    scenes = [random_scene(s, 5) for s in (1, 2)]
    boxes, labels = [s["gt_boxes"] for s in scenes], [s["gt_labels"] for s in scenes]
    preds = {
        "pred_boxes": torch.stack([s["pred_boxes"] for s in scenes]),
        "pred_scores": torch.stack([s["pred_scores"] for s in scenes]),
    }
    shared = _assigner(name).assign_batch(ANCHORS, SIZES, boxes, labels, **preds)
    listed = _assigner(name).assign_batch([ANCHORS, ANCHORS.clone()], SIZES, boxes, labels, **preds)
    # Different anchors per image fall back to one image at a time.
    shifted = ANCHORS + 0.5
    mixed = _assigner(name).assign_batch([ANCHORS, shifted], SIZES, boxes, labels, **preds)
    alone = _assigner(name).assign(shifted, SIZES, boxes[1], labels[1], preds["pred_boxes"][1], preds["pred_scores"][1])
    assert all(a.equal(b) for a, b in zip(shared, listed))
    assert mixed[0].equal(shared[0]) and mixed[1].equal(alone)


def test_assign_batch_default_loops_over_a_subclass_assign():
    from lossreg.assigners._base import BaseAssigner
    from lossreg.assigners.result import AssignResult

    class Everything(BaseAssigner):
        """Every anchor to gt 0 (a third-party assigner that only implements assign)."""

        def assign(self, anchors, level_sizes, gt_boxes, gt_labels, pred_boxes=None, pred_scores=None, gt_ignore=None):
            inds = torch.zeros(len(anchors), dtype=torch.long) if len(gt_boxes) else torch.full((len(anchors),), -1)
            labels = gt_labels[inds.clamp(min=0)] if len(gt_boxes) else inds.clone()
            return AssignResult(inds, labels, torch.zeros(len(anchors)), len(gt_boxes), tuple(level_sizes))

    out = Everything().assign_batch(
        ANCHORS, SIZES, [torch.ones(1, 4), torch.zeros(0, 4)], [torch.tensor([3]), torch.zeros(0)]
    )
    assert out[0].labels.unique().tolist() == [3] and out[1].gt_inds.unique().tolist() == [-1]


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("name", NAMES)
def test_a_thousand_gts_are_processed_in_chunks(name):
    anchors, sizes = grid_anchors(512)  # 5,456 anchors
    scene = random_scene(7, 1000, image_size=512)
    assigner = _assigner(name)
    assigner.chunk_elements = 1 << 16
    with _LargestTensor() as mode:
        chunked = assigner.assign(anchors, sizes, scene["gt_boxes"], scene["gt_labels"])
    # Nothing near a dense [G, A] matrix (5.5M entries) is ever built.
    assert mode.largest <= 1_000 * 5_456 // 10
    assigner.chunk_elements = 1 << 24  # one chunk: the dense computation
    whole = assigner.assign(anchors, sizes, scene["gt_boxes"], scene["gt_labels"])
    assert chunked.equal(whole)
    assert chunked.num_pos > 0


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_across_runs_threads_and_chunks(name):
    # Integer coordinates put gt centres on the anchor grid: many exact ties.
    scene = random_scene(8, 12, integer=True)
    first = _assigner(name).assign(**scene)
    assert first.equal(_assigner(name).assign(**scene))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single_thread = _assigner(name).assign(**scene)
    finally:
        torch.set_num_threads(threads)
    assert first.equal(single_thread)
    tiny = _assigner(name)
    tiny.chunk_elements = 1
    assert first.equal(tiny.assign(**scene))


@pytest.mark.parametrize("name", NAMES)
def test_float64_anchors(name):
    gt = torch.tensor([[30.0, 22, 90, 100]])
    r32 = _assigner(name).assign(ANCHORS, SIZES, gt, torch.tensor([1]))
    r64 = _assigner(name).assign(ANCHORS.double(), SIZES, gt.double(), torch.tensor([1]))
    assert r64.max_iou.dtype == torch.float64
    assert torch.equal(r32.gt_inds, r64.gt_inds)


# --------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "change, message",
    [
        ({"level_sizes": [300, 41, 1]}, "level_sizes"),
        ({"anchors": ANCHORS[:, :3]}, r"\[A, 4\]"),
        ({"gt_boxes": torch.zeros(2, 5)}, r"\[G, 4\]"),
        ({"gt_labels": torch.zeros(3, dtype=torch.long)}, "gt_labels"),
        ({"gt_labels": torch.zeros(2)}, "integers"),
        ({"gt_boxes": torch.tensor([[10.0, 10, 5, 20], [0, 0, 4, 4]])}, "x2 >= x1"),
        ({"gt_boxes": torch.tensor([[0.0, 0, float("nan"), 4], [0, 0, 4, 4]])}, "NaN"),
        ({"pred_scores": torch.rand(341, 1)}, "pred_scores"),
        ({"pred_boxes": torch.rand(340, 4)}, "pred_boxes"),
        ({"gt_ignore": torch.zeros(3)}, "gt_ignore"),
    ],
)
def test_rejects_bad_inputs(name, change, message):
    args = {
        "anchors": ANCHORS,
        "level_sizes": SIZES,
        "gt_boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 50, 50]]),
        "gt_labels": torch.tensor([0, 1]),
    }
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=message):
        _assigner(name).assign(**args)
