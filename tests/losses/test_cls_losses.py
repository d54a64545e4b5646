"""Classification losses (issue 3): bce, focal, ghm_c, qfl, vfl, dr, hcra_c, ce.

Reference values are hand-computed from the definitions in each loss's docstring with the
``math`` module (derivations in the comments), never by calling the implementation.
Notation: ``s(x) = sigmoid(x)``, ``sp(x) = log(1 + e^x)`` (so ``BCE(x, 1) = sp(-x)``,
``BCE(x, 0) = sp(x)``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

import lossreg
from lossreg.losses.ce import CrossEntropyLoss
from lossreg.losses.dr import DRLoss
from lossreg.losses.ghm import GHMCLoss
from lossreg.losses.hcra_c import HCRACLoss

CLS_LOSSES = ["bce", "ce", "dr", "focal", "ghm_c", "hcra_c", "qfl", "vfl"]
FAST = settings(max_examples=30, deadline=None)


def _inputs(n: int = 12, c: int = 3, seed: int = 0, scale: float = 2.0, name: str = ""):
    """Random logits (with a background column for ``ce``), labels with ignored rows, quality."""
    gen = torch.Generator().manual_seed(seed)
    cols = c + 1 if name == "ce" else c
    logits = torch.randn(n, cols, generator=gen) * scale
    labels = torch.randint(0, c + 1, (n,), generator=gen)
    labels[::5] = -1
    quality = torch.rand(n, generator=gen)
    return logits, labels, quality


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_all_classification_losses_registered() -> None:
    names = lossreg.list_components("loss", task="cls")
    assert set(CLS_LOSSES) <= set(names)
    for name in CLS_LOSSES:
        info = lossreg.component_info("loss", name)
        assert info["task"] == "cls" and info["paper"]
        assert "Paper:" in info["doc"] and "Defaults:" in info["doc"] and "Shapes:" in info["doc"]


def test_documented_defaults() -> None:
    params = {n: lossreg.component_info("loss", n)["params"] for n in CLS_LOSSES}
    assert params["focal"]["alpha"] == 0.25 and params["focal"]["gamma"] == 2.0
    assert params["ghm_c"]["bins"] == 30 and params["ghm_c"]["momentum"] == 0.75  # GHM paper / mmdet configs
    assert params["qfl"]["beta"] == 2.0
    assert params["vfl"]["alpha"] == 0.75 and params["vfl"]["gamma"] == 2.0
    assert params["dr"]["margin"] == 0.5 and params["dr"]["lambda_pos"] == 1.0 and params["dr"]["L"] == 6.0
    assert params["dr"]["lambda_neg"] == pytest.approx(0.1 / math.log(3.5))
    assert params["dr"]["tau"] == 4.0 and params["dr"]["grouping"] == "batch"
    hc = params["hcra_c"]
    assert (hc["theta"], hc["bins"], hc["momentum"], hc["mu"], hc["alpha"]) == (5.0, 20, 0.75, 0.7, 0.1)
    assert hc["rci_mode"] == "consistent"


# --------------------------------------------------------------------------- references: focal, bce


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.5), (-1.0, 0.0)])
def test_focal_matches_torchvision(alpha: float, gamma: float) -> None:
    logits, labels, _ = _inputs(n=40, c=5, seed=1, scale=4.0)
    valid = labels >= 0
    targets = torch.zeros(40, 5)
    pos = valid & (labels < 5)
    targets[pos, labels[pos]] = 1.0
    ref = torchvision.ops.sigmoid_focal_loss(logits[valid], targets[valid], alpha=alpha, gamma=gamma, reduction="none")
    loss = lossreg.create_loss("focal", alpha=alpha, gamma=gamma, reduction="none")
    out = loss(logits, labels)
    torch.testing.assert_close(out[valid], ref, rtol=1e-5, atol=1e-6)
    assert (out[~valid] == 0).all()
    mean = lossreg.create_loss("focal", alpha=alpha, gamma=gamma)(logits, labels, avg_factor=7.0)
    torch.testing.assert_close(mean, ref.sum() / 7.0, rtol=1e-5, atol=1e-6)


def test_bce_matches_torch() -> None:
    logits, labels, _ = _inputs(n=30, c=4, seed=2)
    valid = labels >= 0
    targets = F.one_hot(labels.clamp(min=0), 5)[:, :4].float()
    ref = torch.nn.BCEWithLogitsLoss(reduction="none")(logits, targets)
    out = lossreg.create_loss("bce", reduction="none")(logits, labels)
    torch.testing.assert_close(out[valid], ref[valid])
    assert (out[~valid] == 0).all()
    torch.testing.assert_close(lossreg.create_loss("bce")(logits, labels), ref[valid].mean())


def test_bce_soft_target() -> None:
    logits, labels, _ = _inputs(n=10, c=1, seed=3)
    soft = torch.rand(10)
    valid = labels >= 0
    out = lossreg.create_loss("bce", reduction="none")(logits, labels, target=soft)
    ref = F.binary_cross_entropy(torch.sigmoid(logits[:, 0]), soft, reduction="none")
    torch.testing.assert_close(out[valid, 0], ref[valid], rtol=1e-5, atol=1e-6)
    assert (out[~valid] == 0).all()
    with pytest.raises(ValueError, match="target"):
        lossreg.create_loss("bce")(logits, labels, target=torch.rand(3))


# --------------------------------------------------------------------------- hand-computed cases

# Two rows, two classes: row 0 label 0 with quality 0.8, logits [0.5, -1]; row 1 background, logits [-2, 1].
QV_LOGITS = torch.tensor([[0.5, -1.0], [-2.0, 1.0]])
QV_LABELS = torch.tensor([0, 2])
QV_QUALITY = torch.tensor([0.8, 0.3])  # row 1 is background: qfl / vfl ignore its quality


def test_qfl_hand_computed() -> None:
    # y = [[0.8, 0], [0, 0]]; element = |y - s(x)|^2 * BCE(x, y)
    # (0,0): (0.8 - s(0.5))^2 * -(0.8 ln s(0.5) + 0.2 ln(1 - s(0.5))) = 0.0315213 * 0.5740772 = 0.018095302
    # (0,1): s(-1)^2 * sp(-1) = 0.022658058;  (1,0): s(-2)^2 * sp(-2) = 0.001803563
    # (1,1): s(1)^2 * sp(1) = 0.701868303;   mean = sum / 4 = 0.186106306
    expected = torch.tensor([[0.01809530212, 0.02265805751], [0.00180356284, 0.70186830341]])
    out = lossreg.create_loss("qfl", reduction="none")(QV_LOGITS, QV_LABELS, QV_QUALITY)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-7)
    mean = lossreg.create_loss("qfl")(QV_LOGITS, QV_LABELS, QV_QUALITY)
    assert mean.item() == pytest.approx(0.18610630647, rel=1e-5)


def test_vfl_hand_computed() -> None:
    # (0,0): q = 0.8 > 0: 0.8 * BCE(0.5, 0.8) = 0.459261587
    # q = 0 elsewhere: 0.75 * s(x)^2 * sp(x): (0,1) 0.016993543, (1,0) 0.001352672, (1,1) 0.526401228
    expected = torch.tensor([[0.45926158734, 0.01699354313], [0.00135267213, 0.52640122756]])
    out = lossreg.create_loss("vfl", reduction="none")(QV_LOGITS, QV_LABELS, QV_QUALITY)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-7)
    mean = lossreg.create_loss("vfl")(QV_LOGITS, QV_LABELS, QV_QUALITY)
    assert mean.item() == pytest.approx(0.25100225754, rel=1e-5)


# Three valid rows + one ignored row, two classes; shared by ghm_c, hcra_c and dr.
# Row 0 label 0, row 1 background, row 2 label 1, row 3 ignored.
GH_LOGITS = torch.tensor([[2.0, -2.0], [0.3, -3.0], [1.0, -1.0], [5.0, 5.0]])
GH_LABELS = torch.tensor([0, 2, 1, -1])
GH_QUALITY = torch.tensor([0.8, 0.4, 0.6, 0.9])
# g = |s(x) - t| = [[0.1192, 0.1192], [0.5744, 0.0474], [0.7311, 0.7311]] (ignored row not binned).
# bins=10 -> bins [[1, 1], [5, 0], [7, 7]]; bins=20 -> [[2, 2], [11, 0], [14, 14]]; bins=30 -> [[3, 3],
# [17, 1], [21, 21]]: all give counts {2, 1, 1, 2} over 4 non-empty bins, tot = 6, so beta = tot / num / 4 = [[.75, .75], [1.5, 1.5], [.75, .75]].
GH_BETA = torch.tensor([[0.75, 0.75], [1.5, 1.5], [0.75, 0.75]])
# BCE: [[sp(-2), sp(-2)], [sp(0.3), sp(-3)], [sp(1), sp(1)]]
GH_BCE = torch.tensor([[0.12692801104, 0.12692801104], [0.85435524447, 0.04858735157], [1.31326168752, 1.31326168752]])


def test_ghm_c_hand_computed_without_momentum() -> None:
    loss = GHMCLoss(momentum=0.0, reduction="none")
    out = loss(GH_LOGITS, GH_LABELS)
    torch.testing.assert_close(out[:3], GH_BETA * GH_BCE, rtol=1e-5, atol=1e-7)
    assert (out[3] == 0).all()
    # mean = sum(beta * BCE) / tot = 3.514698442 / 6; avg_factor is ignored (normalisation built in)
    mean = GHMCLoss(momentum=0.0)(GH_LOGITS, GH_LABELS, avg_factor=123.0)
    assert mean.item() == pytest.approx(0.58578307365, rel=1e-5)


def test_ghm_c_momentum_buffer_updates_and_is_in_state_dict() -> None:
    loss = lossreg.create_loss("ghm_c")  # bins 30, momentum 0.75
    assert "acc_sum" in loss.state_dict() and loss.acc_sum.shape == (30,)
    assert (loss.acc_sum == 0).all()
    # Step 1: acc = 0.25 * num -> weights 4x the plain GHM weights: mean = 4 * 0.585783074
    first = loss(GH_LOGITS, GH_LABELS)
    assert first.item() == pytest.approx(2.34313229460, rel=1e-5)
    expected_acc = torch.zeros(30)
    expected_acc[[1, 3, 17, 21]] = torch.tensor([0.25, 0.5, 0.25, 0.5])
    torch.testing.assert_close(loss.acc_sum, expected_acc)
    # Step 2: acc = 0.75 * 0.25 num + 0.25 num = 0.4375 num -> mean = 0.585783074 / 0.4375
    second = loss(GH_LOGITS, GH_LABELS)
    assert second.item() == pytest.approx(1.33893273977, rel=1e-5)
    torch.testing.assert_close(loss.acc_sum, expected_acc * 1.75)
    # The state travels with state_dict; eval mode reads it without updating it.
    restored = lossreg.create_loss("ghm_c")
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored.acc_sum, loss.acc_sum)
    restored.eval()
    before = restored.acc_sum.clone()
    restored(GH_LOGITS, GH_LABELS)
    torch.testing.assert_close(restored.acc_sum, before)


def _authors_ghmc(logits, labels, acc_sum, bins=30, mmt=0.75):
    """GHM-C as the authors' GHMC_Loss / mmdetection's GHMC compute it (re-typed from reading them):
    float bin edges with the last widened by 1e-6, a loop over bins, weights tot / acc / n_valid_bins,
    loss = sum(w * BCE) / tot. ``acc_sum`` is a Python list, updated in place."""
    c = logits.shape[1]
    target = torch.zeros_like(logits)
    fg = (labels >= 0) & (labels < c)
    target[fg, labels[fg]] = 1.0
    valid = (labels >= 0)[:, None].expand_as(logits)
    edges = [float(x) / bins for x in range(bins + 1)]
    edges[-1] += 1e-6
    g = torch.abs(logits.sigmoid().detach() - target)
    tot = max(valid.float().sum().item(), 1.0)
    weights = torch.zeros_like(logits)
    n = 0
    for i in range(bins):
        inds = (g >= edges[i]) & (g < edges[i + 1]) & valid
        num_in_bin = inds.sum().item()
        if num_in_bin > 0:
            acc_sum[i] = mmt * acc_sum[i] + (1 - mmt) * num_in_bin
            weights[inds] = tot / acc_sum[i]
            n += 1
    if n > 0:
        weights = weights / n
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (weights * bce).sum() / tot


def test_ghm_c_default_matches_the_authors_loop_over_steps() -> None:
    loss = lossreg.create_loss("ghm_c")
    acc = [0.0] * 30
    gen = torch.Generator().manual_seed(5)
    for _ in range(4):
        logits = torch.randn(64, 5, generator=gen) * 3
        labels = torch.randint(0, 6, (64,), generator=gen)
        labels[::9] = -1
        ref = _authors_ghmc(logits, labels, acc)
        assert loss(logits, labels).item() == pytest.approx(ref.item(), rel=1e-5)
        torch.testing.assert_close(loss.acc_sum, torch.tensor(acc, dtype=torch.float32))


def test_ghm_c_eval_without_history_uses_batch_counts() -> None:
    loss = lossreg.create_loss("ghm_c").eval()
    assert loss(GH_LOGITS, GH_LABELS).item() == pytest.approx(0.58578307365, rel=1e-5)


# hcra_c on the GH rows with quality q = [0.8, 0.4, 0.6], theta 5, mu 0.7, alpha 0.1, bins 20 (beta = GH_BETA):
# omega at t = 0: 1 - q (q - 0.7)^2 = [0.992, 0.964, 0.994]; omega at t = 1: q.
# Row 0 target (0,0): p = s(2) = 0.8808 > q = 0.8:
#   consistent -> RCI 0;  paper -> RCI = s(5 (0.8808 - 0.8 + 0.1)) = s(0.903985) = 0.711768
# Row 2 target (2,1): p = s(-1) = 0.2689 < q = 0.6:
#   consistent -> RCI = s(5 (0.6 - 0.2689 + 0.1)) = s(2.155293) = 0.896162;  paper -> RCI 0
# factor = beta * omega * RCI:
HC_FACTOR = {
    "consistent": torch.tensor([[0.0, 0.744], [1.446, 1.446], [0.7455, 0.40327305432]]),
    "paper": torch.tensor([[0.42706068745, 0.744], [1.446, 1.446], [0.7455, 0.0]]),
}
HC_MEAN = {"consistent": 0.48478817900, "paper": 0.40555533097}  # sum(factor * BCE) / 6


@pytest.mark.parametrize("mode", ["consistent", "paper"])
def test_hcra_c_hand_computed(mode: str) -> None:
    loss = HCRACLoss(momentum=0.0, rci_mode=mode, reduction="none")
    out = loss(GH_LOGITS, GH_LABELS, GH_QUALITY)
    torch.testing.assert_close(out[:3], HC_FACTOR[mode] * GH_BCE, rtol=1e-5, atol=1e-7)
    assert (out[3] == 0).all()
    x = GH_LOGITS.clone().requires_grad_()
    mean = HCRACLoss(momentum=0.0, rci_mode=mode)(x, GH_LABELS, GH_QUALITY, avg_factor=99.0)
    assert mean.item() == pytest.approx(HC_MEAN[mode], rel=1e-5)
    # Every factor is detached: d mean / dx = factor * (s(x) - t) / tot.
    mean.backward()
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(x.grad[:3], HC_FACTOR[mode] * (torch.sigmoid(GH_LOGITS[:3]) - t) / 6)
    assert (x.grad[3] == 0).all()


def test_hcra_c_default_is_consistent_and_uses_ghm_momentum() -> None:
    loss = lossreg.create_loss("hcra_c")
    assert loss.rci_mode == "consistent" and "acc_sum" in loss.state_dict() and loss.acc_sum.shape == (20,)
    # First step with momentum 0.75: acc = 0.25 * num -> 4x the momentum-free loss.
    assert loss(GH_LOGITS, GH_LABELS, GH_QUALITY).item() == pytest.approx(4 * HC_MEAN["consistent"], rel=1e-5)
    assert loss.acc_sum[[0, 2, 11, 14]].tolist() == [0.25, 0.5, 0.25, 0.5]


def test_hcra_c_paper_mode_starves_positives_at_init() -> None:
    # The documented reason for rci_mode="consistent": at the focal prior (p ~ 0.01 < IoU) the printed
    # eq. 5 gives every positive weight 0, so no positive gets a gradient.
    n, c = 50, 4
    logits = torch.full((n, c), -4.6, requires_grad=True)
    labels = torch.arange(n) % (c + 1)
    quality = torch.rand(n, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.3
    pos = labels < c
    HCRACLoss(rci_mode="paper")(logits, labels, quality).backward()
    assert (logits.grad[pos, labels[pos]] == 0).all()
    logits.grad = None
    HCRACLoss(rci_mode="consistent")(logits, labels, quality).backward()
    assert (logits.grad[pos, labels[pos]] < 0).all()


def _authors_sigmoid_dr(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The authors' ``SigmoidDRLoss.forward`` (idstcv/DR_loss, sigmoid_dr_loss.py), re-typed from reading it.

    Their targets are 1..C for a class, 0 background, -1 ignored; ours 0..C-1, C, -1.
    """
    pos_lambda, neg_lambda, L, tau, margin = 1.0, 0.1 / math.log(3.5), 6.0, 4.0, 0.5
    targets = torch.where(labels == num_classes, 0, torch.where(labels >= 0, labels + 1, labels))
    class_range = torch.arange(1, num_classes + 1).unsqueeze(0)
    t = targets.unsqueeze(1)
    pos_ind = t == class_range
    neg_ind = (t != class_range) * (t >= 0)
    pos_prob = logits[pos_ind].sigmoid()
    neg_prob = logits[neg_ind].sigmoid()
    neg_q = F.softmax(neg_prob / neg_lambda, dim=0)
    neg_dist = torch.sum(neg_q * neg_prob)
    if pos_prob.numel() > 0:
        pos_q = F.softmax(-pos_prob / pos_lambda, dim=0)
        pos_dist = torch.sum(pos_q * pos_prob)
        return tau * torch.log(1.0 + torch.exp(L * (neg_dist - pos_dist + margin))) / L
    return tau * torch.log(1.0 + torch.exp(L * (neg_dist - 1.0 + margin))) / L


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_positives", [True, False])
def test_dr_matches_authors_sigmoid_dr_loss(seed: int, with_positives: bool) -> None:
    # Default DRLoss = the authors' loss: all positives and negatives of the batch pooled, P+ = 1
    # without positives, times tau = 4; values and gradients.
    c = 4
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(40, c, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    labels = torch.randint(0, c + 1, (40,), generator=gen)
    labels[::7] = -1
    if not with_positives:
        labels = torch.where(labels >= 0, c, -1)
    ref = _authors_sigmoid_dr(logits, labels, c)
    (g_ref,) = torch.autograd.grad(ref, logits)
    ours = DRLoss()(logits, labels, avg_factor=17.0)  # avg_factor is ignored, as the authors' loss has none
    (g_ours,) = torch.autograd.grad(ours, logits)
    torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_ours, g_ref.to(g_ours.dtype), rtol=1e-5, atol=1e-7)


def test_dr_hand_computed_batch() -> None:
    # Rows: [2, -2] label 0, [0.3, -3] background, [1, -1] label 1, [-0.5, 0.5] label 0, [9, -9] ignored.
    # Positives s(2), s(-1), s(-0.5) = 0.880797, 0.268941, 0.377541; w = softmax(-p) -> P+ = 0.444908202.
    # Negatives s(-2), s(0.3), s(-3), s(1), s(0.5); w = softmax(p / (0.1 / ln 3.5)) -> P- = 0.695077761.
    # loss = 4 * ln(1 + e^(6 (P- - P+ + 0.5))) / 6 = 3.008035949.
    logits = torch.tensor([[2.0, -2.0], [0.3, -3.0], [1.0, -1.0], [-0.5, 0.5], [9.0, -9.0]])
    labels = torch.tensor([0, 2, 1, 0, -1])
    out = DRLoss(reduction="none")(logits, labels)
    torch.testing.assert_close(out, torch.tensor([3.00803594921]), rtol=1e-5, atol=1e-7)
    for reduction in ("mean", "sum"):
        assert DRLoss(reduction=reduction)(logits, labels).item() == pytest.approx(3.00803594921, rel=1e-5)
    # tau scales the loss; image_ids do not change the batch grouping.
    assert DRLoss(tau=1.0)(logits, labels).item() == pytest.approx(3.00803594921 / 4, rel=1e-5)
    ids = torch.tensor([0, 0, 1, 1, 1])
    assert DRLoss()(logits, labels, image_ids=ids).item() == pytest.approx(3.00803594921, rel=1e-5)
    # No positive at all (background rows only): P+ = 1. Row [0.3, -3]: P- = 0.573728175 -> 0.625730743.
    bg = DRLoss()(logits[1:2], labels[1:2])
    assert bg.item() == pytest.approx(0.62573074308, rel=1e-5)


def test_dr_hand_computed_per_image() -> None:
    # grouping="image", image_ids [0, 0, 1, 1] (classes pooled within an image).
    # Image 0: P+ = s(2) = 0.880797; negatives s(-2), s(0.3), s(-3) -> P- = 0.572219098 -> 0.949310605.
    # Image 1: positives s(-1), s(-0.5) -> P+ = 0.320295490; negatives s(1), s(0.5) -> P- = 0.708886903
    #   -> 3.557582263. Mean of the 2 images = 2.253446434.
    logits = torch.tensor([[2.0, -2.0], [0.3, -3.0], [1.0, -1.0], [-0.5, 0.5]])
    labels = torch.tensor([0, 2, 1, 0])
    image_ids = torch.tensor([0, 0, 1, 1])
    loss = DRLoss(grouping="image", reduction="none")
    out = loss(logits, labels, image_ids=image_ids)
    torch.testing.assert_close(out, torch.tensor([0.94931060497, 3.55758226258]), rtol=1e-5, atol=1e-7)
    mean = DRLoss(grouping="image")(logits, labels, image_ids=image_ids)
    assert mean.item() == pytest.approx(2.25344643377, rel=1e-5)
    # An image id with no rows is an empty group: 0 and not counted in the mean.
    gap = DRLoss(grouping="image")(logits, labels, image_ids=torch.tensor([0, 0, 2, 2]))
    assert gap.item() == pytest.approx(2.25344643377, rel=1e-5)
    with pytest.raises(ValueError, match="image_ids"):
        loss(logits, labels)


def test_dr_gradcheck_float64() -> None:
    loss = DRLoss()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(9, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 3, 3, 2, -1, 0, 3, 1])
    member = (labels >= 0)[:, None].expand(9, 3)
    pos = labels[:, None] == torch.arange(3)
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert torch.autograd.gradcheck(lambda z: loss.group_losses(z, pos, member, ids, 3)[0], (x,))
    assert torch.autograd.gradcheck(lambda z: loss.group_losses(z, pos, member, None)[0], (x,))


def test_ce_hand_computed() -> None:
    # Two classes + background column. Row 0 label 1: logsumexp(1, 2, 0.5) - 2 = 0.464368784;
    # row 1 background (label 2): logsumexp(0, -1, 3) - 3 = 0.065883904; row 2 ignored. mean = 0.265126344.
    # d mean / dx = (softmax - onehot) / 2.
    x = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [4.0, 4.0, 4.0]], requires_grad=True)
    labels = torch.tensor([1, 2, -1])
    out = CrossEntropyLoss(reduction="none")(x, labels)
    torch.testing.assert_close(out, torch.tensor([0.46436878411, 0.06588390376, 0.0]))
    mean = CrossEntropyLoss()(x, labels)
    assert mean.item() == pytest.approx(0.26512634393, rel=1e-6)
    mean.backward()
    expected_grad = torch.tensor(
        [[0.11561194881, -0.18573414039, 0.07012219158], [0.02330631129, 0.00857391277, -0.03188022406], [0, 0, 0]]
    )
    torch.testing.assert_close(x.grad, expected_grad)


def test_ce_label_range_and_shape() -> None:
    assert CrossEntropyLoss.background_column is True
    with pytest.raises(ValueError, match="background"):
        CrossEntropyLoss()(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="weight"):
        CrossEntropyLoss()(torch.randn(2, 3), torch.tensor([0, 2]), weight=torch.ones(2, 3))


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "name,kwargs",
    [("bce", {}), ("focal", {}), ("focal", {"gamma": 0.5}), ("qfl", {}), ("vfl", {}), ("ghm_c", {"momentum": 0.0})],
)
def test_elementwise_gradcheck_float64(name: str, kwargs: dict) -> None:
    # ClsLoss.forward computes in fp32; `elementwise` is dtype-agnostic, so it carries the float64 check.
    # ghm_c's weights are piecewise constant in the logits (detached bins), so gradcheck holds off the bin edges.
    loss = lossreg.create_loss(name, **kwargs)
    logits, labels, quality = _inputs(n=8, c=3, seed=5)
    labels = labels.clamp(min=0)
    x = logits.double().requires_grad_()
    targets = torch.zeros(8, 3, dtype=torch.float64)
    pos = labels < 3
    targets[pos, labels[pos]] = 1.0
    assert torch.autograd.gradcheck(lambda z: loss.elementwise(z, targets, labels, quality.double()), (x,))


@pytest.mark.parametrize("name", CLS_LOSSES)
def test_ignored_rows_get_no_gradient_and_no_loss(name: str) -> None:
    logits, labels, quality = _inputs(n=15, c=3, seed=6, name=name)
    x = logits.clone().requires_grad_()
    loss = lossreg.create_loss(name)
    loss(x, labels, quality=quality).backward()
    ignored = labels < 0
    assert ignored.any()
    assert (x.grad[ignored] == 0).all() and (x.grad[~ignored] != 0).any()
    # Changing ignored rows' logits and quality leaves the loss unchanged.
    x2 = logits.clone()
    x2[ignored] = 50.0
    q2 = quality.clone()
    q2[ignored] = 0.0
    fresh = lossreg.create_loss(name)
    ref = lossreg.create_loss(name)(logits, labels, quality=quality)
    torch.testing.assert_close(fresh(x2, labels, quality=q2), ref)


@pytest.mark.parametrize("name", CLS_LOSSES)
def test_edge_inputs(name: str) -> None:
    loss = lossreg.create_loss(name)
    cols = 4 if name == "ce" else 3
    # Empty input: 0 with a gradient path.
    x = torch.zeros(0, cols, requires_grad=True)
    out = loss(x, torch.zeros(0, dtype=torch.long), quality=torch.zeros(0))
    out.backward()
    assert out.item() == 0.0 and x.grad.shape == (0, cols)
    # All rows ignored: 0 and zero gradient.
    x = torch.randn(4, cols, requires_grad=True)
    out = loss(x, torch.full((4,), -1), quality=torch.rand(4))
    out.backward()
    assert out.item() == 0.0 and (x.grad == 0).all()
    # Extreme logits: finite loss and gradient.
    x = (torch.tensor([[100.0, -100.0, 100.0, -100.0]] * 4)[:, :cols]).requires_grad_()
    out = loss(x, torch.tensor([0, 1, 3, 2]), quality=torch.tensor([0.9, 0.1, 0.5, 0.0]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()
    # Zero weights: 0.
    x = torch.randn(4, cols, requires_grad=True)
    out = loss(x, torch.tensor([0, 1, 3, 2]), quality=torch.rand(4), weight=torch.zeros(4))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", CLS_LOSSES)
def test_autocast_bf16_close_to_fp32(name: str) -> None:
    logits, labels, quality = _inputs(n=64, c=5, seed=7, name=name)
    ref = lossreg.create_loss(name)(logits, labels, quality=quality)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lossreg.create_loss(name)(logits.bfloat16(), labels, quality=quality.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=1e-3)


def test_quality_required() -> None:
    for name in ("qfl", "vfl", "hcra_c"):
        with pytest.raises(ValueError, match="quality"):
            lossreg.create_loss(name)(torch.randn(3, 2), torch.tensor([0, 1, 2]))


def test_bad_parameters_rejected() -> None:
    with pytest.raises((TypeError, ValueError), match="rci_mode"):
        lossreg.create_loss("hcra_c", rci_mode="printed")
    with pytest.raises(ValueError, match="rci_mode"):
        HCRACLoss(rci_mode="printed")
    with pytest.raises(ValueError, match="momentum"):
        GHMCLoss(momentum=1.0)
    with pytest.raises(ValueError, match="bins"):
        GHMCLoss(bins=0)
    with pytest.raises(ValueError, match="lambda_neg"):
        DRLoss(lambda_neg=0.0)
    with pytest.raises(ValueError, match="grouping"):
        DRLoss(grouping="image_class")
    with pytest.raises(ValueError, match="gamma"):
        lossreg.create_loss("focal", gamma=-1.0)


# --------------------------------------------------------------------------- invariants (hypothesis)

_logit = st.floats(-30, 30, allow_nan=False, width=32)


@st.composite
def _batch(draw, max_rows: int = 6, max_cls: int = 4):
    n = draw(st.integers(1, max_rows))
    c = draw(st.integers(1, max_cls))
    logits = torch.tensor(draw(st.lists(st.lists(_logit, min_size=c, max_size=c), min_size=n, max_size=n)))
    labels = torch.tensor(draw(st.lists(st.integers(-1, c), min_size=n, max_size=n)))
    quality = torch.tensor(draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n)))
    return logits, labels, quality


@FAST
@given(batch=_batch(), name=st.sampled_from([n for n in CLS_LOSSES if n != "ce"]))
def test_losses_are_non_negative_and_finite(batch, name: str) -> None:
    logits, labels, quality = batch
    loss = lossreg.create_loss(name, reduction="none")
    out = loss(logits, labels, quality=quality)
    assert torch.isfinite(out).all() and (out >= 0).all()


@FAST
@given(batch=_batch(), mode=st.sampled_from(["consistent", "paper"]), mu=st.floats(0, 1))
def test_hcra_c_weights_non_negative(batch, mode: str, mu: float) -> None:
    logits, labels, quality = batch
    loss = HCRACLoss(rci_mode=mode, mu=mu, reduction="none")
    out = loss(logits, labels, quality)
    c = logits.shape[1]
    targets = torch.zeros_like(logits)
    pos = (labels >= 0) & (labels < c)
    targets[pos, labels[pos]] = 1.0
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    factor = torch.where(bce > 0, out / bce.clamp_min(1e-30), torch.zeros(()))
    assert (out >= 0).all() and (factor >= 0).all()


@FAST
@given(batch=_batch())
def test_ghm_weights_average_to_one_without_momentum(batch) -> None:
    # sum_k num_k * (tot / num_k) / n_nonempty = tot: the weights average exactly 1 over valid elements.
    logits, labels, _ = batch
    loss = GHMCLoss(momentum=0.0)
    valid = labels >= 0
    targets = torch.zeros_like(logits)
    pos = valid & (labels < logits.shape[1])
    targets[pos, labels[pos]] = 1.0
    beta = loss.ghm_weights(torch.sigmoid(logits), targets, valid)
    assert (beta[~valid] == 0).all()
    if valid.any():
        assert beta[valid].mean().item() == pytest.approx(1.0, rel=1e-5)


@FAST
@given(
    y=st.floats(0.02, 0.98),
    delta=st.floats(-3, 3).filter(lambda d: abs(d) > 1e-3),
    beta=st.sampled_from([1.0, 2.0]),
)
def test_qfl_minimum_at_perfect_prediction(y: float, delta: float, beta: float) -> None:
    loss = lossreg.create_loss("qfl", beta=beta, reduction="sum")
    labels = torch.tensor([0])
    quality = torch.tensor([y])
    perfect = torch.tensor([[math.log(y / (1 - y))]])
    at_min = loss(perfect, labels, quality)
    assert at_min.item() == pytest.approx(0.0, abs=1e-5)
    assert loss(perfect + delta, labels, quality).item() >= at_min.item()


@FAST
@given(batch=_batch(), bump=st.floats(0.01, 5))
def test_dr_raising_a_positive_never_hurts(batch, bump: float) -> None:
    # With lambda_pos >= 1, d P+ / d p_i = w_i (1 - (p_i - P+) / lambda_pos) >= 0, and a positive element
    # is in no other group: raising its logit cannot increase the loss.
    logits, labels, _ = batch
    c = logits.shape[1]
    pos = (labels >= 0) & (labels < c)
    if not pos.any():
        return
    loss = DRLoss(reduction="sum")
    raised = logits.clone()
    raised[pos, labels[pos]] += bump
    assert loss(raised, labels).item() <= loss(logits, labels).item() + 1e-5
