"""Regression losses: torchvision equivalence, hand-computed values, gradients, hcra_r state, properties."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvo
from hypothesis import given, settings
from hypothesis import strategies as st

import lossreg
from lossreg.ops.geometry import BoxPairGeometry

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Pairs whose geometry is easy on paper (see tests/ops/test_iou_ops.py):
#   A (0,0,2,2) vs (1,1,3,3): IoU 1/7, |E-U|/|E| 2/9, rho^2/c^2 2/18 = 1/9, equal sizes
#   B (0,0,4,2) vs (0,0,2,2): IoU 1/2, |E-U|/|E| 0,   rho^2/c^2 1/20, (4-2)^2/4^2 = 1/4 width term
#   C (0,0,1,1) vs (2,0,3,1): IoU 0,   |E-U|/|E| 1/3, rho^2/c^2 4/10, equal sizes
PRED = torch.tensor([[0.0, 0, 2, 2], [0, 0, 4, 2], [0, 0, 1, 1]])
TARGET = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [2, 0, 3, 1]])

BOX_LOSSES = ["iou", "giou", "diou", "ciou", "eiou", "focal_eiou", "alpha_iou", "hcra_r"]


def loss_fn(name: str, **kwargs) -> torch.nn.Module:
    return lossreg.create_loss(name, reduction="none", **kwargs)


def random_pairs(n: int, seed: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Even rows: jittered copies of the target (overlapping); odd rows: independent boxes (mostly disjoint)."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen, dtype=dtype) * 200
    wh = torch.rand(n, 2, generator=gen, dtype=dtype) * 60 + 2
    target = torch.cat([xy, xy + wh], 1)
    jitter = target + torch.randn(n, 4, generator=gen, dtype=dtype) * 8
    jitter = torch.cat([jitter[:, :2], torch.maximum(jitter[:, 2:], jitter[:, :2] + 1)], 1)
    xy2 = torch.rand(n, 2, generator=gen, dtype=dtype) * 400
    other = torch.cat([xy2, xy2 + wh.flip(1)], 1)
    pred = torch.where(torch.arange(n)[:, None] % 2 == 0, jitter, other)
    return pred, target


# --------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "name,reference",
    [
        ("giou", tvo.generalized_box_iou_loss),
        ("diou", tvo.distance_box_iou_loss),
        ("ciou", tvo.complete_box_iou_loss),
    ],
)
def test_matches_torchvision_values_and_gradients(name, reference, device):
    pred, target = random_pairs(400, seed=0)
    pred, target = pred.to(device), target.to(device)
    assert (tvo.box_iou(pred, target).diagonal() == 0).sum() > 50  # non-overlapping pairs are covered

    p_ours = pred.clone().requires_grad_(True)
    ours = loss_fn(name)(p_ours, target)
    p_tv = pred.clone().requires_grad_(True)
    theirs = reference(p_tv, target, reduction="none")
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)

    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(p_ours.grad, p_tv.grad, atol=1e-5, rtol=1e-4)

    mean = lossreg.create_loss(name)(pred, target)
    torch.testing.assert_close(mean, reference(pred, target, reduction="mean"), atol=1e-6, rtol=1e-5)


def test_iou_matches_torchvision_box_iou_diagonal():
    pred, target = random_pairs(300, seed=1)
    expected = 1 - tvo.box_iou(pred, target).diagonal()
    torch.testing.assert_close(loss_fn("iou")(pred, target), expected, atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------- hand-computed values


def test_iou_family_hand_computed():
    torch.testing.assert_close(loss_fn("iou")(PRED, TARGET), torch.tensor([6 / 7, 0.5, 1.0]))
    torch.testing.assert_close(loss_fn("giou")(PRED, TARGET), torch.tensor([1 - 1 / 7 + 2 / 9, 0.5, 1 + 1 / 3]))
    torch.testing.assert_close(loss_fn("diou")(PRED, TARGET), torch.tensor([1 - 1 / 7 + 1 / 9, 0.55, 1.4]))


def test_eiou_hand_computed():
    # A: 1 - 1/7 + 1/9 + 0 = 61/63; B: 1 - 0.5 + 0.05 + 0.25 = 0.8; C: 1 - 0 + 0.4 + 0 = 1.4.
    torch.testing.assert_close(loss_fn("eiou")(PRED, TARGET), torch.tensor([0.9682540, 0.8, 1.4]))


def test_focal_eiou_hand_computed():
    # IoU^0.5 * eiou: A sqrt(1/7) * 61/63 = 0.3659656; B sqrt(0.5) * 0.8 = 0.5656854; C 0 (IoU = 0).
    torch.testing.assert_close(loss_fn("focal_eiou")(PRED, TARGET), torch.tensor([0.3659656, 0.5656854, 0.0]))
    # gamma = 2: A (1/49) * 61/63 = 0.0197603; B 0.25 * 0.8 = 0.2.
    torch.testing.assert_close(
        loss_fn("focal_eiou", gamma=2.0)(PRED, TARGET), torch.tensor([0.0197603, 0.2, 0.0]), rtol=1e-5, atol=1e-6
    )


def test_alpha_iou_hand_computed():
    # Default alpha-GIoU, alpha 3: A 1 - (1/7)^3 + (2/9)^3 = 1.0080585; B 1 - 1/8 = 0.875; C 1 + 1/27 = 1.0370370.
    torch.testing.assert_close(loss_fn("alpha_iou")(PRED, TARGET), torch.tensor([1.0080585, 0.875, 1.0370370]))
    # alpha-DIoU, alpha 0.5: A 1 - sqrt(1/7) + sqrt(1/9) = 0.9553689; B 1 - sqrt(.5) + sqrt(.05) = 0.5165000;
    # C 1 - 0 + sqrt(0.4) = 1.6324555.
    torch.testing.assert_close(
        loss_fn("alpha_iou", alpha=0.5, variant="diou")(PRED, TARGET), torch.tensor([0.9553689, 0.5165000, 1.6324555])
    )
    # alpha-CIoU, alpha 0.5 on B: v = 0.0419565, a = 0.0774167, so + sqrt(a v) = sqrt(0.0032482) -> 0.5734924.
    out = loss_fn("alpha_iou", alpha=0.5, variant="ciou")(PRED[1:2], TARGET[1:2])
    torch.testing.assert_close(out, torch.tensor([0.5734924]))
    # alpha-IoU, alpha 2: 1 - IoU^2.
    torch.testing.assert_close(
        loss_fn("alpha_iou", alpha=2.0, variant="iou")(PRED, TARGET), torch.tensor([1 - 1 / 49, 0.75, 1.0])
    )


@pytest.mark.parametrize("variant,base", [("iou", "iou"), ("giou", "giou"), ("diou", "diou"), ("ciou", "ciou")])
def test_alpha_iou_with_alpha_one_is_the_base_loss(variant, base):
    pred, target = random_pairs(200, seed=3)
    ours = loss_fn("alpha_iou", alpha=1.0, variant=variant)(pred, target)
    torch.testing.assert_close(ours, loss_fn(base)(pred, target), atol=1e-6, rtol=1e-6)


def test_l1_and_smooth_l1_hand_computed():
    pred = torch.tensor([[0.5, -1.0, 0.0, 2.0], [0.05, 0.0, 0.0, 0.0]])
    target = torch.zeros(2, 4)
    torch.testing.assert_close(loss_fn("l1")(pred, target), torch.tensor([3.5, 0.05]))
    # beta 1/9: |d| >= beta gives |d| - beta/2: 0.5 - 1/18 + 1 - 1/18 + 0 + 2 - 1/18 = 3.3333333;
    # |d| = 0.05 < beta gives 0.5 d^2 / beta = 0.5 * 0.0025 * 9 = 0.01125.
    torch.testing.assert_close(loss_fn("smooth_l1")(pred, target), torch.tensor([3.3333333, 0.01125]))
    # beta 1: 0.5 * 0.25 + (1 - 0.5) + 0 + (2 - 0.5) = 2.125; 0.5 * 0.0025 = 0.00125.
    torch.testing.assert_close(loss_fn("smooth_l1", beta=1.0)(pred, target), torch.tensor([2.125, 0.00125]))
    assert lossreg.component_info("loss", "smooth_l1")["params"]["beta"] == pytest.approx(1 / 9)
    assert lossreg.create_loss("l1").space == "delta" and lossreg.create_loss("smooth_l1").space == "delta"
    # mean divides by the number of boxes (rows), not elements.
    torch.testing.assert_close(lossreg.create_loss("l1")(pred, target), torch.tensor(3.55 / 2))


# hcra_r on rows B (score 0.8) and A (score 0.0), defaults gamma 1.2, alpha -0.1, ep 0.001, m 0.01:
#   B: q = 0.5, R = 0.05, giou 0.5. s + alpha - q = 0.2 >= 0, s' = 0.7: A = 0.49 + 0.25 + 0.001 = 0.741,
#      B = 0.7 + 0.001 = 0.701, RCI = A / B = 1.0570613; t = exp(-0.25 / 1.2) = 0.8119359,
#      CF = t * exp(0.05) * 0.5 = 0.4267826.
#   A: q = 1/7, R = 1/9, giou = 1 - 1/7 + 2/9 = 1.0793651. s + alpha = -0.1 < q, s' = 0:
#      A = 0 + 1/49 + 0.001 = 0.0214082, B = 0 + 0.001, RCI = B / A = 0.0467112;
#      t = exp(-(1/49) / 1.2) = 0.9831369, CF = t * exp(1/9) / 7 = 0.1569535.
#   Default rci_mean "loss_weighted": row weights CF * giou = 0.2133913 (B), 0.1694101 (A), batch mean
#   (1.0570613 * 0.2133913 + 0.0467112 * 0.1694101) / 0.3828014 = 0.6099273; step 1: r = 0.99 + 0.01 *
#   0.6099273 = 0.9960993; step 2: r = 0.9922376. rci_mean "rows" (eq. 9 read literally) averages
#   (1.0570613 + 0.0467112) / 2 = 0.5518862: r = 0.9955189, then 0.9910825.
HCRA_PRED = torch.tensor([[0.0, 0, 4, 2], [0, 0, 2, 2]])
HCRA_TARGET = torch.tensor([[0.0, 0, 2, 2], [1, 1, 3, 3]])
HCRA_SCORES = torch.tensor([0.8, 0.0])


def test_hcra_r_weights_hand_computed_both_rci_branches():
    loss = lossreg.create_loss("hcra_r")
    rci, cf = loss.weights(BoxPairGeometry(HCRA_PRED, HCRA_TARGET), HCRA_SCORES)
    torch.testing.assert_close(rci, torch.tensor([1.0570613, 0.0467112]))
    torch.testing.assert_close(cf, torch.tensor([0.4267826, 0.1569535]))
    assert rci[0] > 1 > rci[1]  # region 1 boosts, region 2 damps
    # Disjoint pair C (q = 0) with s = 0.5: s' = 0.4, A = 0.16 + 0.001, B = 0.001, RCI = 161 (ep bounds it),
    # but CF = t * exp(0.4) * 0 = 0, so the row contributes nothing.
    rci, cf = loss.weights(BoxPairGeometry(PRED[2:], TARGET[2:]), torch.tensor([0.5]))
    torch.testing.assert_close(rci, torch.tensor([161.0]))
    assert cf.item() == 0.0


def test_hcra_r_running_mean_update_and_row_losses():
    loss = loss_fn("hcra_r")
    assert loss.training and loss.running_mean.item() == 1.0
    # Step 1: rows (RCI / r) * CF * giou = 1.0570613 / 0.9960993 * 0.4267826 * 0.5 and
    # 0.0467112 / 0.9960993 * 0.1569535 * 1.0793651.
    out = loss(HCRA_PRED, HCRA_TARGET, scores=HCRA_SCORES)
    torch.testing.assert_close(loss.running_mean, torch.tensor(0.9960993))
    torch.testing.assert_close(out, torch.tensor([0.2264510, 0.0079443]))
    out = loss(HCRA_PRED, HCRA_TARGET, scores=HCRA_SCORES)
    torch.testing.assert_close(loss.running_mean, torch.tensor(0.9922376))
    torch.testing.assert_close(out, torch.tensor([0.2273324, 0.0079752]))
    # Eval: r is used (0.9922376) but not updated.
    loss.eval()
    out = loss(HCRA_PRED, HCRA_TARGET, scores=HCRA_SCORES)
    torch.testing.assert_close(loss.running_mean, torch.tensor(0.9922376))
    torch.testing.assert_close(out, torch.tensor([0.2273324, 0.0079752]))
    # Eq. 9 over every row: 0.9955189, then 0.9910825; rows 1.0570613 / 0.9955189 * 0.2133913 etc.
    rows = loss_fn("hcra_r", rci_mean="rows")
    out = rows(HCRA_PRED, HCRA_TARGET, scores=HCRA_SCORES)
    torch.testing.assert_close(rows.running_mean, torch.tensor(0.9955189))
    torch.testing.assert_close(out, torch.tensor([0.2265830, 0.0079490]))
    rows(HCRA_PRED, HCRA_TARGET, scores=HCRA_SCORES)
    torch.testing.assert_close(rows.running_mean, torch.tensor(0.9910825))


def test_hcra_r_gamma_none_and_score_clamp():
    # gamma None: t = 1, CF_B = exp(0.05) * 0.5 = 0.5256355, CF_A = exp(1/9) / 7 = 0.1596456.
    loss = lossreg.create_loss("hcra_r", gamma=None, reduction="none").eval()
    rci, cf = loss.weights(BoxPairGeometry(HCRA_PRED, HCRA_TARGET), HCRA_SCORES)
    torch.testing.assert_close(cf, torch.tensor([0.5256355, 0.1596456]))
    # r = 1 (fresh, eval): rows RCI * CF * giou = 1.0570613 * 0.5256355 * 0.5, 0.0467112 * 0.1596456 * 1.0793651.
    torch.testing.assert_close(loss(HCRA_PRED, HCRA_TARGET, scores=HCRA_SCORES), torch.tensor([0.2778145, 0.0080491]))
    # alpha = -0.2, s = 0 on B: s + alpha = -0.2 clamps to s' = 0, region 2 (s + alpha - q < 0):
    # A = 0 + 0.25 + 0.001, B = 0 + 0.001, RCI = B / A = 0.0039841 (> 0, not negative).
    shifted = lossreg.create_loss("hcra_r", alpha=-0.2)
    rci, _ = shifted.weights(BoxPairGeometry(HCRA_PRED[:1], HCRA_TARGET[:1]), torch.tensor([0.0]))
    torch.testing.assert_close(rci, torch.tensor([0.0039841]))


def _ref_hcra_r_rows(pred, target, scores, alpha=-0.1, ep=0.001, gamma=1.2):
    """HCRAL eq. 7-8 row by row in plain Python: lists (RCI, CF, GIoU loss)."""
    out = []
    for (px1, py1, px2, py2), (tx1, ty1, tx2, ty2), s in zip(pred.tolist(), target.tolist(), scores.tolist()):
        inter = max(0.0, min(px2, tx2) - max(px1, tx1)) * max(0.0, min(py2, ty2) - max(py1, ty1))
        union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - inter
        q = inter / union
        ex1, ey1, ex2, ey2 = min(px1, tx1), min(py1, ty1), max(px2, tx2), max(py2, ty2)
        enclose = (ex2 - ex1) * (ey2 - ey1)
        rho2 = ((px1 + px2 - tx1 - tx2) / 2) ** 2 + ((py1 + py2 - ty1 - ty2) / 2) ** 2
        c2 = (ex2 - ex1) ** 2 + (ey2 - ey1) ** 2
        cf = math.exp(-q * q / gamma) * math.exp(rho2 / c2) * q
        sp = max(s + alpha, 0.0)
        big, small = sp * sp + q * q + ep, 2 * sp * q + ep
        rci = big / small if s + alpha - q >= 0 else small / big
        out.append((rci, cf, 1 - q + (enclose - union) / enclose))
    return out


def _ref_batch_mean(rows, mode):
    if mode == "rows":
        return sum(r for r, _, _ in rows) / len(rows)
    w = [cf * g if mode == "loss_weighted" else float(cf * g > 0) for _, cf, g in rows]
    return sum(r * wi for (r, _, _), wi in zip(rows, w)) / sum(w)


def _issue_batch(with_far: bool):
    # 196 overlapping rows (jittered targets, scores 0.3-0.9) and, optionally, 4 high-score boxes
    # touching their target only in a 0.5 px sliver (IoU ~ 0.005): RCI ~ 100, CF * giou ~ 0.005.
    gen = torch.Generator().manual_seed(11)
    xy = torch.rand(196, 2, generator=gen, dtype=torch.float64) * 200
    wh = torch.rand(196, 2, generator=gen, dtype=torch.float64) * 60 + 20
    target = torch.cat([xy, xy + wh], 1)
    pred = target + torch.randn(196, 4, generator=gen, dtype=torch.float64) * 4
    scores = torch.rand(196, generator=gen, dtype=torch.float64) * 0.6 + 0.3
    if with_far:
        far_t = torch.tensor([[0.0, 0.0, 100.0, 100.0]], dtype=torch.float64).repeat(4, 1)
        far_p = torch.tensor([[0.0, 99.5, 100.0, 199.5]], dtype=torch.float64).repeat(4, 1)
        pred, target = torch.cat([pred, far_p]), torch.cat([target, far_t])
        scores = torch.cat([scores, torch.full((4,), 0.95, dtype=torch.float64)])
    return pred, target, scores


@pytest.mark.parametrize("mode", ["loss_weighted", "cf_positive", "rows"])
def test_hcra_r_running_mean_against_reference_and_near_disjoint_rows(mode):
    # The library's batch mean (ema_momentum 1: r = the batch mean) against the plain-Python reference,
    # with and without 4 near-disjoint high-score rows among 200.
    means = {}
    for with_far in (False, True):
        pred, target, scores = _issue_batch(with_far)
        rows = _ref_hcra_r_rows(pred, target, scores)
        loss = loss_fn("hcra_r", rci_mean=mode, ema_momentum=1.0)
        out = loss(pred.float(), target.float(), scores=scores.float())  # the loss computes in fp32
        expected = _ref_batch_mean(rows, mode)
        assert loss.running_mean.item() == pytest.approx(expected, rel=1e-5)
        ref_out = torch.tensor([r / expected * cf * g for r, cf, g in rows])
        torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-6)
        means[with_far] = expected
    if with_far:
        far = _ref_hcra_r_rows(pred[-4:], target[-4:], scores[-4:])
        assert all(r > 50 and cf * g < 0.01 for r, cf, g in far)  # huge RCI where the row's loss is ~0
        if mode == "loss_weighted":
            # m = 1: the weighted rows sum to sum(CF * giou); RCI only redistributes the loss.
            assert out.sum().item() == pytest.approx(sum(cf * g for _, cf, g in rows), rel=1e-5)
    ratio = means[True] / means[False]
    if mode == "loss_weighted":
        # RCI ~ s' / (2 q) but CF ~ q: the 4 rows hold ~8% of the RCI-weighted loss and move r by that
        assert ratio < 1.1
    else:
        assert ratio > 3  # eq. 9 over all rows (or all CF > 0 rows): r x4, every other row's weight cut


def test_hcra_r_running_mean_skips_batches_without_loss():
    # Every row disjoint (CF = 0) or perfect (giou = 0): no row counts, r stays at 1 (eq. 9 over rows would move).
    pred = torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2]])
    target = torch.tensor([[5.0, 5, 7, 7], [0, 0, 2, 2]])
    scores = torch.tensor([0.9, 0.5])
    for mode in ("loss_weighted", "cf_positive"):
        loss = loss_fn("hcra_r", rci_mean=mode)
        loss(pred, target, scores=scores)
        assert loss.running_mean.item() == 1.0
    rows = loss_fn("hcra_r", rci_mean="rows")
    rows(pred, target, scores=scores)
    assert rows.running_mean.item() != 1.0
    with pytest.raises((TypeError, ValueError), match="rci_mean"):
        lossreg.create_loss("hcra_r", rci_mean="cf")


def test_hcra_r_default_alpha_is_table_3s_best():
    # HCRAL Table 3 sweeps alpha in {0, -0.1, -0.2}; its best row (-0.1, ep 0.001, 37.4 AP) is Table 9's
    # HCRA-R number. The text's +0.1 stays available: B has s' = 0.9, A = 0.81 + 0.25 + 0.001 = 1.061,
    # B = 0.901 -> RCI 1.1775805; A has s' = 0.1, s + alpha - q = -0.0428571 < 0, A = 0.0314082,
    # B = 0.0295714 -> RCI 0.9415205 (no clamp for a positive alpha).
    params = lossreg.component_info("loss", "hcra_r")["params"]
    assert (params["alpha"], params["ep"], params["gamma"]) == (-0.1, 0.001, 1.2)
    text = lossreg.create_loss("hcra_r", alpha=0.1)
    rci, _ = text.weights(BoxPairGeometry(HCRA_PRED, HCRA_TARGET), HCRA_SCORES)
    torch.testing.assert_close(rci, torch.tensor([1.1775805, 0.9415205]))


def test_hcra_r_state_dict_and_eval():
    loss = lossreg.create_loss("hcra_r")
    assert "running_mean" in loss.state_dict()
    pred, target = random_pairs(64, seed=4)
    scores = torch.rand(64, generator=torch.Generator().manual_seed(0))
    loss(pred, target, scores=scores)
    saved = loss.state_dict()["running_mean"].clone()
    assert saved.item() != 1.0
    loss.eval()
    before = loss(pred, target, scores=scores)
    assert torch.equal(loss.running_mean, saved)
    fresh = lossreg.create_loss("hcra_r").eval()
    fresh.load_state_dict(loss.state_dict())
    torch.testing.assert_close(fresh(pred, target, scores=scores), before)
    # An empty training batch leaves the mean alone (mean of nothing would be NaN).
    loss.train()
    loss(pred[:0], target[:0], scores=scores[:0])
    assert torch.equal(loss.running_mean, saved)


def test_hcra_r_needs_scores_of_the_right_shape():
    loss = lossreg.create_loss("hcra_r")
    with pytest.raises(ValueError, match="scores"):
        loss(PRED, TARGET)
    with pytest.raises(ValueError, match="scores"):
        loss(PRED, TARGET, scores=torch.rand(2))


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("hcra_r", {"gamma": 0.0}),
        ("hcra_r", {"ep": 0.0}),
        ("hcra_r", {"ema_momentum": 1.5}),
        ("alpha_iou", {"alpha": 0.0}),
        ("focal_eiou", {"gamma": -1.0}),
        ("smooth_l1", {"beta": -0.1}),
    ],
)
def test_invalid_hyperparameters_raise(name, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        lossreg.create_loss(name, **kwargs)


def test_alpha_iou_unknown_variant_rejected_by_registry():
    with pytest.raises(TypeError, match="variant"):
        lossreg.create_loss("alpha_iou", variant="siou")


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("iou", {}),
        ("giou", {}),
        ("diou", {}),
        ("eiou", {}),
        ("alpha_iou", {}),
        ("alpha_iou", {"variant": "iou", "alpha": 2.0}),
        ("alpha_iou", {"variant": "diou", "alpha": 0.5}),
    ],
)
def test_gradcheck_rowwise_float64(name, kwargs):
    # Losses without detached weights: the analytic gradient must be the true one.
    pred, target = random_pairs(10, seed=5, dtype=torch.float64)
    loss = lossreg.create_loss(name, **kwargs)
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: loss.rowwise(p, target, None), (pred,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["l1", "smooth_l1"])
def test_gradcheck_delta_losses_float64(name):
    gen = torch.Generator().manual_seed(6)
    target = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    # Offsets of magnitude in [0.02, 0.05] or [0.3, 1.3], away from the kinks at 0 and beta = 1/9.
    mag = torch.where(torch.rand(10, 4, generator=gen) < 0.5, 0.02 + 0.03 * torch.rand(10, 4, generator=gen), 0.3)
    mag = mag + torch.rand(10, 4, generator=gen) * (mag >= 0.3)
    sign = torch.where(torch.rand(10, 4, generator=gen) < 0.5, -1.0, 1.0)
    pred = (target + sign * mag.double()).requires_grad_(True)
    loss = lossreg.create_loss(name)
    assert torch.autograd.gradcheck(lambda p: loss.rowwise(p, target, None), (pred,), eps=1e-7, atol=1e-6)


def _row_grads(fn, pred: torch.Tensor) -> torch.Tensor:
    p = pred.clone().requires_grad_(True)
    fn(p).sum().backward()
    return p.grad


def test_focal_eiou_weight_is_detached():
    # Rows are independent, so d(sum IoU^g * eiou)/d pred_i = IoU_i^g * d eiou_i / d pred_i iff IoU^g is detached.
    pred, target = random_pairs(50, seed=7, dtype=torch.float64)
    focal = lossreg.create_loss("focal_eiou", reduction="none")
    eiou = lossreg.create_loss("eiou", reduction="none")
    weight = BoxPairGeometry(pred, target).iou ** 0.5
    g_focal = _row_grads(lambda p: focal.rowwise(p, target, None), pred)
    g_eiou = _row_grads(lambda p: eiou.rowwise(p, target, None), pred)
    torch.testing.assert_close(g_focal, weight[:, None] * g_eiou)


def test_hcra_r_gradient_flows_only_through_giou():
    pred, target = random_pairs(50, seed=8, dtype=torch.float64)
    scores = torch.rand(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hcra = lossreg.create_loss("hcra_r").eval()
    giou = lossreg.create_loss("giou")
    rci, cf = hcra.weights(BoxPairGeometry(pred, target), scores)
    g_hcra = _row_grads(lambda p: hcra.rowwise(p, target, scores), pred)
    g_giou = _row_grads(lambda p: giou.rowwise(p, target, None), pred)
    torch.testing.assert_close(g_hcra, (rci * cf)[:, None] * g_giou)  # r = 1 (eval, never updated)
    assert g_hcra.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", BOX_LOSSES + ["l1", "smooth_l1"])
def test_cuda_matches_cpu(name):
    pred, target = random_pairs(256, seed=9)
    scores = torch.rand(256, generator=torch.Generator().manual_seed(2))
    cpu = loss_fn(name)
    gpu = loss_fn(name).cuda()
    expected = cpu(pred, target, scores=scores)
    got = gpu(pred.cuda(), target.cuda(), scores=scores.cuda())
    torch.testing.assert_close(got.cpu(), expected, atol=1e-5, rtol=1e-5)
    if name == "hcra_r":
        torch.testing.assert_close(gpu.running_mean.cpu(), cpu.running_mean)


# --------------------------------------------------------------------------- properties

_coord = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)
_size = st.floats(1, 200, allow_nan=False, allow_infinity=False, width=32)
_box = st.tuples(_coord, _coord, _size, _size).map(lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3]))


@st.composite
def box_pairs(draw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to 8 pairs; some predictions are exact copies or small shifts of their target."""
    n = draw(st.integers(1, 8))
    targets = [draw(_box) for _ in range(n)]
    preds = []
    for t in targets:
        kind = draw(st.sampled_from(["free", "copy", "shift"]))
        if kind == "free":
            preds.append(draw(_box))
        elif kind == "copy":
            preds.append(t)
        else:
            dx, dy = draw(_size), draw(_size)
            preds.append((t[0] + dx / 4, t[1] - dy / 4, t[2] + dx / 4, t[3] - dy / 4))
    scores = [draw(st.floats(0, 1, width=32)) for _ in range(n)]
    return torch.tensor(preds), torch.tensor(targets), torch.tensor(scores)


# Documented ranges (class docstrings) for valid boxes.
RANGES = {
    "iou": (0.0, 1.0),
    "giou": (0.0, 2.0),
    "diou": (0.0, 2.0),
    "ciou": (0.0, 3.0),
    "eiou": (0.0, 4.0),
    "focal_eiou": (0.0, 4.0),
    "alpha_iou": (0.0, 2.0),
    "hcra_r": (0.0, float("inf")),
}


@settings(max_examples=30, deadline=None)
@given(data=box_pairs(), k=st.floats(0.25, 64.0))
def test_scale_invariance(data, k):
    pred, target, scores = data
    for name in BOX_LOSSES:
        base = loss_fn(name).eval()(pred, target, scores=scores)
        scaled = loss_fn(name).eval()(pred * k, target * k, scores=scores)
        torch.testing.assert_close(scaled, base, atol=2e-4, rtol=2e-4, msg=f"{name} not scale invariant")


@settings(max_examples=30, deadline=None)
@given(data=box_pairs())
def test_documented_ranges(data):
    pred, target, scores = data
    for name, (lo, hi) in RANGES.items():
        out = loss_fn(name)(pred, target, scores=scores)
        assert torch.isfinite(out).all(), name
        assert (out >= lo - 1e-6).all() and (out <= hi + 1e-6).all(), f"{name} out of [{lo}, {hi}]: {out}"


@settings(max_examples=30, deadline=None)
@given(data=box_pairs())
def test_perfect_prediction_is_the_minimum(data):
    _, target, scores = data
    for name in BOX_LOSSES:
        out = loss_fn(name)(target, target, scores=scores)
        torch.testing.assert_close(out, torch.zeros_like(out), atol=1e-5, rtol=0, msg=name)
    deltas = target / 100  # any values: delta losses compare them directly
    for name in ("l1", "smooth_l1"):
        assert loss_fn(name)(deltas, deltas).abs().max() == 0


@settings(max_examples=30, deadline=None)
@given(data=box_pairs(), alpha=st.floats(-1, 1), gamma=st.one_of(st.none(), st.floats(0.1, 5)))
def test_hcra_r_weights_non_negative(data, alpha, gamma):
    pred, target, scores = data
    loss = lossreg.create_loss("hcra_r", alpha=alpha, gamma=gamma, reduction="none")
    rci, cf = loss.weights(BoxPairGeometry(pred, target), scores)
    assert (rci > 0).all() and torch.isfinite(rci).all()
    assert (cf >= 0).all() and (cf <= torch.e).all()
    out = loss(pred, target, scores=scores)
    assert (out >= 0).all() and torch.isfinite(out).all()
    assert loss.running_mean > 0
