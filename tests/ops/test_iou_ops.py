"""Aligned-pair box geometry (lossreg.ops.geometry): values by hand, torchvision, gradients, degenerate boxes."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvo

from lossreg.ops.geometry import BoxPairGeometry, aligned_box_iou, safe_pow

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Three pairs whose geometry is easy on paper:
#   A overlap:  (0,0,2,2) vs (1,1,3,3): inter 1, union 7, E = (0,0,3,3) area 9, c^2 = 18, rho^2 = 1 + 1 = 2
#   B nested:   (0,0,4,2) vs (0,0,2,2): inter 4, union 8, E = (0,0,4,2) area 8, c^2 = 20, rho^2 = 1
#   C disjoint: (0,0,1,1) vs (2,0,3,1): inter 0, union 2, E = (0,0,3,1) area 3, c^2 = 10, rho^2 = 4
PRED = torch.tensor([[0.0, 0, 2, 2], [0, 0, 4, 2], [0, 0, 1, 1]])
TARGET = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [2, 0, 3, 1]])


def random_pairs(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """Half jittered copies of the targets (overlapping), half independent boxes (mostly disjoint)."""
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * 200
    wh = torch.rand(n, 2, generator=generator, dtype=dtype) * 60 + 2
    target = torch.cat([xy, xy + wh], 1)
    jitter = target + torch.randn(n, 4, generator=generator, dtype=dtype) * 8
    jitter = torch.cat([jitter[:, :2], torch.maximum(jitter[:, 2:], jitter[:, :2] + 1)], 1)
    xy2 = torch.rand(n, 2, generator=generator, dtype=dtype) * 400
    other = torch.cat([xy2, xy2 + wh.flip(1)], 1)
    pred = torch.where(torch.arange(n)[:, None] % 2 == 0, jitter, other)
    return pred, target


def test_hand_computed_geometry():
    g = BoxPairGeometry(PRED, TARGET)
    torch.testing.assert_close(g.inter, torch.tensor([1.0, 4, 0]))
    torch.testing.assert_close(g.union, torch.tensor([7.0, 8, 2]))
    torch.testing.assert_close(g.iou, torch.tensor([1 / 7, 0.5, 0.0]))
    torch.testing.assert_close(g.enclose_wh, torch.tensor([[3.0, 3], [4, 2], [3, 1]]))
    torch.testing.assert_close(g.enclose_area, torch.tensor([9.0, 8, 3]))
    torch.testing.assert_close(g.diag2, torch.tensor([18.0, 20, 10]))
    torch.testing.assert_close(g.rho2, torch.tensor([2.0, 1, 4]))
    torch.testing.assert_close(g.giou_penalty, torch.tensor([2 / 9, 0.0, 1 / 3]))
    torch.testing.assert_close(g.diou_penalty, torch.tensor([1 / 9, 1 / 20, 0.4]))
    # EIoU side terms: only B differs in width: (4 - 2)^2 / 4^2.
    torch.testing.assert_close(g.wh_penalty, torch.tensor([0.0, 0.25, 0.0]))
    # v = 4/pi^2 (atan(2/2) - atan(4/2))^2 = 0.0419565 for B; a = v / (1 - 0.5 + v) = 0.0774167.
    torch.testing.assert_close(g.aspect_v, torch.tensor([0.0, 0.0419565, 0.0]), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g.ciou_alpha, torch.tensor([0.0, 0.0774167, 0.0]), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_aligned_iou_matches_torchvision_box_iou_diagonal(device):
    pred, target = random_pairs(300, torch.Generator().manual_seed(0))
    pred, target = pred.to(device), target.to(device)
    expected = tvo.box_iou(pred, target).diagonal()
    assert (expected == 0).any() and (expected > 0.3).any()  # both regimes are exercised
    torch.testing.assert_close(aligned_box_iou(pred, target), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_geometry_matches_torchvision_loss_terms(device):
    pred, target = random_pairs(300, torch.Generator().manual_seed(1))
    pred, target = pred.to(device), target.to(device)
    g = BoxPairGeometry(pred, target)
    giou_tv = 1 - tvo.generalized_box_iou(pred, target).diagonal()
    torch.testing.assert_close(1 - g.iou + g.giou_penalty, giou_tv, atol=1e-5, rtol=1e-5)
    diou_tv = tvo.distance_box_iou_loss(pred, target)
    torch.testing.assert_close(1 - g.iou + g.diou_penalty, diou_tv, atol=1e-5, rtol=1e-5)


def test_terms_are_computed_once_and_cached():
    g = BoxPairGeometry(PRED, TARGET)
    assert g.iou is g.iou and g.inter is g.inter


def test_alpha_first_does_not_strip_the_graph_of_v_or_iou():
    # ciou_alpha is detached; reading it first must not cache aspect_v/iou without their graph.
    pred = PRED.clone().requires_grad_(True)
    g = BoxPairGeometry(pred, TARGET)
    assert not g.ciou_alpha.requires_grad
    assert g.aspect_v.requires_grad and g.iou.requires_grad


def test_gradcheck_float64():
    pred, target = random_pairs(12, torch.Generator().manual_seed(2), dtype=torch.float64)
    pred.requires_grad_(True)

    def terms(p: torch.Tensor) -> tuple[torch.Tensor, ...]:
        g = BoxPairGeometry(p, target)
        return g.iou, g.giou_penalty, g.diou_penalty, g.aspect_v, g.wh_penalty, g.rho2, g.diag2

    assert torch.autograd.gradcheck(terms, (pred,), eps=1e-6, atol=1e-6)


def test_degenerate_boxes_are_finite_with_finite_gradients():
    pred = torch.tensor(
        [
            [5.0, 5, 5, 5],  # a point
            [0, 0, 0, 10],  # zero width
            [0, 0, 10, 0],  # zero height
            [1, 1, 3, 3],  # identical to its target
            [0, 0, 1, 1],  # very far from its target
        ],
        requires_grad=True,
    )
    target = torch.tensor([[5.0, 5, 5, 5], [0, 0, 5, 10], [0, 0, 10, 10], [1, 1, 3, 3], [1e5, 1e5, 1e5 + 1, 1e5 + 1]])
    g = BoxPairGeometry(pred, target)
    terms = [g.iou, g.giou_penalty, g.diou_penalty, g.aspect_v, g.wh_penalty]
    total = sum(t.sum() for t in terms)
    total.backward()
    for t in terms:
        assert torch.isfinite(t).all()
    assert torch.isfinite(pred.grad).all()
    assert g.iou[0] == 0 and g.iou[2] == 0
    torch.testing.assert_close(g.iou[3], torch.tensor(1.0))
    # Zero-height box: atan(w / (h + eps)) -> pi/2, so v = 4/pi^2 (pi/4 - pi/2)^2 = 1/4.
    torch.testing.assert_close(g.aspect_v[2], torch.tensor(0.25))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        BoxPairGeometry(torch.zeros(3, 4), torch.zeros(2, 4))


def test_safe_pow_values_and_gradient_at_zero():
    x = torch.tensor([0.0, 0.25, 1.0], requires_grad=True)
    y = safe_pow(x, 0.5)
    torch.testing.assert_close(y, torch.tensor([0.0, 0.5, 1.0]))
    y.sum().backward()
    # d/dx sqrt(x) = 0.5 / sqrt(x): 1.0 at 0.25, 0.5 at 1; 0 (not inf) at 0.
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 1.0, 0.5]))
    torch.testing.assert_close(safe_pow(torch.tensor([0.5, 2.0]), 3.0), torch.tensor([0.125, 8.0]))


def test_float64_is_kept():
    g = BoxPairGeometry(PRED.double(), TARGET.double())
    assert g.iou.dtype == torch.float64
    assert math.isclose(g.iou[0].item(), 1 / 7, rel_tol=1e-7)
