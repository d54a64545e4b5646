"""One-stage detectors: torchvision's calling convention, component swapping, quality semantics, errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

import lossreg
from lossreg.losses._base import ClsLoss

SIZE = 96


def _targets():
    return [
        {"boxes": torch.tensor([[8.0, 10.0, 50.0, 60.0], [40.0, 30.0, 90.0, 80.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]


def _model(name="atss_resnet18_fpn", **kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("num_classes", 3)
    model = lossreg.create_model(name, **kwargs)
    # small heads keep the CPU tests fast without changing any logic
    return model


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, SIZE, SIZE)


@pytest.mark.parametrize(
    "name,keys",
    [
        ("atss_resnet18_fpn", {"loss_cls", "loss_reg", "loss_quality"}),
        ("retinanet_resnet18_fpn", {"loss_cls", "loss_reg"}),
        ("fcos_resnet18_fpn", {"loss_cls", "loss_reg", "loss_quality"}),
    ],
)
def test_train_and_eval(name, keys, images):
    model = _model(name)
    model.train()
    losses = model(images, _targets())
    assert set(losses) == keys
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()  # torchvision's contract: no "loss" key, the parts sum to the total
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    assert model.head.cls_out.weight.grad.abs().sum() > 0
    model.eval()
    model.head.score_thr = 0.0  # untrained scores are tiny: keep some detections to check their format
    dets = model([images[0], images[1, :, :64, :80]])
    assert len(dets) == 2
    for det, (h, w) in zip(dets, [(SIZE, SIZE), (64, 80)]):
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].shape[1] == 4 and det["boxes"].shape[0] == det["scores"].shape[0] <= 100
        assert det["labels"].dtype == torch.long and (det["labels"] < 3).all()
        assert (det["boxes"][:, 2] <= w).all() and (det["boxes"][:, 3] <= h).all() and (det["boxes"] >= 0).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()


def test_focal_prior_and_head_init():
    model = _model()
    bias = model.head.cls_out.bias
    assert torch.allclose(bias, torch.full_like(bias, -torch.log(torch.tensor(99.0))), atol=1e-5)
    w = model.head.cls_tower[0].weight
    assert abs(float(w.detach().std()) - 0.01) < 0.002


def test_components_by_name(images):
    model = _model(
        cls_loss="hcra_c",
        reg_loss={"name": "hcra_r", "gamma": 1.5},
        assigner={"name": "eatss", "extra": 2},
        balancer={"name": "alwa1", "interval": 2},
        head={"name": "atss", "quality": "iou"},
    )
    head = model.head
    assert type(head.cls_loss).__name__ == "HCRACLoss"
    assert type(head.reg_loss).__name__ == "HCRARegLoss" and head.reg_loss.gamma == 1.5
    assert type(head.assigner).__name__ == "EATSSAssigner" and head.assigner.extra == 2
    assert head.quality == "iou"
    model.train()
    for _ in range(2):
        losses = model(images, _targets())
        assert torch.isfinite(sum(losses.values()))
    assert set(head.last_loss_weights) >= {"cls", "reg"}
    assert model.model_args["head"]["cls_loss"] == "hcra_c"


@pytest.mark.parametrize("reg_loss", ["l1", "smooth_l1", "giou", "ciou", "focal_eiou", "alpha_iou"])
def test_every_regression_space(reg_loss, images):
    model = _model("retinanet_resnet18_fpn", reg_loss=reg_loss)
    model.train()
    loss = model(images, _targets())["loss_reg"]
    assert torch.isfinite(loss) and loss > 0


def test_wrong_components_are_clear():
    with pytest.raises(ValueError, match="loss 'giou' has task 'reg', but a 'cls' loss is needed"):
        _model(cls_loss="giou")
    with pytest.raises(lossreg.UnknownComponentError, match="did you mean 'hcra_c'\\?"):
        _model(cls_loss="hcra_x")
    with pytest.raises(TypeError, match="parameter 'gama'"):
        _model(cls_loss={"name": "focal", "gama": 2})
    with pytest.raises(lossreg.UnknownComponentError, match="unknown timm backbone 'resnet19'"):
        _model(backbone="resnet19")


def test_bad_inputs(images):
    model = _model()
    model.train()
    with pytest.raises(ValueError, match="needs targets"):
        model(images)
    bad = _targets()
    bad[0]["labels"] = torch.tensor([0, 5])
    with pytest.raises(ValueError, match=r"targets\[0\]: labels must be in \[0, 2\]"):
        model(images, bad)
    bad = _targets()
    bad[0]["boxes"] = torch.tensor([[10.0, 10.0, 5.0, 20.0], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"targets\[0\]: boxes must be \(x1, y1, x2, y2\)"):
        model(images, bad)
    with pytest.raises(ValueError, match="float"):
        model((images * 255).to(torch.uint8), _targets())


class _Spy(ClsLoss):
    """Records what the head passes to the classification loss."""

    task = "cls"
    uses_quality = True  # the dense heads compute the quality only for losses that declare it
    seen: dict = {}

    def elementwise(self, logits, targets, labels, quality):
        _Spy.seen.update(labels=labels.clone(), quality=quality.clone())
        return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def test_quality_is_iou_for_positives_and_max_iou_for_negatives(temp_register, images):
    temp_register("loss", _Spy, name="spy_cls")
    model = _model(cls_loss="spy_cls")
    model.train()
    targets = _targets()
    model(images, targets)
    with torch.no_grad():
        out = model.head.flat_outputs(model._features(images))
        results = model.head.assign(out, targets)
    labels, quality = _Spy.seen["labels"].view(2, -1), _Spy.seen["quality"].view(2, -1)
    boxes0 = out["boxes"][0]
    iou = box_iou(boxes0, targets[0]["boxes"])
    gt_inds = results[0].gt_inds
    pos = gt_inds >= 0
    assert pos.any()
    expected = iou.max(dim=1).values
    expected[pos] = iou[pos, gt_inds[pos]]
    assert torch.allclose(quality[0], expected.clamp(0, 1), atol=1e-5)
    assert (labels[0][pos] == targets[0]["labels"][gt_inds[pos]]).all()
    assert (labels[0][~pos] == 3).all()  # background = C
    assert (quality[1] == 0).all() and (labels[1] == 3).all()  # no ground truth: all background, quality 0


class _NoQualitySpy(ClsLoss):
    """A loss that does not declare ``uses_quality``: the head skips the IoU work and passes None."""

    task = "cls"
    seen: dict = {}

    def elementwise(self, logits, targets, labels, quality):
        _NoQualitySpy.seen["quality"] = quality
        return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def test_quality_not_computed_for_losses_that_do_not_use_it(temp_register, images):
    temp_register("loss", _NoQualitySpy, name="spy_no_quality")
    model = _model(cls_loss="spy_no_quality")
    model.train()
    _NoQualitySpy.seen["quality"] = "unset"
    losses = model(images, _targets())
    assert _NoQualitySpy.seen["quality"] is None
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("name", ["atss_resnet18_fpn", "vfnet_resnet18_fpn"])
def test_explain_assignment_changes_nothing(images, name):
    model = _model(name, reg_loss="hcra_r")
    model.train()
    model(images, _targets())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reports = model.explain_assignment(images, _targets())
    assert len(reports) == 2
    summary = reports[0]["summary"]
    assert summary.num_gts == 2 and summary.num_pos > 0
    assert {"cls", "reg"} <= set(reports[0]["losses"])
    assert reports[1]["summary"].num_pos == 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_backbone_override_and_any_timm_model():
    model = _model("atss_resnet50_fpn", backbone="resnet18")
    assert model.backbone.name == "resnet18"
    assert "atss_resnet50_fpn" in lossreg.list_models("atss_*")
    assert {"retinanet_resnet18_fpn", "fcos_resnet50_fpn"} <= set(lossreg.list_models("*_fpn"))


def test_short_training_reduces_loss():
    torch.manual_seed(0)
    model = _model(num_classes=2)
    model.train()
    img = torch.zeros(1, 3, 64, 64)
    img[:, :, 16:48, 8:40] = 1.0
    tgt = [{"boxes": torch.tensor([[8.0, 16.0, 40.0, 48.0]]), "labels": torch.tensor([1])}]
    # lr 0.005: from torchvision's ResNet init (residual branches open) one image in train-mode
    # BatchNorm makes SGD at 0.01 oscillate (3.6 -> 7.1 after 12 steps; 0.005 gives 3.6 -> 1.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    first = None
    for _ in range(12):
        loss = sum(model(img, tgt).values())
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.8 * first


def test_pretrained_backbone_offline_error(tmp_path):
    code = (
        "import lossreg\n"
        "try:\n"
        "    lossreg.create_model('atss_resnet18_fpn', pretrained_backbone=True)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.stdout.startswith("OfflineWeightsError"), res.stdout + res.stderr
    assert "pretrained_backbone=False" in res.stdout


def test_pretrained_without_published_weights():
    with pytest.raises(lossreg.UnknownComponentError, match="unknown pretrained weights 'fcos_resnet18_fpn'.*list pretrained"):
        lossreg.create_model("fcos_resnet18_fpn", pretrained=True, num_classes=3)
    with pytest.raises(RuntimeError, match="no published weights are registered"):
        from lossreg._factory import load_pretrained

        load_pretrained(None, arch="atss", num_classes=3, backbone="resnet18")


def test_recipe_names_build_their_model(tmp_path):
    model = lossreg.create_model("quickstart", num_classes=2, nms_thr=0.5, cls_loss="hcra_c")
    assert type(model.head.cls_loss).__name__ == "HCRACLoss" and type(model.head.assigner).__name__ == "ATSSAssigner"
    assert model.num_classes == 2 and model.head.nms_thr == 0.5 and model.backbone.name == "resnet18"
    path = tmp_path / "from_weights.yaml"
    path.write_text("model: {arch: atss, backbone: resnet18, weights: 'local-dir:/nonexistent/run'}\n")
    from lossreg._factory import build_from_recipe

    with pytest.raises((RuntimeError, FileNotFoundError, OSError), match="local-dir|nonexistent"):
        build_from_recipe(path, num_classes=2)
