"""VFNet head and detector: star offsets, box refinement, IoU-aware targets, ablation switches, drop-ins."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.ops import box_iou, deform_conv2d

import lossreg
from lossreg.heads.vfnet import StarConv, VFNetHead, star_dcn_offset
from lossreg.ops.geometry import aligned_box_iou

SIZE = 128
LEVELS = (16, 8, 4, 2, 1)  # feature sizes of a 128x128 image at strides 8..128


def _targets():
    return [
        {"boxes": torch.tensor([[10.0, 12.0, 70.0, 80.0], [50.0, 40.0, 120.0, 110.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]


def _empty_targets(n=2):
    return [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)} for _ in range(n)]


def _head(**kwargs):
    torch.manual_seed(0)
    kwargs = {"num_classes": 3, "in_channels": 32, "feat_channels": 32, "stacked_convs": 1, **kwargs}
    return VFNetHead(**kwargs)


def _feats(batch=2, channels=32):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(batch, channels, s, s, generator=g) for s in LEVELS]


def _small_model(**kwargs):
    """resnet18 + a 64-channel FPN and a one-conv head: the full detector, fast on CPU."""
    torch.manual_seed(0)
    head = {"feat_channels": 64, "stacked_convs": 1, **kwargs.pop("head", {})}
    return lossreg.create_model("vfnet_resnet18_fpn", num_classes=3, neck={"out_channels": 64}, head=head, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """deform_conv2d's CPU kernels run far slower with 2 threads on busy shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, SIZE, SIZE)


# -- star offsets -------------------------------------------------------------
def test_star_offsets_hand_computed():
    # ltrb = (16, 8, 24, 32) px at stride 8 -> (l, t, r, b) = (2, 1, 3, 4) cells. Star points (dy, dx):
    # (-1,-2) (-1,0) (-1,3) / (0,-2) (0,0) (0,3) / (4,-2) (4,0) (4,3); minus the 3x3 grid
    # (-1,-1) (-1,0) (-1,1) / (0,-1) (0,0) (0,1) / (1,-1) (1,0) (1,1):
    expected = [0, -1, 0, 0, 0, 2, 0, -1, 0, 0, 0, 2, 3, -1, 3, 0, 3, 2]
    ltrb = torch.tensor([16.0, 8.0, 24.0, 32.0]).view(1, 4, 1, 1)
    offset = star_dcn_offset(ltrb, stride=8)
    assert offset.shape == (1, 18, 1, 1)
    assert torch.allclose(offset.flatten(), torch.tensor(expected, dtype=torch.float32), atol=1e-6)


def test_star_offsets_gradient_multiplier():
    ltrb = torch.tensor([16.0, 8.0, 24.0, 32.0]).view(1, 4, 1, 1).requires_grad_()
    star_dcn_offset(ltrb, stride=8, gradient_mul=0.1).sum().backward()
    # d(sum)/d(l, t, r, b) without the multiplier: l appears as -l three times (and +1 base), etc.
    full = torch.tensor([-3.0, -3.0, 3.0, 3.0]) / 8
    assert torch.allclose(ltrb.grad.flatten(), 0.1 * full)


@pytest.mark.parametrize("ltrb_cells", [(2.0, 1.0, 3.0, 4.0), (2.5, 1.25, 3.5, 4.75)])
def test_star_conv_samples_the_star_points(ltrb_cells):
    """deform_conv2d with a one-hot kernel at point k reads the feature at the k-th star point."""
    h = w = 20
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    feat = (100 * ys + xs).view(1, 1, h, w)  # linear: bilinear sampling is exact
    stride = 16
    ltrb = torch.tensor(ltrb_cells).mul(stride).view(1, 4, 1, 1).expand(1, 4, h, w)
    offset = star_dcn_offset(ltrb, stride)
    left, t, r, b = ltrb_cells
    points = [(-t, -left), (-t, 0), (-t, r), (0, -left), (0, 0), (0, r), (b, -left), (b, 0), (b, r)]
    y0, x0 = 10, 9
    for k, (dy, dx) in enumerate(points):
        weight = torch.zeros(1, 1, 3, 3)
        weight[0, 0, k // 3, k % 3] = 1.0
        out = deform_conv2d(feat, offset, weight, padding=(1, 1))
        assert out[0, 0, y0, x0].item() == pytest.approx(100 * (y0 + dy) + (x0 + dx), abs=1e-3), k
    conv = StarConv(1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 2, 2] = 1.0  # bottom-right corner
    assert conv(feat, offset)[0, 0, y0, x0].item() == pytest.approx(100 * (y0 + b) + (x0 + r), abs=1e-3)


# -- head ---------------------------------------------------------------------
def test_refined_box_is_initial_box_times_refinement():
    head = _head()
    feats = _feats()
    with torch.no_grad():
        head.reg_refine_out.weight.zero_()
        head.reg_refine_out.bias.zero_()
        out = head.flat_outputs(feats)
        assert torch.allclose(out["boxes"], out["boxes_init"])
        head.reg_refine_out.bias.fill_(math.log(2.0))
        out = head.flat_outputs(feats)
    assert torch.allclose(out["reg"], 2 * out["reg_init"], rtol=1e-5)
    # initial ltrb = exp(~0) * 8 * stride: boxes of about 16 strides around each point
    assert abs(float(out["reg_init"].mean()) - 8.0) < 0.5
    assert (out["reg_init"] > 4).all() and (out["reg_init"] < 16).all()


@pytest.mark.parametrize("star_dcn,gradient_mul,reaches", [(False, 0.1, False), (True, 0.0, False), (True, 0.1, True)])
def test_refinement_detaches_the_initial_box(star_dcn, gradient_mul, reaches):
    """The refined box scales a detached initial box; only the star offsets (x gradient_mul) feed back."""
    head = _head(star_dcn=star_dcn, gradient_mul=gradient_mul)
    head.flat_outputs(_feats())["boxes"].sum().backward()
    grad = head.reg_init_out.weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == reaches
    assert head.reg_refine_out.weight.grad.abs().sum() > 0


def test_quality_is_iou_of_the_refined_box():
    seen = {}

    class Spy(nn.Module):
        task = "cls"

        def forward(self, logits, labels, quality=None, weight=None, avg_factor=None):
            seen.update(labels=labels, quality=quality)
            return logits.sigmoid().mean()

    head = _head(cls_loss=Spy())
    with torch.no_grad():
        head.reg_refine_out.bias.fill_(0.3)  # refined boxes differ from the initial ones
    targets = _targets()
    out = head.flat_outputs(_feats())
    results = head.assign(out, targets)
    head.loss_terms(out, targets, results)
    n = out["anchors"].shape[0]
    labels, quality = seen["labels"].view(2, n), seen["quality"].view(2, n)
    gt_inds = results[0].gt_inds
    pos = gt_inds >= 0
    assert pos.sum() > 0 and (labels[0, pos] == targets[0]["labels"][gt_inds[pos]]).all()
    gt = targets[0]["boxes"][gt_inds[pos]]
    assert torch.allclose(quality[0, pos], aligned_box_iou(out["boxes"][0, pos].detach(), gt).clamp(min=0), atol=1e-6)
    assert not torch.allclose(quality[0, pos], aligned_box_iou(out["boxes_init"][0, pos].detach(), gt), atol=1e-3)
    neg_iou = box_iou(out["boxes"][0, ~pos].detach(), targets[0]["boxes"]).max(dim=1).values
    assert torch.allclose(quality[0, ~pos], neg_iou, atol=1e-6)
    assert (labels[1] == 3).all() and (quality[1] == 0).all()  # no gt: all background, quality 0


def test_delta_space_losses_get_encoded_ltrb():
    head = _head(reg_loss="l1", reg_weighting="none")
    targets = _targets()
    out = head.flat_outputs(_feats())
    results = head.assign(out, targets)
    terms = head.loss_terms(out, targets, results)
    pos = (results[0].gt_inds >= 0).nonzero().squeeze(1)
    gt = targets[0]["boxes"][results[0].gt_inds[pos]]
    ctr = (out["anchors"][pos, :2] + out["anchors"][pos, 2:]) / 2
    target = torch.cat([ctr - gt[:, :2], gt[:, 2:] - ctr], 1) / out["strides"][pos, None]
    l1 = lossreg.create_loss("l1")
    expected_init = 0.75 * l1(out["reg_init"][0, pos], target, avg_factor=float(pos.numel()))
    expected = l1(out["reg"][0, pos], target, avg_factor=float(pos.numel()))
    assert torch.allclose(terms["reg_init"], expected_init, rtol=1e-5)
    assert torch.allclose(terms["reg"], expected, rtol=1e-5)


@pytest.mark.parametrize(
    "star_dcn,refine,keys",
    [
        (True, True, {"loss_cls", "loss_reg", "loss_reg_init"}),
        (True, False, {"loss_cls", "loss_reg"}),
        (False, True, {"loss_cls", "loss_reg", "loss_reg_init"}),
        (False, False, {"loss_cls", "loss_reg"}),
    ],
)
def test_auxiliary_module_switches_train(star_dcn, refine, keys):
    head = _head(star_dcn=star_dcn, refine=refine)
    assert head.cls_conv.deformable == star_dcn
    assert hasattr(head, "reg_refine_out") == refine and (head.reg_init_loss is not None) == refine
    feats, targets = _feats(), _targets()
    opt = torch.optim.SGD(head.parameters(), lr=0.01)
    reg = []
    for _ in range(3):
        losses = head.loss(feats, targets)
        assert set(losses) == keys and all(torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        sum(losses.values()).backward()
        # every parameter takes part, and nothing diverges
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
        opt.step()
        reg.append(float(losses["loss_reg"].detach()))
    assert reg[-1] < 0.9 * reg[0]  # the box loss (fixed atss assignment) goes down


def test_no_ground_truth_anywhere():
    head = _head()
    losses = head.loss(_feats(), _empty_targets())
    assert losses["loss_reg"] == 0 and losses["loss_reg_init"] == 0 and losses["loss_cls"] > 0
    sum(losses.values()).backward()
    assert torch.isfinite(head.cls_out.weight.grad).all() and head.cls_out.weight.grad.abs().sum() > 0


def test_optional_quality_branch():
    head = _head(quality_loss="bce")
    losses = head.loss(_feats(), _targets())
    assert set(losses) == {"loss_cls", "loss_reg", "loss_reg_init", "loss_quality"}
    assert torch.isfinite(losses["loss_quality"]) and losses["loss_quality"] > 0
    assert _head().quality_out is None


def test_predict_clips_boxes():
    head = _head()
    head.score_thr = 0.0
    dets = head.predict(_feats(), (SIZE, 100))
    assert len(dets) == 2
    for det in dets:
        assert set(det) == {"boxes", "scores", "labels"} and 0 < det["boxes"].shape[0] <= 100
        assert (det["boxes"] >= 0).all() and (det["boxes"][:, 2] <= 100).all() and (det["boxes"][:, 3] <= SIZE).all()


def test_initialisation():
    head = VFNetHead(num_classes=3)
    bias = head.cls_out.bias
    assert torch.allclose(bias, torch.full_like(bias, -math.log(99.0)), atol=1e-5)
    for w in (head.cls_tower[0].weight, head.reg_init_out.weight, head.cls_conv.weight, head.refine_conv.weight):
        assert abs(float(w.detach().std()) - 0.01) < 0.002
    assert head.reg_init_out.bias.abs().sum() == 0
    assert head.reg_loss.loss_weight == 2.0 and head.reg_init_weight * head.reg_init_loss.loss_weight == 1.5
    with pytest.raises(ValueError, match="bbox_norm"):
        VFNetHead(num_classes=3, bbox_norm="bogus")


# -- detector -----------------------------------------------------------------
def test_create_model_train_and_eval(images):
    torch.manual_seed(0)
    model = lossreg.create_model("vfnet_resnet18_fpn", num_classes=3)
    assert isinstance(model.head, VFNetHead) and model.head.cls_loss.__class__.__name__ == "VarifocalLoss"
    model.train()
    losses = model(images, _targets())
    assert set(losses) == {"loss_cls", "loss_reg", "loss_reg_init"}  # no "loss": the parts sum to the total
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    for name in ("cls_conv", "refine_conv"):  # the deformable convs learn
        assert getattr(model.head, name).weight.grad.abs().sum() > 0, name
    model.eval()
    model.head.score_thr = 0.0  # untrained scores are small: keep detections to check their format
    with torch.no_grad():
        dets = model([images[0], images[1, :, :64, :80]])
    for det, (h, w) in zip(dets, [(SIZE, SIZE), (64, 80)]):
        assert set(det) == {"boxes", "scores", "labels"} and 0 < det["boxes"].shape[0] <= 100
        assert det["labels"].dtype == torch.long and (det["labels"] < 3).all()
        assert (det["boxes"] >= 0).all() and (det["boxes"][:, 2] <= w).all() and (det["boxes"][:, 3] <= h).all()


def test_hcral_components_drop_in_by_name(images):
    model = _small_model(cls_loss="hcra_c", reg_loss="hcra_r", assigner="eatss")
    head = model.head
    assert isinstance(head.cls_loss, type(lossreg.create_loss("hcra_c")))
    assert type(head.reg_loss) is type(head.reg_init_loss) and head.reg_loss is not head.reg_init_loss
    assert type(head.reg_loss).__name__ == "HCRARegLoss" and type(head.assigner).__name__ == "EATSSAssigner"
    model.train()
    losses = model(images, _targets())
    assert set(losses) == {"loss_cls", "loss_reg", "loss_reg_init"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_reg_init"] > 0
    sum(losses.values()).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    # each regression loss keeps its own running mean, saved with the model
    sd = model.state_dict()
    assert sd["head.reg_loss.running_mean"] != 1 and sd["head.reg_init_loss.running_mean"] != 1
    report = model.explain_assignment(images[:1], _targets()[:1])
    assert set(report[0]["losses"]) == {"cls", "reg", "reg_init"}


def test_ablated_detector_and_registry(images):
    model = _small_model(head={"star_dcn": False, "refine": False})
    model.train()
    losses = model(images, _empty_targets())  # no gt in the batch
    assert set(losses) == {"loss_cls", "loss_reg"} and losses["loss_reg"] == 0
    sum(losses.values()).backward()
    assert {"vfnet_resnet18_fpn", "vfnet_resnet50_fpn"} <= set(lossreg.list_models("vfnet*"))
    info = lossreg.component_info("head", "vfnet")
    assert "VarifocalNet" in info["paper"] and "HCRAL" in info["paper"]
    assert info["params"]["star_dcn"] is True and info["params"]["refine"] is True
    assert info["params"]["cls_loss"] == "vfl" and info["params"]["assigner"] == "atss"
    assert "VarifocalNet" in lossreg.component_info("detector", "vfnet")["paper"]


def test_initial_box_loss_spec():
    head = _head(reg_init_loss="iou", reg_init_weight=1.0)
    assert type(head.reg_init_loss) is type(lossreg.create_loss("iou")) and type(head.reg_loss) is not type(head.reg_init_loss)
    terms = head.loss(_feats(), _targets())
    assert torch.isfinite(terms["loss_reg_init"]) and terms["loss_reg_init"] > 0
    with pytest.raises(ValueError, match="reg"):
        _head(reg_init_loss="focal")
    assert _head(refine=False).reg_init_loss is None
