"""Faster R-CNN: RPN + RoI head assembly, ALWA on the RPN, sampling, component routing, eval format, errors."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

import lossreg
from lossreg.detectors.finetune import cls_output_layers
from lossreg.heads.roi_box import RoIBoxHead
from lossreg.heads.rpn import RPNHead
from lossreg.losses._base import ClsLoss
from lossreg.ops.geometry import aligned_box_iou
from lossreg.ops.sampler import RandomSampler

SIZE = 128
# small FPN / FC widths and few RoIs keep the CPU tests fast without changing any logic
SMALL = {"neck": {"name": "fpn", "out_channels": 64}, "roi_head": {"num_samples": 64, "fc_channels": 128}}


def _targets():
    return [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0], [50.0, 40.0, 120.0, 110.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]


def _model(name="faster_rcnn_resnet18_fpn", **kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("num_classes", 3)
    for key, value in SMALL.items():
        if isinstance(kwargs.get(key), dict):
            kwargs[key] = {**value, **kwargs[key]}
        else:
            kwargs.setdefault(key, value)
    return lossreg.create_model(name, **kwargs)


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, SIZE, SIZE)


KEYS = {"loss_rpn_cls", "loss_rpn_reg", "loss_roi_cls", "loss_roi_reg"}  # no "loss": the parts sum to the total


def test_train_forward_backward(images):
    model = _model()
    model.train()
    losses = model(images, _targets())
    assert set(losses) == KEYS
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert all(float(losses[k].detach()) > 0 for k in KEYS)  # image 0 has objects: every task has a loss
    assert model.last_loss_weights == {"rpn_cls": 1.0, "rpn_reg": 1.0, "roi_cls": 1.0, "roi_reg": 1.0}
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for module in (model.backbone, model.neck):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    for p in (
        model.rpn_head.conv.weight,
        model.rpn_head.cls_out.weight,
        model.rpn_head.reg_out.weight,
        model.roi_head.fc6.weight,
        model.roi_head.cls_score.weight,
        model.roi_head.bbox_pred.weight,
    ):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_architecture_defaults_and_init():
    model = _model()
    assert model.backbone.strides == (4, 8, 16, 32)
    assert model.neck.num_outs == 5  # P2-P6 with the max-pool level
    rpn, roi = model.rpn_head, model.roi_head
    assert isinstance(rpn, RPNHead) and isinstance(roi, RoIBoxHead)
    assert rpn.anchor_generator.strides == (4, 8, 16, 32, 64) and rpn.num_anchors == 3
    sizes = [float(rpn.anchor_generator.base_anchors(s)[1, 2] * 2) for s in rpn.anchor_generator.strides]
    assert sizes == [32.0, 64.0, 128.0, 256.0, 512.0]  # ratio-1 anchor of each level
    a = rpn.assigner
    assert (a.pos_iou_thr, a.neg_iou_thr, a.min_pos_iou, a.match_low_quality) == (0.7, 0.3, 0.0, True)
    assert (rpn.sampler.num, rpn.sampler.pos_fraction) == (256, 0.5)
    assert type(rpn.cls_loss).__name__ == "BCELoss" and type(rpn.reg_loss).__name__ == "L1Loss"
    assert (rpn.pre_nms_topk_train, rpn.post_nms_topk_train, rpn.pre_nms_topk_test, rpn.post_nms_topk_test) == (
        2000,
        2000,
        1000,
        1000,
    )
    a = roi.assigner
    assert (a.pos_iou_thr, a.neg_iou_thr, a.match_low_quality) == (0.5, 0.5, False)
    assert type(roi.cls_loss).__name__ == "CrossEntropyLoss" and roi.cls_score.out_features == 4  # C + background
    assert roi.bbox_pred.out_features == 3 * 4 and roi.coder.stds == (0.1, 0.1, 0.2, 0.2)
    assert (roi.score_thr, roi.nms_thr, roi.max_dets) == (0.05, 0.5, 100)
    assert roi.roi_align.featmap_names == ["0", "1", "2", "3"] and roi.roi_align.output_size == (7, 7)
    # smooth_l1 by name: beta 1 in the RoI head (Fast R-CNN), the registry's 1/9 in the RPN (torchvision)
    assert RoIBoxHead(num_classes=3, in_channels=8, fc_channels=8, reg_loss="smooth_l1").reg_loss.beta == 1.0
    assert RoIBoxHead(3, 8, fc_channels=8, reg_loss={"name": "smooth_l1", "beta": 0.5}).reg_loss.beta == 0.5
    assert RPNHead(in_channels=8, reg_loss="smooth_l1").reg_loss.beta == pytest.approx(1 / 9)
    # default head sizes: 512 RoIs, 25% positive, 1024-d FCs
    full = RoIBoxHead(num_classes=3)
    assert (full.sampler.num, full.sampler.pos_fraction, full.fc6.out_features) == (512, 0.25, 1024)
    # init: N(0, 0.01) convs with zero bias in the RPN; N(0, 0.01) / N(0, 0.001) RoI outputs
    with torch.no_grad():
        assert abs(float(rpn.conv.weight.std()) - 0.01) < 0.002 and float(rpn.cls_out.bias.abs().max()) == 0.0
        assert abs(float(full.cls_score.weight.std()) - 0.01) < 0.002
        assert abs(float(full.bbox_pred.weight.std()) - 0.001) < 0.0002
        assert float(full.cls_score.bias.abs().max()) == 0.0 and float(full.bbox_pred.bias.abs().max()) == 0.0


def test_alwa_balances_the_rpn_only(images):
    model = _model(balancer={"name": "alwa1", "interval": 2})
    assert type(model.rpn_head.balancer).__name__ == "ALWA1"
    assert type(model.roi_head.balancer).__name__ == "StaticBalancer"
    model.train()
    seen = []
    with torch.no_grad():
        for _ in range(3):
            model(images, _targets())
            seen.append(model.last_loss_weights)
    assert seen[0] == seen[1] == {"rpn_cls": 1.0, "rpn_reg": 1.0, "roi_cls": 1.0, "roi_reg": 1.0}
    # after one window of 2 iterations the RPN's classification weight drops (its loss dominates)
    alpha = float(model.rpn_head.balancer.alpha)
    assert 0.0 < alpha < 1.0
    assert seen[2]["rpn_cls"] == pytest.approx(alpha) and seen[2]["rpn_reg"] == 1.0
    assert seen[2]["roi_cls"] == 1.0 and seen[2]["roi_reg"] == 1.0
    assert model.rpn_head.last_loss_weights == {"cls": pytest.approx(alpha), "reg": 1.0}


def test_images_without_ground_truth(images):
    model = _model()
    model.train()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    losses = model(images, empty)
    assert set(losses) == KEYS and all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_rpn_reg"].detach()) == 0.0 and float(losses["loss_roi_reg"].detach()) == 0.0
    assert float(losses["loss_rpn_cls"].detach()) > 0 and float(losses["loss_roi_cls"].detach()) > 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_eval_detections(images):
    model = _model()
    model.eval()
    sizes = [(SIZE, SIZE), (96, 112)]
    with torch.no_grad():
        dets = model([images[0], images[1, :, :96, :112]])
    assert len(dets) == 2
    for det, (h, w) in zip(dets, sizes):
        assert set(det) == {"boxes", "scores", "labels"}
        k = det["scores"].shape[0]
        assert 0 < k <= 100  # untrained softmax scores are about 1 / (C + 1) > 0.05
        assert det["boxes"].shape == (k, 4) and det["boxes"].dtype == torch.float32
        assert det["scores"].dtype == torch.float32 and det["labels"].dtype == torch.long
        assert ((det["labels"] >= 0) & (det["labels"] < 3)).all()
        assert (det["scores"] > 0.05).all() and (det["scores"][:-1] >= det["scores"][1:]).all()
        b = det["boxes"]
        assert (b >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert ((b[:, 2] - b[:, 0]) >= 0.01).all() and ((b[:, 3] - b[:, 1]) >= 0.01).all()
    model.roi_head.max_dets = 5
    model.roi_head.score_thr = 0.99
    with torch.no_grad():
        dets = model(images)
    assert all(d["scores"].shape[0] == 0 and d["boxes"].shape == (0, 4) for d in dets)


def test_rpn_proposals(images):
    model = _model(rpn_head={"post_nms_topk_train": 50, "post_nms_topk_test": 20})
    rpn = model.rpn_head
    sizes = [(SIZE, SIZE), (80, 100)]
    with torch.no_grad():
        out = rpn.flat_outputs(model._features(images))
        for training, limit in ((True, 50), (False, 20)):
            rpn.train(training)
            props, scores = rpn.get_proposals(out, sizes)
            for p, s, (h, w) in zip(props, scores, sizes):
                assert 0 < p.shape[0] <= limit and s.shape == (p.shape[0],)
                assert (p >= 0).all() and (p[:, 2] <= w).all() and (p[:, 3] <= h).all()
                assert ((s >= 0) & (s <= 1)).all() and (s[:-1] >= s[1:]).all()
        dets = rpn.predict(model._features(images), (SIZE, SIZE))
    assert all((d["labels"] == 0).all() and d["boxes"].shape[0] <= 20 for d in dets)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reg_loss": "giou", "cls_loss": "focal"},
        {"reg_loss": {"name": "hcra_r", "gamma": 1.5}, "rpn_head": {"reg_loss": "hcra_r", "cls_loss": "focal"}},
    ],
)
def test_component_overrides_reach_the_right_head(kwargs, images):
    model = _model(
        assigner={"name": "max_iou", "pos_iou_thr": 0.6},
        balancer={"name": "alwa2", "interval": 3},
        **kwargs,
    )
    rpn, roi = model.rpn_head, model.roi_head
    # cls_loss / reg_loss -> RoI head; assigner / balancer -> RPN (its max_iou keeps the RPN's other defaults)
    assert type(roi.reg_loss).__name__ in ("GIoULoss", "HCRARegLoss")
    assert type(rpn.assigner).__name__ == "MaxIoUAssigner" and rpn.assigner.pos_iou_thr == 0.6
    assert rpn.assigner.neg_iou_thr == 0.3 and roi.assigner.pos_iou_thr == 0.5
    assert type(rpn.balancer).__name__ == "ALWA2" and type(roi.balancer).__name__ == "StaticBalancer"
    if "cls_loss" in kwargs:
        assert type(roi.cls_loss).__name__ == "FocalLoss" and type(rpn.cls_loss).__name__ == "BCELoss"
        assert type(rpn.reg_loss).__name__ == "L1Loss"
        # a sigmoid loss: C logits without a background column, focal prior bias
        assert roi.cls_score.out_features == 3 and float(roi.cls_score.bias[0].detach()) == pytest.approx(
            -4.59512, abs=1e-4
        )
    else:
        assert roi.reg_loss.gamma == 1.5 and type(roi.cls_loss).__name__ == "CrossEntropyLoss"
        assert type(rpn.reg_loss).__name__ == "HCRARegLoss" and type(rpn.cls_loss).__name__ == "FocalLoss"
    model.train()
    with torch.no_grad():
        losses = model(images, _targets())
    assert set(losses) == KEYS and all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_roi_reg"]) > 0
    # model_args rebuild the same detector
    again = lossreg.get_registry("detector").create("faster_rcnn", **model.model_args)
    assert type(again.roi_head.reg_loss) is type(roi.reg_loss) and type(again.rpn_head.balancer) is type(rpn.balancer)
    assert again.rpn_head.assigner.pos_iou_thr == 0.6
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_create_model_and_registry():
    assert {"faster_rcnn_resnet18_fpn", "faster_rcnn_resnet50_fpn"} <= set(lossreg.list_models("faster_rcnn_*"))
    assert {"rpn", "roi_box"} <= set(lossreg.list_components("head"))
    info = lossreg.component_info("detector", "faster_rcnn")
    assert "Ren et al." in info["paper"] and "Faster R-CNN" in info["doc"].splitlines()[0]
    for head in ("rpn", "roi_box"):
        assert "Ren et al." in lossreg.component_info("head", head)["paper"]
    torch.manual_seed(0)
    model = lossreg.create_model("faster_rcnn_resnet18_fpn", num_classes=3)
    assert model.backbone.name == "resnet18" and model.num_classes == 3
    assert model.roi_head.cls_score.out_features == 4 and model.roi_head.fc6.out_features == 1024
    assert model.model_args["label_names"] is None
    # fine-tuning re-initialises the RoI classifier only: the RPN's objectness is class-agnostic
    assert cls_output_layers(model) == {"roi_head.cls_score": (1, True)}
    assert model.roi_head.class_reg_layers == {"bbox_pred": 4}
    rpn = lossreg.create_head("rpn", in_channels=32)
    assert rpn.cls_out.out_channels == 3 and rpn.reg_out.out_channels == 12


def test_random_sampler_proportions():
    sampler = RandomSampler(512, 0.25)
    gt_inds = torch.full((6000,), -1, dtype=torch.long)
    gt_inds[:1000] = torch.arange(1000) % 4  # many positives
    gt_inds[1000:1500] = -2  # ignored: never drawn
    torch.manual_seed(0)
    pos, neg = sampler.sample(gt_inds)
    assert pos.numel() == 128 and neg.numel() == 384
    assert (gt_inds[pos] >= 0).all() and (gt_inds[neg] == -1).all()
    assert pos.unique().numel() == 128 and neg.unique().numel() == 384
    torch.manual_seed(0)
    pos2, neg2 = sampler.sample(gt_inds)
    assert torch.equal(pos, pos2) and torch.equal(neg, neg2)  # seeded by torch's global generator
    pos3, _ = sampler.sample(gt_inds)
    assert not torch.equal(pos, pos3)
    # few positives: negatives fill the batch
    few = torch.full((2000,), -1, dtype=torch.long)
    few[:10] = 0
    pos, neg = sampler.sample(few)
    assert pos.numel() == 10 and neg.numel() == 502
    # few negatives too: everything is taken
    tiny = torch.tensor([0, 1, -1, -2, -1])
    pos, neg = sampler.sample(tiny)
    assert sorted(pos.tolist()) == [0, 1] and sorted(neg.tolist()) == [2, 4]
    # the RPN's sampler: 256, half positive at most
    pos, neg = RandomSampler(256, 0.5).sample(gt_inds)
    assert pos.numel() == 128 and neg.numel() == 128
    with pytest.raises(ValueError, match="pos_fraction"):
        RandomSampler(512, 1.5)
    with pytest.raises(ValueError, match="num must be an int"):
        RandomSampler(0)
    with pytest.raises(ValueError, match="gt_inds must be an integer"):
        sampler.sample(torch.zeros(3))


def test_roi_head_samples_512_with_a_quarter_positive():
    head = RoIBoxHead(num_classes=3, in_channels=8, fc_channels=16)
    gt = torch.tensor([[100.0, 100.0, 300.0, 300.0]])
    torch.manual_seed(0)
    jitter = torch.randn(3000, 4) * 10
    near = gt + jitter[:1000]  # mostly IoU >= 0.5
    far = torch.tensor([400.0, 400.0, 500.0, 500.0]) + jitter[1000:].abs()  # IoU 0
    props = torch.cat([near, far])
    props[:, 2:] = torch.maximum(props[:, 2:], props[:, :2] + 1)
    sample = head.sample([props, props[1000:]], [{"boxes": gt, "labels": torch.tensor([2])}, _targets()[1]])
    assert [r.shape[0] for r in sample.rois] == [512, 512]
    first = sample.image == 0
    assert int(sample.pos[first].sum()) == 128 and int(sample.pos[~first].sum()) == 0
    assert (sample.labels[sample.pos] == 2).all() and (sample.labels[~sample.pos] == 3).all()
    rois = torch.cat(sample.rois)
    iou = box_iou(rois, gt)[:, 0]
    assert (iou[sample.pos] >= 0.5).all() and (iou[~sample.pos] < 0.5).all()
    assert torch.equal(sample.gt_boxes[sample.pos], gt.expand(128, 4))
    # the ground truth is added as a proposal (it is the only RoI with IoU exactly 1 here)
    assert sample.results[0].num_anchors == props.shape[0] + 1
    assert bool((sample.results[0].gt_inds[-1] == 0).item())


def test_roi_head_without_any_roi():
    head = RoIBoxHead(num_classes=3, in_channels=8, fc_channels=16)
    feats = [torch.rand(2, 8, SIZE // s, SIZE // s, requires_grad=True) for s in (4, 8, 16, 32, 64)]
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    no_gt = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    losses = head.loss(feats, empty, no_gt, (SIZE, SIZE))
    assert all(float(v.detach()) == 0.0 for v in losses.values())
    sum(losses.values()).backward()  # still connected to the graph
    head.eval()
    dets = head.predict(feats, empty, [(SIZE, SIZE)] * 2, (SIZE, SIZE))
    assert [d["boxes"].shape for d in dets] == [(0, 4), (0, 4)] and dets[0]["labels"].dtype == torch.long


class _Spy(ClsLoss):
    """Records what the RoI head passes to a sigmoid classification loss."""

    task = "cls"
    seen: dict = {}

    def elementwise(self, logits, targets, labels, quality):
        _Spy.seen.update(logits=logits.detach().clone(), labels=labels.clone(), quality=quality.clone())
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def test_roi_quality_and_scores(temp_register, images):
    temp_register("loss", _Spy, name="spy_roi_cls")
    model = _model(cls_loss="spy_roi_cls")
    roi = model.roi_head
    targets = _targets()
    model.train()
    with torch.no_grad():
        feats = model._features(images)
        _, (proposals, _) = model.rpn_head.loss_and_proposals(feats, targets, [(SIZE, SIZE)] * 2)
        torch.manual_seed(3)
        sample = roi.sample(proposals, targets)
        roi.loss_terms(feats, proposals, targets, (SIZE, SIZE), sample=sample)
        logits, deltas = roi(feats, sample.rois, [(SIZE, SIZE)] * 2)
    assert _Spy.seen["logits"].shape == (logits.shape[0], 3)  # sigmoid loss: no background column
    assert torch.equal(_Spy.seen["labels"], sample.labels)
    quality = _Spy.seen["quality"]
    rois = torch.cat(sample.rois)
    deltas = deltas.view(-1, 3, 4)
    pos = sample.pos.nonzero().squeeze(1)
    assert pos.numel() > 0
    own = roi.coder.decode(rois[pos], deltas[pos, sample.labels[pos]])
    assert torch.allclose(quality[pos], aligned_box_iou(own, sample.gt_boxes[pos]).clamp(0, 1), atol=1e-5)
    gt, gt_labels = targets[0]["boxes"], targets[0]["labels"]
    neg0 = ((sample.image == 0) & ~sample.pos).nonzero().squeeze(1)
    per_gt = torch.stack(
        [
            aligned_box_iou(roi.coder.decode(rois[neg0], deltas[neg0, c]), gt[g].expand(neg0.numel(), 4))
            for g, c in enumerate(gt_labels.tolist())
        ],
        dim=1,
    )
    assert torch.allclose(quality[neg0], per_gt.max(dim=1).values.clamp(0, 1), atol=1e-5)
    assert (quality[sample.image == 1] == 0).all()  # no ground truth in image 1


def test_rpn_sampling_and_quality(temp_register, images):
    temp_register("loss", _Spy, name="spy_rpn_cls")
    model = _model(rpn_head={"cls_loss": "spy_rpn_cls"})
    rpn, targets = model.rpn_head, _targets()
    model.train()
    with torch.no_grad():
        out = rpn.flat_outputs(model._features(images))
        results = rpn.assign(out, targets)
        torch.manual_seed(5)
        rpn.loss_terms(out, targets, results)
        torch.manual_seed(5)  # the same draws as inside loss_terms
        draws = [rpn.sampler.sample(r.gt_inds) for r in results]
    labels, quality = _Spy.seen["labels"], _Spy.seen["quality"]
    assert _Spy.seen["logits"].shape == (512, 1)  # 256 sampled anchors per image, one objectness logit
    (pos0, neg0), (pos1, neg1) = draws
    assert 0 < pos0.numel() <= 128 and pos1.numel() == 0 and neg1.numel() == 256
    n0 = pos0.numel() + neg0.numel()
    assert n0 == 256 and (labels[: pos0.numel()] == 0).all() and (labels[pos0.numel() :] == 1).all()
    assert (results[0].max_iou[pos0] > 0).all() and (results[0].gt_inds[neg0] == -1).all()
    pred, gt = out["boxes"][0], targets[0]["boxes"]
    expected = torch.cat(
        [aligned_box_iou(pred[pos0], gt[results[0].gt_inds[pos0]]), box_iou(pred[neg0], gt).max(dim=1).values]
    )
    assert torch.allclose(quality[:n0], expected.clamp(0, 1), atol=1e-5)
    assert (quality[n0:] == 0).all()  # no ground truth in image 1


def test_explain_assignment_changes_nothing(images):
    model = _model(balancer={"name": "alwa1", "interval": 2})
    model.train()
    with torch.no_grad():
        model(images, _targets())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    reports = model.explain_assignment(images, _targets())
    assert torch.equal(rng, torch.get_rng_state())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(reports) == 2
    assert reports[0]["summary"].num_gts == 2 and reports[0]["summary"].num_pos > 0
    assert len(reports[0]["summary"].pos_per_level) == 5  # P2-P6
    assert reports[0]["roi_summary"].num_pos > 0 and reports[1]["summary"].num_pos == 0
    assert set(reports[0]["losses"]) == {"rpn_cls", "rpn_reg", "roi_cls", "roi_reg"}
    assert reports[1]["losses"]["rpn_reg"] == 0.0 and reports[0]["losses"]["roi_reg"] > 0
    assert reports[0]["weights"] == model.last_loss_weights


def test_bad_inputs_and_components(images):
    model = _model()
    model.train()
    with pytest.raises(ValueError, match="needs targets"):
        model(images)
    bad = _targets()
    bad[0]["labels"] = torch.tensor([0, 3])
    with pytest.raises(ValueError, match=r"targets\[0\]: labels must be in \[0, 2\]"):
        model(images, bad)
    with pytest.raises(ValueError, match="float"):
        model((images * 255).to(torch.uint8), _targets())
    with pytest.raises(ValueError, match="loss 'giou' has task 'reg', but a 'cls' loss is needed"):
        _model(cls_loss="giou")
    with pytest.raises(lossreg.UnknownComponentError, match="did you mean .*'alwa1'"):
        _model(balancer="alwa")
    with pytest.raises(ValueError, match="RPNHead: CrossEntropyLoss is a softmax loss with a background column"):
        _model(rpn_head={"cls_loss": "ce"})
    with pytest.raises(ValueError, match="class-agnostic"):
        lossreg.create_head("rpn", num_classes=80)
    with pytest.raises(ValueError, match="not both"):
        _model(head="roi_box", roi_head={"name": "roi_box"})
    with pytest.raises(TypeError, match="quality_loss"):
        _model(quality_loss="bce")
    with pytest.raises(ValueError, match="needs 4 feature levels"):
        model.roi_head(model._features(images)[:2], [torch.zeros(0, 4)] * 2, [(SIZE, SIZE)] * 2)
