"""ALWA (alwa1 / alwa2): trajectories of alpha on scripted loss streams, computed by hand.

Windows of C = 3 with values (m - d, m, m + d) have mean m and sample std d
(``sqrt((d^2 + 0 + d^2) / 2) = d``), which keeps the arithmetic exact.
"""

from __future__ import annotations

import math

import pytest
import torch

import lossreg
from lossreg.balancers.alwa import ALWA1, ALWA2

# Four windows of three iterations each, then one call to read the last alpha.
CLS = [3, 4, 5, 5, 10, 15, 3, 6, 9, 9, 12, 15, 1]
REG = [1, 2, 3, 2, 4, 6, 4, 6, 8, 1, 2, 3, 1]


def feed(balancer, stream):
    """Call the balancer on each dict of floats; return the weights and totals of every call."""
    weights, totals = [], []
    for step in stream:
        total, w = balancer({k: torch.tensor(float(v)) for k, v in step.items()})
        weights.append(w)
        totals.append(float(total))
    return weights, totals


def cls_weights(name: str, statistics: str, lambda0: float = 1.0) -> list[float]:
    b = lossreg.create_balancer(name, interval=3, lambda0=lambda0, statistics=statistics)
    weights, _ = feed(b, [{"cls": c, "reg": r} for c, r in zip(CLS, REG)])
    return [w["cls"] for w in weights]


# alwa1 (mean + std), "weighted" (the cls window holds alpha * cls):
#   W1 alpha 1:   cls 3, 4, 5 -> 4 + 1 = 5;      reg 1, 2, 3 -> 2 + 1 = 3;  5 > 3 -> alpha = 3/5
#   W2 alpha .6:  cls .6*(5, 10, 15) = 3, 6, 9 -> 6 + 3 = 9;  reg 2, 4, 6 -> 4 + 2 = 6;  alpha = 6/9
#   W3 alpha 2/3: cls 2, 4, 6 -> 4 + 2 = 6;      reg 4, 6, 8 -> 6 + 2 = 8;  6 < 8 -> unchanged
#   W4 alpha 2/3: cls 6, 8, 10 -> 8 + 2 = 10;    reg 1, 2, 3 -> 3;          alpha = 3/10
ALWA1_WEIGHTED = [1.0] * 3 + [0.6] * 3 + [6 / 9] * 6 + [0.3]
# alwa1, "raw" (the cls window holds cls before alpha):
#   W1 as above -> 3/5
#   W2: cls 5, 10, 15 -> 10 + 5 = 15;  reg 6  -> alpha = 6/15
#   W3: cls 3, 6, 9 -> 6 + 3 = 9;      reg 8  -> alpha = 8/9
#   W4: cls 9, 12, 15 -> 12 + 3 = 15;  reg 3  -> alpha = 3/15
ALWA1_RAW = [1.0] * 3 + [0.6] * 3 + [0.4] * 3 + [8 / 9] * 3 + [0.2]
# alwa2 (std alone), "weighted":
#   W1: std cls 1, reg 1: not greater -> alpha stays 1
#   W2 alpha 1:   cls 5, 10, 15 -> 5;  reg 2, 4, 6 -> 2;    alpha = 2/5
#   W3 alpha .4:  cls 1.2, 2.4, 3.6 -> 1.2;  reg std 2 -> unchanged
#   W4 alpha .4:  cls 3.6, 4.8, 6.0 -> 1.2;  reg 1, 2, 3 -> 1;  alpha = 1/1.2 (the swing back up)
ALWA2_WEIGHTED = [1.0] * 6 + [0.4] * 6 + [1 / 1.2]
# alwa2, "raw": W1 none; W2 5 vs 2 -> 2/5; W3 3 vs 2 -> 2/3; W4 3 vs 1 -> 1/3
ALWA2_RAW = [1.0] * 6 + [0.4] * 3 + [2 / 3] * 3 + [1 / 3]


@pytest.mark.parametrize(
    "name, statistics, expected",
    [
        ("alwa1", "weighted", ALWA1_WEIGHTED),
        ("alwa1", "raw", ALWA1_RAW),
        ("alwa2", "weighted", ALWA2_WEIGHTED),
        ("alwa2", "raw", ALWA2_RAW),
    ],
)
def test_alpha_trajectory(name: str, statistics: str, expected: list[float]) -> None:
    assert cls_weights(name, statistics) == pytest.approx(expected, rel=1e-12, abs=0)


def test_default_is_weighted_and_updates_count() -> None:
    b = ALWA1(interval=3)
    assert b.statistics == "weighted"
    feed(b, [{"cls": c, "reg": r} for c, r in zip(CLS, REG)])
    # W1, W2 and W4 changed alpha; 13 calls; the 13th sits alone in a new window.
    assert int(b.num_updates) == 3 and int(b.steps) == 13 and int(b.count) == 1
    assert float(b.alpha) == pytest.approx(0.3, rel=1e-12)


# alwa1 "weighted", lambda0 = 2, cls_weight "replace" (default, the authors' code: alpha replaces the weight):
#   W1 w 2:   cls 6, 8, 10 -> 8 + 2 = 10;      reg 2, 4, 6 -> 4 + 2 = 6;     alpha = 6/10 -> w = 0.6
#   W2 w .6:  cls 3, 6, 9 -> 6 + 3 = 9;        reg 4, 8, 12 -> 8 + 4 = 12;   unchanged
#   W3 w .6:  cls 1.8, 3.6, 5.4 -> 5.4;        reg 8, 12, 16 -> 16;          unchanged
#   W4 w .6:  cls 5.4, 7.2, 9 -> 7.2 + 1.8 = 9; reg 2, 4, 6 -> 6;            alpha = 6/9 -> w = 2/3
ALWA1_REPLACE_L2 = [2.0] * 3 + [0.6] * 9 + [2 / 3]


def test_weights_and_total_of_every_task() -> None:
    stream = [{"cls": c, "reg": r, "quality": 0.5} for c, r in zip(CLS, REG)]
    # cls_weight "scale" (Algorithm 1 as printed): lambda0 scales both windows alike, so alpha follows
    # ALWA1_WEIGHTED and cls gets 2 * alpha.
    weights, totals = feed(ALWA1(interval=3, lambda0=2.0, cls_weight="scale"), stream)
    assert [w["cls"] for w in weights] == pytest.approx([2 * a for a in ALWA1_WEIGHTED], rel=1e-12)
    # e.g. call 3 (alpha .6): 1.2 * 5 + 2 * 2 + 2 * 0.5 = 11
    assert totals[3] == pytest.approx(11.0, rel=1e-6)
    for w, step, total in zip(weights, stream, totals):
        assert total == pytest.approx(sum(w[k] * step[k] for k in step), rel=1e-6)
    assert all(w["reg"] == 2.0 and w["quality"] == 2.0 for w in weights)
    # Default "replace": call 3 (w .6): 0.6 * 5 + 2 * 2 + 2 * 0.5 = 8
    b = ALWA1(interval=3, lambda0=2.0)
    assert b.cls_weight == "replace"
    weights, totals = feed(b, stream)
    assert [w["cls"] for w in weights] == pytest.approx(ALWA1_REPLACE_L2, rel=1e-12)
    assert all(w["reg"] == 2.0 and w["quality"] == 2.0 for w in weights)
    assert totals[3] == pytest.approx(8.0, rel=1e-6)
    # lambda0 = 1 (the paper's setting): both rules are the same trajectory.
    assert cls_weights("alwa1", "weighted") == pytest.approx(ALWA1_WEIGHTED, rel=1e-12)


def _ref_alwa(cls, reg, interval, lambda0, use_mean, rule):
    """Algorithm 1 in plain Python with full windows of ``interval`` (the weighted statistic); rule
    "scale" trains with alpha * lambda0 (as printed), "replace" with the ratio itself once set."""
    alpha, updated, s_cls, s_reg, out = 1.0, False, [], [], []
    for c, r in zip(cls, reg):
        w = alpha * lambda0 if rule == "scale" else (alpha if updated else lambda0)
        out.append(w)
        s_cls.append(w * c)
        s_reg.append(lambda0 * r)
        if len(s_cls) == interval:
            stats = []
            for s in (s_cls, s_reg):
                m = sum(s) / len(s)
                sd = math.sqrt(sum((x - m) ** 2 for x in s) / (len(s) - 1))
                stats.append(m + sd if use_mean else sd)
            if stats[0] > stats[1] > 0:
                alpha, updated = stats[1] / stats[0], True
            s_cls, s_reg = [], []
    return out


@pytest.mark.parametrize("rule", ["replace", "scale"])
@pytest.mark.parametrize("name", ["alwa1", "alwa2"])
def test_cls_weight_rules_match_a_plain_loop(name: str, rule: str) -> None:
    gen = torch.Generator().manual_seed(3)
    cls = (torch.rand(60, generator=gen, dtype=torch.float64) * 4 + 0.5).tolist()
    reg = (torch.rand(60, generator=gen, dtype=torch.float64) + 0.2).tolist()
    b = lossreg.create_balancer(name, interval=5, lambda0=0.5, cls_weight=rule)
    weights, _ = feed(b, [{"cls": c, "reg": r} for c, r in zip(cls, reg)])
    expected = _ref_alwa(cls, reg, 5, 0.5, name == "alwa1", rule)
    assert [w["cls"] for w in weights] == pytest.approx(expected, rel=1e-6)
    assert int(b.num_updates) > 0


def test_no_update_before_a_full_window() -> None:
    # The printed algorithm's `i % C == 0` would update at i = 0 from one sample.
    b = ALWA1(interval=3)
    weights, _ = feed(b, [{"cls": 100.0, "reg": 1.0}, {"cls": 100.0, "reg": 1.0}])
    assert [w["cls"] for w in weights] == [1.0, 1.0]
    assert float(b.alpha) == 1.0 and int(b.count) == 2


def test_unrecorded_iterations_do_not_count() -> None:
    """Missing, zero and non-finite losses are skipped; windows still hold 3 recorded pairs."""
    b = ALWA1(interval=3)
    stream = [{"cls": c, "reg": r} for c, r in zip(CLS, REG)]
    skipped = [
        {"cls": 7.0},  # reg missing
        {"cls": 7.0, "reg": 0.0},  # no positives
        {"cls": math.nan, "reg": 1.0},  # a bad batch
        {"cls": 7.0, "reg": math.inf},
        {"reg": 1.0, "quality": 3.0},  # cls missing
    ]
    # Interleave them inside W2 (after call 4, i.e. one recorded value into the window).
    mixed = stream[:4] + skipped + stream[4:]
    weights, totals = feed(b, mixed)
    recorded = weights[:4] + weights[4 + len(skipped) :]
    assert [w["cls"] for w in recorded] == pytest.approx(ALWA1_WEIGHTED, rel=1e-12)
    # Skipped calls get the alpha of the window they fall in (0.6), other tasks lambda0.
    assert [w.get("cls") for w in weights[4 : 4 + len(skipped)]] == [0.6, 0.6, 0.6, 0.6, None]
    assert weights[8] == {"reg": 1.0, "quality": 1.0}
    # A NaN loss still reaches the caller: hiding it would hide a diverged model.
    assert math.isnan(totals[6]) and math.isinf(totals[7])
    assert int(b.num_updates) == 3


def test_constant_regression_loss_never_sets_alpha_to_zero() -> None:
    # alwa2 with a constant reg loss: reg std = 0 < cls std; alpha = 0 / cls_std = 0 would stop
    # classification for good in "weighted" mode, so the update is skipped.
    b = ALWA2(interval=3)
    weights, _ = feed(b, [{"cls": c, "reg": 1.0} for c in CLS])
    assert all(w["cls"] == 1.0 for w in weights)
    assert int(b.num_updates) == 0


def test_rpn_task_names() -> None:
    # Faster R-CNN: ALWA balances the RPN; the RoI head's tasks keep lambda0.
    b = lossreg.create_balancer("alwa1", interval=3, cls_task="rpn_cls", reg_task="rpn_reg")
    stream = [{"rpn_cls": c, "rpn_reg": r, "roi_cls": 9.0, "roi_reg": 0.1} for c, r in zip(CLS, REG)]
    weights, _ = feed(b, stream)
    assert [w["rpn_cls"] for w in weights] == pytest.approx(ALWA1_WEIGHTED, rel=1e-12)
    assert all(w["rpn_reg"] == w["roi_cls"] == w["roi_reg"] == 1.0 for w in weights)


def test_eval_calls_do_not_record() -> None:
    b = ALWA1(interval=3)
    feed(b, [{"cls": c, "reg": r} for c, r in zip(CLS[:4], REG[:4])])  # alpha .6, one value in W2
    before = {k: v.clone() for k, v in b.state_dict().items()}
    b.eval()
    weights, _ = feed(b, [{"cls": 50.0, "reg": 1.0}] * 5)
    assert all(w["cls"] == pytest.approx(0.6, rel=1e-12) for w in weights)
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval": 1},
        {"interval": 2.5},
        {"lambda0": 0.0},
        {"lambda0": math.inf},
        {"statistics": "mean"},
        {"cls_task": "reg"},
        {"reg_task": "rpn.reg"},
    ],
)
def test_bad_parameters(kwargs) -> None:
    with pytest.raises((ValueError, TypeError)):
        ALWA1(**kwargs)


def test_registry_checks_statistics() -> None:
    with pytest.raises(TypeError, match="statistics"):
        lossreg.create_balancer("alwa2", statistics="mean")
