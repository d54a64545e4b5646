"""The training loss dict follows torchvision's contract: its values sum to the total lossreg trains.

A plain torchvision-style loop (``sum(loss_dict.values()).backward()``) and ``lossreg train``
must therefore give the same weights, and no ``"loss"`` key may double the total.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

import lossreg
from lossreg.cli import main
from lossreg.data import build_dataset, collate
from lossreg.engine.sampler import ResumableSampler, SeededItems
from lossreg.engine.trainer import seed_everything
from lossreg.recipe import load_recipe


def _tiny(tiny_recipe, balancer="uncertainty"):
    return tiny_recipe(
        model={"balancer": balancer},
        data={"val": None, "augment": []},
        train={
            "epochs": 2,
            "batch_size": 2,
            "warmup_iters": 0,
            "schedule": "constant",
            "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
            "log_interval": 1,
        },
    )


def test_plain_torchvision_loop_and_lossreg_train_give_identical_weights(tiny_recipe, tmp_path):
    spec = _tiny(tiny_recipe)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    recipe = load_recipe(spec)
    build_dataset(recipe.data.train, recipe.data, train=True)  # generate the set first: both runs read the cache

    assert main(["train", str(path), "--output", str(tmp_path / "run"), "--no-progress"]) == 0
    trained = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))

    # the same model, data and order, trained the way a torchvision user would
    seed_everything(recipe.train.seed)
    train_set = build_dataset(recipe.data.train, recipe.data, train=True)
    recipe = recipe.with_overrides([f"model.num_classes={train_set.num_classes}"])
    from lossreg._factory import build_from_recipe

    model = build_from_recipe(recipe, label_names=list(train_set.class_names)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sampler = ResumableSampler(len(train_set), shuffle=True, seed=recipe.train.seed)
    items = SeededItems(train_set)
    steps = 0
    for epoch in range(2):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        for start in range(0, len(keys), 2):
            images, targets, _ = collate([items[k] for k in keys[start : start + 2]])
            loss_dict = model(images, targets)
            assert "loss" not in loss_dict and "loss_balancer" in loss_dict  # uncertainty's 0.5 * s_k
            loss = sum(loss_dict.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    assert steps == 6
    state = model.state_dict()
    assert set(trained) <= set(state)
    differ = [k for k in trained if not torch.equal(trained[k], state[k].to(trained[k].dtype))]
    assert not differ, differ
    log_vars = [k for k in trained if "log_vars" in k]
    assert log_vars and any(trained[k].abs().item() > 0 for k in log_vars)  # the regulariser's parameters learned


@pytest.mark.parametrize("balancer", ["static", "uncertainty", "alwa1", "dwa"])
def test_the_dict_sums_to_the_balancers_total(balancer):
    torch.manual_seed(0)
    model = lossreg.create_model("atss_resnet18_fpn", num_classes=3, balancer=balancer, pretrained_backbone=False)
    model.train()
    images = torch.rand(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 60.0], [0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([0, 2])},
    ]
    head = model.head
    feats = model._features(images)
    out = head.flat_outputs(feats)
    terms = head.loss_terms(out, targets, head.assign(out, targets))
    state = {k: v.clone() for k, v in head.balancer.state_dict().items()}
    total, weights = head.balancer(terms)
    head.balancer.load_state_dict(state)
    parts = head.balance(terms)
    assert "loss" not in parts
    assert set(parts) == {f"loss_{k}" for k in terms} | ({"loss_balancer"} if balancer == "uncertainty" else set())
    assert float(sum(parts.values()).detach()) == pytest.approx(float(total.detach()), rel=1e-6, abs=1e-7)
    for task, w in weights.items():
        assert float(parts[f"loss_{task}"].detach()) == pytest.approx(w * float(terms[task].detach()), rel=1e-6)


def test_faster_rcnn_uncertainty_balancer_regulariser_entry():
    torch.manual_seed(0)
    model = lossreg.create_model("faster_rcnn_resnet18_fpn", num_classes=2, balancer="uncertainty")
    model.train()
    images = torch.rand(1, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])}]
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_reg", "loss_rpn_balancer", "loss_roi_cls", "loss_roi_reg"}
    assert float(losses["loss_rpn_balancer"].detach()) == 0.0  # s_k = 0 at the start
    sum(losses.values()).backward()
    grads = [p.grad for p in model.rpn_head.balancer.parameters()]
    assert all(g is not None and g.abs() > 0 for g in grads)  # 0.5 * (1 - exp(-s) L): the regulariser is in the graph
