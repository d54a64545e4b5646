"""Batched post-processing gives the detections of the former per-image, per-level loops.

The reference functions below are the per-image implementations lossreg used before the
batch-wide version (verbatim apart from taking the head as an argument); every
architecture's eval output must match them to float tolerance on random models.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

import lossreg
from lossreg.ops.images import pad_images
from lossreg.ops.postprocess import batched_group_nms, pad_per_image, unpad


def _ref_dense_predict(head, feats, image_size):
    out = head.flat_outputs(feats)
    scores_all = out["cls"].sigmoid()
    if out["quality"] is not None:
        scores_all = scores_all * out["quality"].sigmoid()[..., None]
    h, w = image_size
    results = []
    for b in range(scores_all.shape[0]):
        kept_boxes, kept_scores, kept_labels = [], [], []
        start = 0
        for n in out["level_sizes"]:
            s = scores_all[b, start : start + n].reshape(-1)
            keep = (s > head.score_thr).nonzero().squeeze(1)
            if keep.numel() > head.pre_nms_topk:
                keep = keep[s[keep].topk(head.pre_nms_topk).indices]
            a_idx = keep // head.num_classes + start
            kept_boxes.append(out["boxes"][b, a_idx])
            kept_scores.append(s[keep])
            kept_labels.append(keep % head.num_classes)
            start += n
        boxes = torch.cat(kept_boxes).float()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        scores, labels = torch.cat(kept_scores).float(), torch.cat(kept_labels)
        keep = batched_nms(boxes, scores, labels, head.nms_thr)[: head.max_dets]
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return results


def _ref_rpn_proposals(head, out, image_sizes):
    pre, post = head.pre_nms_topk_test, head.post_nms_topk_test
    logits = out["cls"].detach()[..., 0].float()
    boxes = out["boxes"].detach().float()
    top, levels, start = [], [], 0
    for lvl, n in enumerate(out["level_sizes"]):
        k = min(pre, n)
        if k > 0:
            top.append(logits[:, start : start + n].topk(k, dim=1).indices + start)
            levels.append(torch.full((k,), lvl, dtype=torch.long))
        start += n
    idx, level = torch.cat(top, dim=1), torch.cat(levels)
    batch = torch.arange(logits.shape[0])[:, None]
    scores_all, boxes_all = logits[batch, idx].sigmoid(), boxes[batch, idx]
    props = []
    for b, (h, w) in enumerate(image_sizes):
        bx = clip_boxes_to_image(boxes_all[b], (int(h), int(w)))
        sc, lv = scores_all[b], level
        keep = remove_small_boxes(bx, head.min_size)
        bx, sc, lv = bx[keep], sc[keep], lv[keep]
        keep = torch.where(sc >= head.score_thr)[0]
        bx, sc, lv = bx[keep], sc[keep], lv[keep]
        keep = batched_nms(bx, sc, lv, head.nms_thr)[:post]
        props.append({"boxes": bx[keep], "scores": sc[keep], "labels": torch.zeros_like(keep)})
    return props


def _ref_roi_predict(head, feats, proposals, image_sizes, image_shape):
    rois = [p.detach().float() for p in proposals]
    logits, deltas = head(feats, rois, [image_shape] * len(rois))
    c = head.num_classes
    probs = head.class_probs(logits)
    boxes = head.coder.decode(torch.cat(rois)[:, None, :], deltas.view(-1, c, 4).float())
    results, start = [], 0
    for r, (h, w) in zip(rois, image_sizes):
        n = r.shape[0]
        bx = clip_boxes_to_image(boxes[start : start + n], (int(h), int(w))).reshape(-1, 4)
        sc = probs[start : start + n].reshape(-1)
        lab = torch.arange(c).repeat(n)
        start += n
        keep = torch.where(sc > head.score_thr)[0]
        bx, sc, lab = bx[keep], sc[keep], lab[keep]
        keep = remove_small_boxes(bx, head.min_size)
        bx, sc, lab = bx[keep], sc[keep], lab[keep]
        keep = batched_nms(bx, sc, lab, head.nms_thr)[: head.max_dets]
        results.append({"boxes": bx[keep], "scores": sc[keep], "labels": lab[keep]})
    return results


def _clip(dets, sizes):
    for det, (h, w) in zip(dets, sizes):
        det["boxes"][:, 0::2] = det["boxes"][:, 0::2].clamp(0, w)
        det["boxes"][:, 1::2] = det["boxes"][:, 1::2].clamp(0, h)
    return dets


@torch.no_grad()
def _reference(model, images):
    batch, sizes = pad_images(images)
    feats = model._features(batch)
    shape = (int(batch.shape[-2]), int(batch.shape[-1]))
    if hasattr(model, "rpn_head"):
        props = [p["boxes"] for p in _ref_rpn_proposals(model.rpn_head, model.rpn_head.flat_outputs(feats), sizes)]
        return _clip(_ref_roi_predict(model.roi_head, feats, props, sizes, shape), sizes)
    return _clip(_ref_dense_predict(model.head, feats, shape), sizes)


def _canonical(det):
    """Detections sorted by decreasing score, exact ties by box and label: the order among equal
    scores is an implementation detail of the NMS and sort kernels."""
    keys = [det["labels"].double(), *det["boxes"].double().unbind(1)[::-1], -det["scores"].double()]
    order = torch.from_numpy(np.lexsort([k.numpy() for k in keys]))
    return {k: v[order] for k, v in det.items()}


def _assert_same(dets, ref):
    assert len(dets) == len(ref)
    for d, r in zip(dets, ref):
        d, r = _canonical(d), _canonical(r)
        assert d["boxes"].shape == r["boxes"].shape, (d["boxes"].shape, r["boxes"].shape)
        torch.testing.assert_close(d["scores"], r["scores"], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(d["boxes"], r["boxes"], atol=1e-4, rtol=1e-5)
        assert torch.equal(d["labels"], r["labels"])


ARCHS = {
    "retinanet": {"score_thr": 0.02, "pre_nms_topk": 300},
    "atss": {"score_thr": 0.004},
    "fcos": {"score_thr": 0.004, "max_dets": 30},
    "vfnet": {"score_thr": 0.01},
    "faster_rcnn": {"score_thr": 0.05},
}


def _model(arch, **kwargs):
    torch.manual_seed(0)
    model = lossreg.create_model(
        f"{arch}_resnet18_fpn", num_classes=4, neck={"name": "fpn", "out_channels": 32}, **kwargs
    ).eval()
    head = getattr(model, "roi_head", None) or model.head
    with torch.no_grad():  # spread the untrained scores so that many candidates pass and NMS has work
        out = head.cls_score if hasattr(head, "cls_score") else head.cls_out
        out.weight.normal_(0, 0.05)
        if hasattr(head, "cls_score"):
            out.bias.uniform_(-1.0, 1.0)
        else:
            out.bias.uniform_(-5.0, -2.0)
    return model


@pytest.mark.parametrize("arch", list(ARCHS))
def test_batched_matches_per_image(arch):
    model = _model(arch, **ARCHS[arch])
    torch.manual_seed(1)
    # one size (a multiple of 32): the per-image reference clipped boxes to the padded batch before
    # NMS, which for a batch of one size is each image's own size; mixed sizes are checked below
    images = [torch.rand(3, 96, 128) for _ in range(3)]
    with torch.no_grad():
        dets = model(images)
        ref = _reference(model, images)
    assert sum(r["boxes"].shape[0] for r in ref) > 20  # the comparison sees real work
    _assert_same(dets, ref)
    # the padded form holds the same detections
    boxes, scores, labels, num = model.detect(images)
    k = model.roi_head.max_dets if hasattr(model, "roi_head") else model.head.max_dets
    assert boxes.shape == (3, k, 4) and scores.shape == labels.shape == (3, k) and num.shape == (3,)
    _assert_same(unpad(boxes, scores, labels, num), ref)
    for b, n in enumerate(num.tolist()):
        assert (labels[b, n:] == -1).all() and (scores[b, n:] == 0).all() and (boxes[b, n:] == 0).all()
    # a padded batch of mixed sizes: every image's boxes stay inside its own size
    mixed = [torch.rand(3, 96, 128), torch.rand(3, 128, 80), torch.rand(3, 64, 64)]
    with torch.no_grad():
        dets = model(mixed)
    for det, im in zip(dets, mixed):
        h, w = im.shape[1:]
        assert det["boxes"].shape[0] > 0 and (det["boxes"] >= 0).all()
        assert (det["boxes"][:, 2] <= w).all() and (det["boxes"][:, 3] <= h).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()


def test_rpn_proposals_match_per_image():
    model = _model("faster_rcnn")
    torch.manual_seed(2)
    images = [torch.rand(3, 96, 128), torch.rand(3, 64, 64)]  # proposals are clipped to each image's own size
    batch, sizes = pad_images(images)
    with torch.no_grad():
        out = model.rpn_head.flat_outputs(model._features(batch))
        props, scores = model.rpn_head.get_proposals(out, sizes)
        ref = _ref_rpn_proposals(model.rpn_head, out, sizes)
    assert all(p.shape[0] > 50 for p in props)
    _assert_same([{"boxes": p, "scores": s, "labels": torch.zeros_like(s, dtype=torch.long)} for p, s in zip(props, scores)], ref)


def test_pad_per_image_keeps_the_best_k_of_each_image_in_order():
    image = torch.tensor([1, 0, 1, 1, 2, 1, 0])
    value = torch.arange(7.0)
    (out,), num = pad_per_image(image, 4, 3, (value,), (-1.0,))
    assert num.tolist() == [2, 3, 1, 0]
    assert out.tolist() == [[1, 6, -1], [0, 2, 3], [4, -1, -1], [-1, -1, -1]]
    (empty,), num = pad_per_image(image[:0], 2, 3, (value[:0],), (0.0,))
    assert empty.shape == (2, 3) and num.tolist() == [0, 0]


def test_group_nms_offset_form_equals_batched_nms():
    torch.manual_seed(0)
    xy = torch.rand(300, 2) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(300, 2) * 40], 1).clamp(max=128)
    scores, groups = torch.rand(300), torch.randint(0, 12, (300,))
    ref = batched_nms(boxes, scores, groups, 0.5)
    offsets = groups.float()[:, None] * 129.0
    from torchvision.ops import nms

    assert torch.equal(nms(boxes + offsets, scores, 0.5), ref)
    assert torch.equal(batched_group_nms(boxes, scores, groups, 0.5, 128), ref)
