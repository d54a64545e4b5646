"""Score-IoU consistency (HCRAL figure 3a): pairs, correlations, the two evaluation plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lossreg.data import DetectionDataset, DetectionRecord, DetectionSet, build_transforms
from lossreg.engine import plots
from lossreg.engine.consistency import score_iou_correlation, score_iou_pairs
from lossreg.engine.eval_folder import evaluate_to_folder
from lossreg.engine.evaluate import coco_gt_from_set, coco_metrics, run_cocoeval
from lossreg.engine.plots import HIST2D_MIN_POINTS, plot_pr_curves, plot_score_iou

# Two 100 x 100 images. Labels 0 ("cat", category 1) and 1 ("dog", category 2).
GT = {
    1: ([[0, 0, 10, 10], [20, 20, 40, 40], [60, 60, 80, 80]], [0, 1, 0]),
    2: ([[50, 50, 70, 70]], [0]),
}
# (image_id, category_id, [x, y, w, h], score, the IoU worked out by hand)
DETECTIONS = [
    (1, 1, [0, 0, 10, 10], 0.9, 1.0),  # exactly the first cat
    (1, 1, [5, 0, 10, 10], 0.6, 1 / 3),  # half over the first cat: 50 / (100 + 100 - 50)
    (1, 2, [20, 20, 10, 20], 0.7, 0.5),  # left half of the dog: 200 / 400
    (1, 2, [0, 0, 10, 10], 0.5, 0.0),  # on a cat, but a dog: no box of its class
    (1, 1, [60, 60, 20, 10], 0.8, 0.5),  # top half of the second cat (0 with the first): the best match counts
    (2, 1, [50, 50, 20, 10], 0.4, 0.5),  # top half of image 2's cat
    (2, 2, [50, 50, 20, 20], 0.3, 0.0),  # no dog in image 2
    (2, 1, [50, 50, 20, 20], 0.01, 1.0),  # below score_thr=0.05: left out
]
KEPT = [d for d in DETECTIONS if d[3] >= 0.05]


def _hand_set(image_path: str = "x.png") -> DetectionSet:
    records = [
        DetectionRecord(image_path, 100, 100, boxes=np.array(boxes), labels=np.array(labels), image_id=i)
        for i, (boxes, labels) in GT.items()
    ]
    return DetectionSet(records, ["cat", "dog"])


def _results() -> list[dict]:
    return [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s, _ in DETECTIONS]


def test_pairs_match_the_hand_computed_ious():
    scores, ious = score_iou_pairs(_results(), _hand_set(), score_thr=0.05)
    assert scores.tolist() == pytest.approx([d[3] for d in KEPT])
    assert ious.tolist() == pytest.approx([d[4] for d in KEPT], abs=1e-9)
    # a threshold keeps exactly the detections at or above it
    scores, ious = score_iou_pairs(_results(), _hand_set(), score_thr=0.6)
    assert scores.tolist() == pytest.approx([0.9, 0.6, 0.7, 0.8]) and ious.tolist() == pytest.approx([1, 1 / 3, 0.5, 0.5])


def test_correlations_against_numpy():
    stats = score_iou_correlation(*score_iou_pairs(_results(), _hand_set()))
    s = np.array([d[3] for d in KEPT])
    u = np.array([d[4] for d in KEPT])
    assert stats["num_pairs"] == 7
    assert stats["pearson"] == pytest.approx(np.corrcoef(s, u)[0, 1])
    assert stats["pearson"] == pytest.approx(0.78262, abs=1e-5)  # sum((s - s.mean) (u - u.mean)) / sqrt(...) by hand
    # Spearman: Pearson of the ranks, ties sharing their mean rank, ranked here by hand
    score_ranks = [7, 4, 5, 3, 6, 2, 1]  # 0.9 0.6 0.7 0.5 0.8 0.4 0.3
    iou_ranks = [7, 3, 5, 1.5, 5, 5, 1.5]  # 1, 1/3, 0.5 (x3: ranks 4-6), 0 (x2: ranks 1-2)
    assert stats["spearman"] == pytest.approx(np.corrcoef(score_ranks, iou_ranks)[0, 1])
    scipy_stats = pytest.importorskip("scipy.stats")
    assert stats["spearman"] == pytest.approx(scipy_stats.spearmanr(s, u).statistic)


def test_correlation_undefined_cases():
    assert score_iou_correlation([], []) == {"pearson": None, "spearman": None, "num_pairs": 0}
    assert score_iou_correlation([0.5], [0.2])["pearson"] is None
    assert score_iou_correlation([0.9, 0.5, 0.3], [1.0, 1.0, 1.0]) == {"pearson": None, "spearman": None, "num_pairs": 3}
    assert score_iou_correlation([0.1, 0.2, 0.3], [0.2, 0.4, 0.6])["pearson"] == pytest.approx(1.0)
    assert score_iou_correlation([0.1, 0.2, 0.3], [0.9, 0.5, 0.4])["spearman"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="3 scores but 2 IoUs"):
        score_iou_correlation([0.1, 0.2, 0.3], [0.5, 0.5])


def test_category_ids_and_bad_detections():
    data = _hand_set()
    data.category_ids = [5, 9]  # COCO-style ids: cat = 5, dog = 9
    dets = [{"image_id": 1, "category_id": 9, "bbox": [20, 20, 10, 20], "score": 0.7},
            {"image_id": 1, "category_id": 5, "bbox": [20, 20, 10, 20], "score": 0.7}]
    assert score_iou_pairs(dets, data)[1].tolist() == pytest.approx([0.5, 0.0])
    with pytest.raises(ValueError, match="category_id 1; the dataset's are \\[5, 9\\]"):
        score_iou_pairs(_results(), data)
    with pytest.raises(ValueError, match="image_id 7"):
        score_iou_pairs([{"image_id": 7, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 1.0}], data)


def _png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        return im.size


def test_ap_with_another_detection_limit():
    gt = coco_gt_from_set(_hand_set())
    full = coco_metrics(gt, _results(), ["cat", "dog"], [1, 2])
    assert full["AP"] == pytest.approx(0.30609, abs=1e-5)
    # at most 5 detections per image still keeps all of them: the same AP (pycocotools alone reports -1)
    assert coco_metrics(gt, _results(), ["cat", "dog"], [1, 2], max_dets=5)["AP"] == pytest.approx(full["AP"])
    # COCO keeps the best max_dets per image and class. 1: cats 0.9 (hit) and 0.4 (hit) of 3 find 2/3 at
    # precision 1 (67 of 101 recall points); dogs 0.7 (hit) and 0.3 (miss): precision 1 at every recall
    one = coco_metrics(gt, _results(), ["cat", "dog"], [1, 2], max_dets=1)
    assert one["AP50"] == pytest.approx((67 / 101 + 1.0) / 2)
    assert one["AP"] is not None and one["AP"] < full["AP"]


def test_pr_curve_png_from_cocoeval(tmp_path):
    data = _hand_set()
    ev = run_cocoeval(coco_gt_from_set(data), _results(), [1, 2])
    precision = ev.eval["precision"]
    assert precision.shape[:3] == (10, 101, 2)
    path = plot_pr_curves(precision, ev.params.recThrs, ev.params.iouThrs, ["cat", "dog"], tmp_path / "pr_curve.png")
    width, height = _png_size(path)
    assert width > 1.5 * height  # two panels side by side: IoU 0.5 and 0.75
    one = plot_pr_curves(precision, ev.params.recThrs, ev.params.iouThrs, ["cat", "dog"], tmp_path / "one.png", at_iou=(0.5,))
    assert _png_size(one)[0] < width
    with pytest.raises(ValueError, match="IoU 0.52 is not among"):
        plot_pr_curves(precision, ev.params.recThrs, ev.params.iouThrs, ["cat", "dog"], tmp_path / "x.png", at_iou=(0.52,))
    with pytest.raises(ValueError, match="K = 3 classes"):
        plot_pr_curves(precision, ev.params.recThrs, ev.params.iouThrs, ["a", "b", "c"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_score_iou_png_scatter_histogram_and_empty(tmp_path, monkeypatch):
    scores, ious = score_iou_pairs(_results(), _hand_set())
    assert _png_size(plot_score_iou(scores, ious, tmp_path / "few.png", score_thr=0.05))[0] > 300
    rng = np.random.default_rng(0)
    u = rng.uniform(0, 1, HIST2D_MIN_POINTS + 1)
    s = np.clip(u + rng.normal(0, 0.1, len(u)), 0, 1)
    hist = plot_score_iou(s, u, tmp_path / "hist.png")
    monkeypatch.setattr(plots, "HIST2D_MIN_POINTS", len(u))  # the same points as a scatter plot
    scatter = plot_score_iou(s, u, tmp_path / "scatter.png")

    def yellow(path) -> int:  # viridis' top colour: the histogram's busiest cells and its colour bar
        rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
        return int(((rgb[..., 0] > 220) & (rgb[..., 1] > 200) & (rgb[..., 2] < 90)).sum())

    assert yellow(hist) > 200 and yellow(scatter) == 0
    assert _png_size(plot_score_iou([], [], tmp_path / "empty.png", score_thr=0.5))[0] > 300


class _Replay(nn.Module):
    """Returns the hand-made detections (the images are 100 px and not resized: no scaling)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images):
        out = []
        for image in images:
            assert image.shape == (3, 100, 100)
            self.calls += 1
            mine = [d for d in DETECTIONS if d[0] == self.calls]
            boxes = torch.tensor([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for _, _, b, _, _ in mine], dtype=torch.float32)
            out.append({"boxes": boxes, "scores": torch.tensor([d[3] for d in mine]),
                        "labels": torch.tensor([d[1] - 1 for d in mine])})
        return out


def test_evaluate_to_folder_writes_the_four_files(tmp_path):
    image = tmp_path / "img.png"
    Image.new("RGB", (100, 100), (90, 120, 150)).save(image)
    data = _hand_set(str(image))
    dataset = DetectionDataset(data, build_transforms((), 100, train=False))
    out = tmp_path / "eval"
    metrics = evaluate_to_folder(_Replay(), dataset, out, batch_size=2, extra={"model": "replay"})
    assert sorted(p.name for p in out.iterdir()) == ["detections.json", "metrics.json", "pr_curve.png", "score_iou.png"]
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert on_disk["num_images"] == 2 and on_disk["num_detections"] == 8 and on_disk["score_iou_pairs"] == 7
    assert on_disk["model"] == "replay" and on_disk["score_thr"] == 0.05
    s = np.array([d[3] for d in KEPT])
    u = np.array([d[4] for d in KEPT])
    assert on_disk["score_iou_correlation"] == pytest.approx(np.corrcoef(s, u)[0, 1])
    # AP50 by hand. Cats (3 gt), by score: 0.9 hit, 0.8 hit (IoU 0.5), 0.6 miss (its cat is taken), 0.4 hit,
    # 0.01 miss (taken): interpolated precision 1 up to recall 2/3 (67 of COCO's 101 recall points), then 3/4.
    # Dogs (1 gt): 0.7 hits first, so precision 1 at every recall.
    assert on_disk["AP50"] == pytest.approx(((67 + 34 * 0.75) / 101 + 1.0) / 2)
    assert 0.0 < on_disk["AP"] < on_disk["AP50"]
    dets = json.loads((out / "detections.json").read_text())
    assert [(d["image_id"], d["category_id"]) for d in dets] == [(i, c) for i, c, _, _, _ in DETECTIONS]
    assert [d["score"] for d in dets] == pytest.approx([d[3] for d in DETECTIONS])
    assert dets[1]["bbox"] == pytest.approx([5, 0, 10, 10])
