"""COCO evaluation: boxes mapped back to the original images, category ids, empty predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lossreg.data import DetectionRecord, DetectionSet, build_dataset, make_synthetic
from lossreg.engine.evaluate import METRIC_KEYS, coco_gt_from_set, coco_metrics, evaluate
from lossreg.recipe import DataCfg, DatasetCfg


class _Replay(nn.Module):
    """A stand-in detector returning, image by image, the boxes it is given (on the network input)."""

    def __init__(self, answers: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.calls = 0

    def forward(self, images):
        assert not self.training, "evaluation must run in eval mode"
        out = []
        for image in images:
            assert image.shape == (3, 96, 96)  # unpadded images of the resized set
            out.append(self.answers[self.calls])
            self.calls += 1
        return out


def _val_set(root, size=96):
    cfg = DatasetCfg(format="synthetic", root=str(root), params={"split": "val", "num_images": 3, "image_size": 64})
    return build_dataset(cfg, DataCfg(image_size=size), train=False)


def test_perfect_detections_on_resized_images_score_one(synthetic_root):
    ds = _val_set(synthetic_root)  # 64 px images resized to 96: boxes must be scaled back by 1/1.5
    answers = []
    for i in range(len(ds)):
        _, target = ds[i]
        n = len(target["boxes"])
        answers.append({"boxes": target["boxes"], "scores": torch.linspace(0.9, 0.5, n), "labels": target["labels"]})
    model = _Replay(answers).train()
    metrics = evaluate(model, ds, batch_size=2)
    assert model.training  # mode restored
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    present = {ds.class_names[int(lbl)] for i in range(len(ds)) for lbl in ds.data[i].labels}
    assert all(metrics["per_class"][name] == pytest.approx(1.0) for name in present)
    assert all(metrics["per_class"][name] is None for name in set(ds.class_names) - present)


def test_same_result_against_the_coco_annotation_file(synthetic_root):
    ds = _val_set(synthetic_root)
    answers = [dict(zip(("boxes", "labels"), (ds[i][1]["boxes"], ds[i][1]["labels"]))) for i in range(len(ds))]
    for a in answers:
        a["scores"] = torch.ones(len(a["boxes"]))
        a["boxes"] = a["boxes"] + torch.tensor([0.75, 0.0, 0.75, 0.0])  # shifted 0.5 px on the original image
    ann_file, _ = make_synthetic(synthetic_root, split="val", num_images=3, image_size=64)
    from_file = evaluate(_Replay(answers), ds, ann_file=ann_file)
    in_memory = evaluate(_Replay(answers), ds)
    assert 0.0 < from_file["AP"] < 1.0
    assert all(from_file[k] == pytest.approx(in_memory[k]) for k in ("AP", "AP50", "AP75"))


def test_no_detections_give_zeros_not_an_error(synthetic_root):
    ds = _val_set(synthetic_root)
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    metrics = evaluate(_Replay([empty] * len(ds)), ds)
    assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0 and metrics["APs"] == 0.0
    assert set(metrics) == {*METRIC_KEYS, "per_class"}
    assert all(v in (0.0, None) for v in metrics["per_class"].values())


def test_category_ids_and_ignore_regions():
    recs = [
        DetectionRecord("a.png", 100, 100, boxes=np.array([[10, 10, 50, 60]]), labels=np.array([1]), image_id=11,
                        ignore_boxes=np.array([[60, 60, 95, 95]])),
    ]
    data = DetectionSet(recs, ["cat", "dog"], category_ids=[5, 9])
    gt = coco_gt_from_set(data)
    hit = {"image_id": 11, "category_id": 9, "bbox": [10, 10, 40, 50], "score": 0.9}
    in_ignored = {"image_id": 11, "category_id": 9, "bbox": [62, 62, 30, 30], "score": 0.95}
    wrong_class = {"image_id": 11, "category_id": 5, "bbox": [10, 10, 40, 50], "score": 0.9}
    assert coco_metrics(gt, [hit, in_ignored], data.class_names, [5, 9])["per_class"] == {"cat": None, "dog": pytest.approx(1.0)}
    assert coco_metrics(gt, [wrong_class], data.class_names, [5, 9])["AP"] == 0.0
