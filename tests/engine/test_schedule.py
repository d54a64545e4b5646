"""Warm-up and the step / cosine / constant schedules; optimizer construction."""

from __future__ import annotations

import io
import math

import pytest
import torch

from lossreg.engine.schedule import WarmupSchedule, build_optimizer, build_scheduler
from lossreg.recipe import OptimizerCfg, TrainCfg


def test_linear_warmup_from_ratio_to_one():
    f = WarmupSchedule("constant", total_iters=100, iters_per_epoch=10, warmup_iters=10, warmup_ratio=0.1)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(10) == 1.0 and f(99) == 1.0
    assert all(f(i) < f(i + 1) for i in range(10))


def test_step_schedule_drops_at_the_given_epochs():
    f = WarmupSchedule("step", total_iters=120, iters_per_epoch=10, steps=(8, 11), gamma=0.1)
    assert f(79) == 1.0
    assert f(80) == pytest.approx(0.1)
    assert f(109) == pytest.approx(0.1)
    assert f(110) == pytest.approx(0.01)


def test_cosine_schedule_from_one_to_zero():
    f = WarmupSchedule("cosine", total_iters=100, iters_per_epoch=10)
    assert f(0) == 1.0
    assert f(50) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0, abs=1e-12)
    assert f(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_warmup_multiplies_the_main_schedule():
    f = WarmupSchedule("cosine", total_iters=100, iters_per_epoch=10, warmup_iters=20, warmup_ratio=0.5)
    assert f(10) == pytest.approx(0.75 * 0.5 * (1 + math.cos(math.pi * 0.1)))


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        WarmupSchedule("linear", 10, 1)
    with pytest.raises(ValueError, match="warmup_ratio"):
        WarmupSchedule("step", 10, 1, warmup_iters=5, warmup_ratio=0.0)


def test_build_optimizer_sgd_and_adamw():
    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = build_optimizer(params, OptimizerCfg(name="sgd", lr=0.02, momentum=0.8, weight_decay=0.001))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.8 and sgd.defaults["weight_decay"] == 0.001
    adamw = build_optimizer(params, OptimizerCfg(name="adamw", lr=0.001, betas=(0.8, 0.99), weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.99)


def test_scheduler_sets_the_learning_rate_each_iteration_and_round_trips():
    param = torch.nn.Parameter(torch.zeros(1))
    cfg = TrainCfg(epochs=2, schedule="step", steps=(1,), gamma=0.5, warmup_iters=2, warmup_ratio=0.25,
                   optimizer=OptimizerCfg(lr=0.1))
    opt = build_optimizer([param], cfg.optimizer)
    sched = build_scheduler(opt, cfg, iters_per_epoch=3)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.025, 0.0625, 0.1, 0.05, 0.05, 0.05])
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["last_epoch"] == 6  # the schedule object is plain data


def test_adamw_is_fused_on_cpu_and_matches_the_reference_update():
    torch.manual_seed(0)
    w = torch.randn(5, 3)
    grads = [torch.randn(5, 3) for _ in range(3)]
    ours, ref = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
    opt = build_optimizer([{"params": [ours], "weight_decay": 0.05}], OptimizerCfg(name="adamw", lr=0.01, weight_decay=0.05))
    assert opt.defaults["fused"] is True
    reference = torch.optim.AdamW([ref], lr=0.01, weight_decay=0.05, foreach=False)  # the per-tensor loop
    for g in grads:
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        reference.step()
    assert torch.allclose(ours, ref, atol=1e-6) and not torch.equal(ours, w)
