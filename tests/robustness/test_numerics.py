"""Category E: numerics. avg_factor <= 0, NaN logits into GHM-style losses, 1e30-scale boxes."""

from __future__ import annotations

import pytest
import torch
from robust_helpers import raises

import lossreg
from lossreg.ops.geometry import BoxPairGeometry

BOX_LOSSES = ["iou", "giou", "diou", "ciou", "eiou", "focal_eiou", "alpha_iou", "hcra_r"]
DELTA_LOSSES = ["l1", "smooth_l1"]
CLS_AVG = ["focal", "qfl", "vfl", "bce"]


# --------------------------------------------------------------------------- avg_factor


@pytest.mark.parametrize("avg_factor", [0, 0.0, -1, -1e-9, float("nan"), float("inf"), torch.tensor(0.0), torch.tensor(-2.0)])
@pytest.mark.parametrize("name", ["focal", "giou"])
def test_avg_factor_zero_or_negative_is_refused(name, avg_factor):
    loss = lossreg.create_loss(name)
    if name == "giou":
        args = (torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[1.0, 1, 11, 11]]))
    else:
        args = (torch.randn(3, 2), torch.tensor([0, 2, 1]))
    with raises(ValueError, "avg_factor must be a finite number > 0", "max(num_pos, 1)"):
        loss(*args, avg_factor=avg_factor)


@pytest.mark.parametrize("name", CLS_AVG)
def test_small_positive_avg_factor_divides_exactly(name):
    logits, labels, q = torch.randn(4, 3), torch.tensor([0, 1, 3, 3]), torch.rand(4)
    total = lossreg.create_loss(name, reduction="sum")(logits, labels, quality=q)
    mean = lossreg.create_loss(name)(logits, labels, quality=q, avg_factor=0.25)
    torch.testing.assert_close(mean, total / 0.25)


def test_empty_input_is_still_exactly_zero():
    out = lossreg.create_loss("focal")(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, dtype=torch.long))
    assert float(out.detach()) == 0.0 and out.requires_grad


# --------------------------------------------------------------------------- NaN logits


@pytest.mark.parametrize("name", ["ghm_c", "hcra_c"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_logits_give_a_nan_loss_not_a_bincount_error(name, value):
    loss = lossreg.create_loss(name)
    logits = torch.randn(6, 3)
    logits[2, 1] = value
    out = loss(logits, torch.tensor([0, 1, 2, 3, 3, -1]), quality=torch.rand(6))
    assert out.dim() == 0  # a number (NaN or inf for the trainer's divergence check), not a bincount error
    assert torch.isfinite(loss.acc_sum).all()  # the running density never records them


@pytest.mark.parametrize("name", ["ghm_c", "hcra_c"])
def test_nan_logits_leave_the_state_of_the_finite_elements(name):
    logits = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    labels, q = torch.tensor([0, 1, 2, 2, 0, 1, 2, 2]), torch.rand(8, generator=torch.Generator().manual_seed(1))
    clean, dirty = lossreg.create_loss(name), lossreg.create_loss(name)
    clean(logits, labels, quality=q)
    bad = logits.clone()
    bad[3, 0] = float("nan")
    dirty(bad, labels, quality=q)
    # one element fewer in its bin, every other bin's count the same
    assert float((clean.acc_sum - dirty.acc_sum).abs().sum()) <= (1 - clean.momentum) * 1.0 + 1e-6


def test_trainer_reports_nan_as_divergence():
    """A NaN loss reaches the trainer's check (FloatingPointError, 'training diverged' on the command line)."""
    loss = lossreg.create_loss("ghm_c")
    out = loss(torch.full((2, 2), float("nan")), torch.tensor([0, 2]))
    assert torch.isnan(out)


# --------------------------------------------------------------------------- huge boxes


def _pair(scale: float, offset: float = 0.0):
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 1.0, 9.0, 14.0], [0.0, 0.0, 4.0, 4.0]]) * scale + offset
    target = torch.tensor([[1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 8.0, 9.0]]) * scale + offset
    return pred, target


@pytest.mark.parametrize("name", BOX_LOSSES)
@pytest.mark.parametrize("scale", [1e13, 1e20, 1e30, 1e37])
def test_box_losses_are_scale_invariant_up_to_1e37(name, scale):
    loss = lossreg.create_loss(name, reduction="none").eval()
    scores = torch.tensor([0.5, 0.7, 0.2])
    ref = loss(*_pair(1.0), scores=scores)
    got = loss(*_pair(scale), scores=scores)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", BOX_LOSSES)
def test_box_losses_far_from_the_origin(name):
    loss = lossreg.create_loss(name, reduction="none").eval()
    scores = torch.tensor([0.5, 0.7, 0.2])
    ref = loss(*_pair(1e20), scores=scores)
    got = loss(*_pair(1e20, offset=3e21), scores=scores)
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", BOX_LOSSES)
def test_huge_box_gradients_are_finite(name):
    pred, target = _pair(1e30)
    pred.requires_grad_(True)
    lossreg.create_loss(name)(pred, target, scores=torch.tensor([0.5, 0.7, 0.2])).backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("name", DELTA_LOSSES)
def test_delta_losses_stay_finite_on_huge_deltas(name):
    out = lossreg.create_loss(name, reduction="none")(*_pair(1e30))
    assert torch.isfinite(out).all()


def test_ordinary_boxes_are_bit_for_bit_unchanged():
    pred, target = _pair(1.0)
    g = BoxPairGeometry(pred, target)
    assert torch.equal(g.pred, pred) and torch.equal(g.target, target)
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    assert torch.equal(g.iou, inter / (area(pred) + area(target) - inter + g.eps))


def test_a_huge_row_does_not_change_its_neighbours():
    small_p, small_t = _pair(1.0)
    big_p, big_t = _pair(1e30)
    mixed = lossreg.create_loss("giou", reduction="none")(torch.cat([small_p, big_p]), torch.cat([small_t, big_t]))
    alone = lossreg.create_loss("giou", reduction="none")(small_p, small_t)
    assert torch.equal(mixed[:3], alone)
