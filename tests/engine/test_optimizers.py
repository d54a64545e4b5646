"""train.optimizer: torch's SGD and fused AdamW, every timm optimizer by name, no weight decay on norms/biases/scales."""

from __future__ import annotations

import pytest
import timm.optim
import torch

import lossreg
from lossreg.engine.schedule import build_optimizer, param_groups
from lossreg.recipe import OptimizerCfg, RecipeError


def _model():
    return lossreg.create_model("atss_resnet18_fpn", backbone="test_resnet", num_classes=3,
                                neck={"name": "fpn", "out_channels": 32},
                                head={"name": "atss", "feat_channels": 32, "stacked_convs": 1}, balancer="uncertainty")


def test_no_weight_decay_on_norms_biases_scales_and_balancers():
    model = _model()
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert decayed | skipped == set(names.values()) and not decayed & skipped
    assert all(model.get_parameter(n).ndim > 1 for n in decayed)  # conv / linear weights only
    for name in ("head.scales.0.scale", "head.cls_out.bias", "head.balancer.log_vars.cls"):
        assert name in skipped
    gn = [n for n, m in model.named_modules() if isinstance(m, torch.nn.GroupNorm)]
    bn = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert gn and bn and all(f"{n}.weight" in skipped for n in gn + bn)
    everything = param_groups(model, 0.05, decay_norm_and_bias=True)
    assert {names[id(p)] for p in everything[1]["params"]} == {n for n in names.values() if ".balancer." in n}


@pytest.mark.parametrize("name", ["lamb", "lion", "adan", "nesterov", "sgdp", "rmsprop", "lookahead_adamw", "adopt"])
def test_timm_optimizers_by_name(name):
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]
    cfg = OptimizerCfg(name=name, lr=0.003, momentum=0.8, betas=(0.85, 0.98), weight_decay=0.01)
    opt = build_optimizer([{"params": params[:1], "weight_decay": 0.01}, {"params": params[1:], "weight_decay": 0.0}], cfg)
    info = timm.optim.get_optimizer_info(name.removeprefix("lookahead_"))
    assert isinstance(opt, torch.optim.Optimizer)
    groups = opt.param_groups
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0] and all(g["lr"] == 0.003 for g in groups)
    if info.has_momentum:
        assert groups[0]["momentum"] == 0.8
    if info.has_betas and info.num_betas == 2:
        assert tuple(groups[0]["betas"]) == (0.85, 0.98)
    before = params[0].detach().clone()
    for _ in range(2):  # adopt's first step only initialises its second moment
        opt.zero_grad()
        (params[0].sum() + params[1].sum()).backward()
        opt.step()
    assert not torch.equal(params[0].detach(), before)


def test_sgd_and_adamw_stay_torch_and_take_args():
    p = [torch.nn.Parameter(torch.randn(2, 2))]
    sgd = build_optimizer(p, OptimizerCfg(name="sgd", args={"nesterov": True}))
    assert type(sgd) is torch.optim.SGD and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    adamw = build_optimizer(p, OptimizerCfg(name="adamw", lr=0.001, args={"eps": 1e-6}))
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["eps"] == 1e-6 and adamw.defaults["fused"]


def _recipe(**optimizer):
    return {"name": "t", "model": {"arch": "atss", "backbone": "test_resnet"}, "train": {"optimizer": optimizer}}


def test_recipe_checks_optimizer_names_and_args():
    assert lossreg.load_recipe(_recipe(name="lion", lr=1e-4)).train.optimizer.name == "lion"
    with pytest.raises(RecipeError, match=r"train.optimizer.name: unknown optimizer 'adamx'; did you mean 'adamax'"):
        lossreg.load_recipe(_recipe(name="adamx"))
    with pytest.raises(RecipeError, match=r"train.optimizer.args.epz: optimizer 'lamb' has no parameter 'epz'; did you mean 'eps'"):
        lossreg.load_recipe(_recipe(name="lamb", args={"epz": 1e-6}))
    with pytest.raises(RecipeError, match=r"set train.optimizer.lr, not args.lr"):
        lossreg.load_recipe(_recipe(name="sgd", args={"lr": 0.1}))
