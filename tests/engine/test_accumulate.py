"""Gradient accumulation: N micro-batches give the update of one batch N times larger.

Exact where nothing couples the images of a batch but the normalisation: frozen batch
norm in the backbone, GroupNorm in the head, losses without running statistics. The
heads' avg_factor (positives) is taken over the whole accumulated batch and each
balancer is called once per step (lossreg.heads.normalizer).
"""

from __future__ import annotations

import copy

import pytest
import torch

import lossreg
from lossreg.engine.accumulate import accumulate_step, preserved_state, split_batch
from lossreg.engine.trainer import Trainer
from lossreg.heads.normalizer import AccumulationNormalizer, avg_factor, use_normalizer


def _model(**components):
    torch.manual_seed(0)
    return lossreg.create_model(
        "atss_resnet18_fpn", backbone="test_resnet", num_classes=3, freeze_bn=True,
        neck={"name": "fpn", "out_channels": 32}, head={"name": "atss", "feat_channels": 32, "stacked_convs": 1},
        **components,
    ).train()


def _batch(n=4, size=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    targets = []
    for i in range(n):  # 0, 1, 2, 3 objects: the micro-batches' positive counts differ
        k = i % 4
        xy = torch.rand(k, 2, generator=g) * 30
        wh = 12 + torch.rand(k, 2, generator=g) * 20
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 3, (k,), generator=g)})
    return images, targets


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _big_batch(model, images, targets):
    out = model(images, targets)
    sum(out.values()).backward()
    return {k: float(v.detach()) for k, v in out.items()}


def _accumulated(model, images, targets, n):
    parts, norm = accumulate_step(model, model, split_batch(images, targets, n), lambda loss: loss.backward())
    return parts, norm


@pytest.mark.parametrize("components", [{}, {"balancer": "guided", "reg_loss": {"name": "giou", "loss_weight": 2.0}}],
                         ids=["static", "guided"])
def test_accumulated_micro_batches_give_the_big_batch_gradient(components):
    big = _model(**components)
    acc = copy.deepcopy(big)
    images, targets = _batch()
    losses = _big_batch(big, images, targets)
    parts, norm = _accumulated(acc, images, targets, 2)
    assert parts.keys() == losses.keys()
    assert parts == pytest.approx(losses, rel=1e-5)  # the logged losses are the whole batch's
    g_big, g_acc = _grads(big), _grads(acc)
    assert g_big.keys() == g_acc.keys()
    for name in g_big:
        torch.testing.assert_close(g_acc[name], g_big[name], rtol=1e-4, atol=1e-7, msg=name)
    # the balancer ran once, with the whole batch's losses, and gave the big batch's weights
    assert int(acc.head.balancer.steps) == int(big.head.balancer.steps) == 1
    assert acc.head.last_loss_weights == pytest.approx(big.head.last_loss_weights, rel=1e-5)
    # the positive count is the whole batch's: 0 + 1 + 2 + 3 objects' positives
    assert norm.totals[("head", "cls")] > 0


def test_a_per_micro_batch_normalisation_would_differ():
    """The equivalence is not trivial: micro-batch losses divided by their own positives give another gradient."""
    big = _model()
    naive = copy.deepcopy(big)
    images, targets = _batch()
    _big_batch(big, images, targets)
    for imgs, tgts in split_batch(images, targets, 2):
        (sum(naive(imgs, tgts).values()) / 2).backward()
    g_big, g_naive = _grads(big), _grads(naive)
    assert not torch.allclose(g_big["head.cls_out.bias"], g_naive["head.cls_out.bias"], rtol=1e-3)


def test_record_pass_leaves_buffers_and_random_state_alone():
    model = lossreg.create_model("atss_resnet18_fpn", backbone="test_resnet", num_classes=3,
                                 neck={"name": "fpn", "out_channels": 32},
                                 head={"name": "atss", "feat_channels": 32, "stacked_convs": 1}).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, targets = _batch()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with preserved_state(model), torch.no_grad():
        model(images, targets)  # trained batch norm moves its running statistics
        torch.rand(7)
    assert torch.equal(torch.rand(3), expected)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_self_normalising_losses_are_averaged_and_sums_summed():
    head = torch.nn.Module()
    ghm = lossreg.create_loss("ghm_c")
    summed = lossreg.create_loss("focal", reduction="sum")
    norm = AccumulationNormalizer(head, 2)
    with use_normalizer(norm):
        for count in (2, 6):
            norm.begin_micro_batch()
            assert avg_factor(head, "a", count, 1.0, lossreg.create_loss("focal")) == count  # recorded: local
            avg_factor(head, "b", count, 1.0, ghm)
            avg_factor(head, "c", count, 1.0, summed)
            norm.balance(head, {"a": torch.tensor(1.0), "b": torch.tensor(3.0), "c": torch.tensor(5.0), "d": torch.tensor(1.0)})
    norm.finalize()
    assert norm.totals[("", "a")] == 8.0
    # a: sum_i loss_i * count_i / total; b ("mean"): averaged; c ("sum"): summed; d (no factor): averaged
    assert norm.batch_losses[""] == pytest.approx({"a": 1.0, "b": 3.0, "c": 10.0, "d": 1.0})
    norm.start_apply()
    with use_normalizer(norm):
        norm.begin_micro_batch()
        assert avg_factor(head, "a", 2, 1.0) == 8.0
        avg_factor(head, "b", 2, 1.0, ghm)
        avg_factor(head, "c", 2, 1.0, summed)


def test_split_batch():
    images = torch.zeros(5, 3, 8, 8)
    parts = split_batch(images, list(range(5)), 2)
    assert [p[1] for p in parts] == [[0, 1, 2], [3, 4]]
    assert [p[0].shape[0] for p in split_batch(images[:1], [0], 4)] == [1]  # no empty micro-batch


def _recipe(tiny_recipe, **train):
    recipe = tiny_recipe(
        model={"args": {"freeze_bn": True}},
        data={"val": None, "augment": [{"name": "HorizontalFlip", "p": 0.5}]},
        train={"epochs": 1, "batch_size": 4, "warmup_iters": 1, "schedule": "constant",
               "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001}, **train},
    )
    recipe["data"]["train"]["params"]["num_images"] = 8  # 2 steps of 4: micro-batches of 2 (GroupNorm on 1x1 maps needs 2)
    return recipe


def test_trainer_accumulate_gives_the_big_batch_weights(tiny_recipe, tmp_path):
    big = Trainer(_recipe(tiny_recipe), output_dir=tmp_path / "big")
    big.train(max_iterations=2)
    acc = Trainer(_recipe(tiny_recipe, accumulate=2), output_dir=tmp_path / "acc")
    assert acc.micro_batch == 2 and acc.iters_per_epoch == big.iters_per_epoch  # the schedule is unchanged
    acc.train(max_iterations=2)
    a, b = acc.model.state_dict(), big.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)
    from lossreg.engine.plots import read_metrics

    logged = [r for r in read_metrics(tmp_path / "acc" / "metrics.jsonl") if r["type"] == "train"]
    expected = [r for r in read_metrics(tmp_path / "big" / "metrics.jsonl") if r["type"] == "train"]
    assert [r["loss"] for r in logged] == pytest.approx([r["loss"] for r in expected], rel=1e-4)


def test_batch_size_must_split_into_the_micro_batches(tiny_recipe, tmp_path):
    with pytest.raises(lossreg.RecipeError, match="divisible by accumulate=3"):
        Trainer(_recipe(tiny_recipe, accumulate=3), output_dir=tmp_path / "x")
