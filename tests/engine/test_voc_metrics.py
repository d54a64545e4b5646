"""VOC07 / VOC12 mAP (lossreg.engine.voc_metrics) against a re-typed devkit ``voc_eval`` on hand-made cases.

The reference below follows the Python port of the VOC devkit (py-faster-rcnn's ``voc_eval.py``,
which mmdetection and detectron2 copy), written from reading it: objects in VOC's 1-based inclusive
pixel coordinates, areas with ``+ 1``, a per-detection loop. The implementation under test works on
lossreg's continuous boxes; the two must agree exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lossreg.data import DetectionRecord, DetectionSet
from lossreg.engine.voc_metrics import is_voc, voc_ap, voc_metrics

# --------------------------------------------------------------------------- the devkit, re-typed


def _devkit_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0.0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _devkit_eval(objects: dict, detections: list, classname: str, use_07_metric: bool) -> float | None:
    """``objects[image] = [{"name", "bbox" 1-based [xmin, ymin, xmax, ymax], "difficult"}]``,
    ``detections = [(image, classname, score, x1, y1, x2, y2)]`` 1-based. None when npos == 0."""
    class_recs, npos = {}, 0
    for img, objs in objects.items():
        r = [o for o in objs if o["name"] == classname]
        bbox = np.array([o["bbox"] for o in r], dtype=float).reshape(-1, 4)
        difficult = np.array([o["difficult"] for o in r], dtype=bool)
        npos += int(np.sum(~difficult))
        class_recs[img] = {"bbox": bbox, "difficult": difficult, "det": [False] * len(r)}
    dets = [d for d in detections if d[1] == classname]
    if npos == 0:
        return None
    confidence = np.array([d[2] for d in dets], dtype=float)
    bb_all = np.array([d[3:] for d in dets], dtype=float).reshape(-1, 4)
    order = np.argsort(-confidence, kind="stable")
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for d, k in enumerate(order):
        r = class_recs[dets[k][0]]
        bb, ovmax, bbgt = bb_all[k], -np.inf, r["bbox"]
        if bbgt.size > 0:
            ixmin, iymin = np.maximum(bbgt[:, 0], bb[0]), np.maximum(bbgt[:, 1], bb[1])
            ixmax, iymax = np.minimum(bbgt[:, 2], bb[2]), np.minimum(bbgt[:, 3], bb[3])
            iw, ih = np.maximum(ixmax - ixmin + 1.0, 0.0), np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                   + (bbgt[:, 2] - bbgt[:, 0] + 1.0) * (bbgt[:, 3] - bbgt[:, 1] + 1.0) - inters)
            overlaps = inters / uni
            ovmax, jmax = np.max(overlaps), np.argmax(overlaps)
        if ovmax > 0.5:
            if not r["difficult"][jmax]:
                if not r["det"][jmax]:
                    tp[d], r["det"][jmax] = 1.0, True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return _devkit_ap(rec, prec, use_07_metric)


def _devkit_map(objects, detections, classes, use_07_metric):
    aps = [_devkit_eval(objects, detections, c, use_07_metric) for c in classes]
    aps = [a for a in aps if a is not None]
    return float(np.mean(aps)) if aps else None


# --------------------------------------------------------------------------- conversions to lossreg


def _continuous(o: dict) -> list[float]:
    x1, y1, x2, y2 = o["bbox"]
    return [x1 - 1, y1 - 1, x2, y2]


def _to_set(objects: dict, classes: list[str], image_ids: dict) -> DetectionSet:
    """VOC objects -> records as data/voc.py makes them: (xmin - 1, ymin - 1, xmax, ymax), difficult -> ignore."""
    records = []
    conv = _continuous
    for img, objs in objects.items():
        easy = [o for o in objs if not o["difficult"]]
        hard = [o for o in objs if o["difficult"]]
        records.append(DetectionRecord(
            f"{img}.jpg", 200, 200, boxes=np.array([conv(o) for o in easy]).reshape(-1, 4),
            labels=np.array([classes.index(o["name"]) for o in easy]), image_id=image_ids[img],
            ignore_boxes=np.array([conv(o) for o in hard]).reshape(-1, 4),
            ignore_labels=np.array([classes.index(o["name"]) for o in hard])))
    return DetectionSet(records, classes, source="voc:test")


def _to_results(detections: list, classes: list[str], image_ids: dict) -> list[dict]:
    """1-based devkit detections -> COCO results on continuous pixels (x1 - 1, y1 - 1, w, h)."""
    out = []
    for img, name, score, x1, y1, x2, y2 in detections:
        out.append({"image_id": image_ids[img], "category_id": classes.index(name) + 1,
                    "bbox": [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1], "score": score})
    return out


def _obj(name, x1, y1, x2, y2, difficult=False):
    return {"name": name, "bbox": [x1, y1, x2, y2], "difficult": difficult}


# Hand-made case (1-based VOC coordinates).
# dog: three boxes + one difficult; cat: one box; bird: only a difficult box (no npos: AP undefined).
HAND_OBJECTS = {
    "a": [_obj("dog", 1, 1, 20, 20), _obj("dog", 101, 101, 150, 150, True), _obj("cat", 1, 1, 10, 10)],
    "b": [_obj("dog", 10, 10, 40, 40), _obj("dog", 60, 60, 100, 100), _obj("bird", 5, 5, 50, 50, True)],
}
HAND_DETS = [
    ("a", "dog", 0.9, 1, 1, 20, 20),      # TP (dog a)
    ("a", "dog", 0.8, 1, 1, 20, 20),      # FP: dog a already taken
    ("a", "dog", 0.75, 101, 101, 150, 150),  # on the difficult dog: neither TP nor FP
    ("b", "dog", 0.7, 10, 10, 40, 40),    # TP
    ("b", "dog", 0.6, 61, 61, 100, 100),  # TP (IoU 0.95)
    ("b", "dog", 0.5, 150, 150, 190, 190),  # FP: no overlap
    ("a", "cat", 0.9, 1, 1, 10, 5),       # IoU exactly 0.5 (50 / 100 px): FP, the threshold is strict
    ("a", "cat", 0.4, 1, 1, 10, 10),      # TP
    ("b", "bird", 0.9, 5, 5, 50, 50),     # on the only (difficult) bird: ignored; bird has no AP
]
# dog, in score order: TP, FP, (ignored), TP, TP, FP with npos = 3:
#   recall 1/3, 1/3, 1/3, 2/3, 1, 1;  precision 1, 1/2, 1/2, 2/3, 3/4, 3/5.
#   VOC12: envelope 1 up to recall 1/3, then 3/4: 1/3 * 1 + 2/3 * 3/4 = 0.8333333.
#   VOC07: t = 0, .1, .2, .3 -> 1; t = .4 ... 1 -> 3/4: (4 + 7 * 0.75) / 11 = 0.8409091.
# cat: FP then TP, npos 1: recall 0, 1; precision 0, 1/2 -> VOC12 0.5, VOC07 11 * 0.5 / 11 = 0.5.
# mAP over dog and cat: VOC12 (0.8333333 + 0.5) / 2 = 0.6666667; VOC07 (0.8409091 + 0.5) / 2 = 0.6704545.
CLASSES = ["bird", "cat", "dog"]
IDS = {"a": 0, "b": 1}


def test_hand_made_case_matches_hand_values_and_the_devkit():
    m = voc_metrics(_to_set(HAND_OBJECTS, CLASSES, IDS), _to_results(HAND_DETS, CLASSES, IDS))
    assert m["voc_per_class"]["dog"] == {"voc07": pytest.approx(0.8409091), "voc12": pytest.approx(0.8333333)}
    assert m["voc_per_class"]["cat"] == {"voc07": pytest.approx(0.5), "voc12": pytest.approx(0.5)}
    assert m["voc_per_class"]["bird"] == {"voc07": None, "voc12": None}
    assert m["voc07_mAP"] == pytest.approx(0.6704545) and m["voc12_mAP"] == pytest.approx(0.6666667)
    for use_07, key in ((True, "voc07_mAP"), (False, "voc12_mAP")):
        assert m[key] == pytest.approx(_devkit_map(HAND_OBJECTS, HAND_DETS, CLASSES, use_07), abs=1e-12)


def test_voc_ap_hand_values():
    rec, prec = np.array([1 / 3, 1 / 3, 1 / 3, 2 / 3, 1, 1]), np.array([1, 1 / 2, 1 / 2, 2 / 3, 3 / 4, 3 / 5])
    assert voc_ap(rec, prec, False) == pytest.approx(1 / 3 + 2 / 3 * 0.75)
    assert voc_ap(rec, prec, True) == pytest.approx((4 + 7 * 0.75) / 11)
    # The devkit port's thresholds are np.arange(0, 1.1, 0.1): 0.30000000000000004 > 0.3, so a recall of
    # exactly 0.3 does not reach the t = 0.3 point (4 points reach it, not 5): 3 * 1 / 11, not 4 / 11.
    assert voc_ap(np.array([0.3]), np.array([1.0]), True) == pytest.approx(3 / 11)
    assert voc_ap(np.array([0.3]), np.array([1.0]), True) == pytest.approx(_devkit_ap(np.array([0.3]), np.array([1.0]), True))


@pytest.mark.parametrize("seed", range(8))
def test_random_scenes_match_the_devkit(seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    objects, dets, ids = {}, [], {}
    for i in range(6):
        name = f"img{i}"
        ids[name] = 10 + i
        objs = []
        for _ in range(int(rng.integers(0, 5))):
            x1, y1 = rng.integers(1, 150, size=2)
            w, h = rng.integers(5, 50, size=2)
            objs.append(_obj(classes[int(rng.integers(0, 3))], int(x1), int(y1), int(x1 + w), int(y1 + h),
                             bool(rng.random() < 0.2)))
        objects[name] = objs
        for o in objs:  # jittered hits, duplicates and wrong classes
            for _ in range(int(rng.integers(0, 3))):
                x1, y1, x2, y2 = (np.array(o["bbox"], dtype=float) + rng.normal(0, 3, 4)).tolist()
                cls = o["name"] if rng.random() < 0.8 else classes[int(rng.integers(0, 3))]
                dets.append((name, cls, float(rng.random()), x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))
        for _ in range(int(rng.integers(0, 3))):  # background detections
            x1, y1 = rng.uniform(1, 150, size=2)
            dets.append((name, classes[int(rng.integers(0, 3))], float(rng.random()), x1, y1, x1 + 20, y1 + 20))
    m = voc_metrics(_to_set(objects, classes, ids), _to_results(dets, classes, ids))
    for use_07, key in ((True, "voc07_mAP"), (False, "voc12_mAP")):
        ref = _devkit_map(objects, dets, classes, use_07)
        assert (m[key] is None) == (ref is None)
        if ref is not None:
            assert m[key] == pytest.approx(ref, abs=1e-9)
        for c in classes:
            ref_c = _devkit_eval(objects, dets, c, use_07)
            got = m["voc_per_class"][c]["voc07" if use_07 else "voc12"]
            assert (got is None and ref_c is None) or got == pytest.approx(ref_c, abs=1e-9)


def test_classless_ignore_regions_count_as_difficult_for_every_class():
    rec = DetectionRecord("x.jpg", 100, 100, boxes=np.array([[0.0, 0, 10, 10]]), labels=np.array([0]),
                          ignore_boxes=np.array([[50.0, 50, 90, 90]]))
    assert rec.ignore_labels.tolist() == [-1]
    data = DetectionSet([rec], ["a", "b"], source="voc:x")
    results = [{"image_id": 0, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5},
               {"image_id": 0, "category_id": 1, "bbox": [50, 50, 40, 40], "score": 0.9}]  # in the region: ignored
    m = voc_metrics(data, results)
    assert m["voc_per_class"]["a"] == {"voc07": pytest.approx(1.0), "voc12": pytest.approx(1.0)}
    assert m["voc_per_class"]["b"] == {"voc07": None, "voc12": None} and m["voc12_mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="ignore labels"):
        DetectionRecord("x.jpg", 100, 100, ignore_boxes=np.zeros((2, 4)), ignore_labels=np.zeros(1))


# --------------------------------------------------------------------------- wiring: read_voc + evaluate


def _write_voc(root, objects: dict, size: int = 200) -> None:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for img, objs in objects.items():
        Image.new("RGB", (size, size), (120, 120, 120)).save(root / "JPEGImages" / f"{img}.jpg")
        body = "".join(
            f"<object><name>{o['name']}</name><difficult>{int(o['difficult'])}</difficult><bndbox>"
            f"<xmin>{o['bbox'][0]}</xmin><ymin>{o['bbox'][1]}</ymin><xmax>{o['bbox'][2]}</xmax>"
            f"<ymax>{o['bbox'][3]}</ymax></bndbox></object>" for o in objs)
        (root / "Annotations" / f"{img}.xml").write_text(
            f"<annotation><size><width>{size}</width><height>{size}</height><depth>3</depth></size>{body}</annotation>")
    (root / "ImageSets" / "Main" / "val.txt").write_text("\n".join(objects) + "\n")


class _Replay(nn.Module):
    def __init__(self, answers: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.answers, self.calls = list(answers), 0

    def forward(self, images):
        out = self.answers[self.calls : self.calls + len(images)]
        self.calls += len(images)
        return out


def test_evaluate_on_voc_data_reports_voc07_and_voc12(tmp_path):
    from lossreg.data import DetectionDataset, build_transforms, read_voc
    from lossreg.engine.evaluate import evaluate

    _write_voc(tmp_path, HAND_OBJECTS)
    data = read_voc(tmp_path, "val", class_names=CLASSES)
    assert is_voc(data)
    assert data.records[0].ignore_labels.tolist() == [CLASSES.index("dog")]  # difficult keeps its class
    assert data.records[1].ignore_labels.tolist() == [CLASSES.index("bird")]
    ds = DetectionDataset(data, build_transforms((), 200, train=False))  # 200 px images: not resized
    answers = []
    for img in HAND_OBJECTS:  # the hand-made detections, continuous pixels on the (unresized) input
        rows = [d for d in HAND_DETS if d[0] == img]
        answers.append({
            "boxes": torch.tensor([[x1 - 1, y1 - 1, x2, y2] for _, _, _, x1, y1, x2, y2 in rows], dtype=torch.float32),
            "scores": torch.tensor([d[2] for d in rows]),
            "labels": torch.tensor([CLASSES.index(d[1]) for d in rows]),
        })
    metrics = evaluate(_Replay(answers), ds, batch_size=2)
    assert metrics["voc07_mAP"] == pytest.approx(0.6704545, abs=1e-6)
    assert metrics["voc12_mAP"] == pytest.approx(0.6666667, abs=1e-6)
    assert 0 < metrics["AP50"] <= 1 and "per_class" in metrics  # COCO metrics stay beside them
