"""COCO and VOC readers: real shared sets checked against independent counts, bad input named."""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lossreg.data import DegenerateBoxWarning, read_coco, read_voc

# --------------------------------------------------------------------------- COCO, real set


def test_coco128_matches_raw_json(coco128):
    ann_file, image_root = coco128
    raw = json.loads(ann_file.read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateBoxWarning)  # the README says: no degenerate boxes
        ds = read_coco(ann_file, image_root)

    cats = sorted(raw["categories"], key=lambda c: c["id"])
    assert ds.num_classes == len(raw["categories"]) == 80
    assert ds.class_names == [c["name"] for c in cats]
    assert ds.category_ids == [c["id"] for c in cats]
    assert len(ds) == len(raw["images"]) == 33
    crowd = [a for a in raw["annotations"] if a["iscrowd"]]
    assert ds.num_boxes == len(raw["annotations"]) - len(crowd) == 243
    assert sum(len(r.ignore_boxes) for r in ds) == len(crowd) == 3

    by_image = {r.image_id: r for r in ds}
    sizes = {im["id"]: (im["width"], im["height"], im["file_name"]) for im in raw["images"]}
    for image_id, (w, h, name) in sizes.items():
        rec = by_image[image_id]
        assert (rec.width, rec.height) == (w, h)
        assert Path(rec.image_path) == image_root / name
        anns = [a for a in raw["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]
        assert Counter(ds.category_ids[lab] for lab in rec.labels) == Counter(a["category_id"] for a in anns)
        expected = np.array(
            sorted([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns)
        ).reshape(-1, 4)
        expected = np.clip(expected, 0, [w, h, w, h])
        np.testing.assert_allclose(np.array(sorted(rec.boxes.tolist())).reshape(-1, 4), expected, atol=1e-3)
        assert rec.boxes.dtype == np.float32 and rec.labels.dtype == np.int64

    # a crowd region (image 544, [0, 0, 639, 347]) is an ignore box, never a training box
    np.testing.assert_allclose(by_image[544].ignore_boxes, [[0, 0, 639, 347]])


# --------------------------------------------------------------------------- VOC, real set

# BloodImage_00000.xml, read by hand: (class, xmin, ymin, xmax, ymax) as written (1-based, inclusive)
BLOOD_00000 = [
    ("WBC", 260, 177, 491, 376), ("RBC", 78, 336, 184, 435), ("RBC", 63, 237, 169, 336),
    ("RBC", 214, 362, 320, 461), ("RBC", 414, 352, 506, 445), ("RBC", 555, 356, 640, 455),
    ("RBC", 469, 412, 567, 480), ("RBC", 1, 333, 87, 437), ("RBC", 4, 406, 95, 480),
    ("RBC", 155, 74, 247, 174), ("RBC", 11, 84, 104, 162), ("RBC", 534, 39, 639, 139),
    ("RBC", 547, 195, 640, 295), ("RBC", 388, 11, 481, 111), ("RBC", 171, 175, 264, 275),
    ("RBC", 260, 1, 374, 83), ("RBC", 229, 91, 343, 174), ("RBC", 69, 144, 184, 235),
    ("RBC", 482, 131, 594, 230), ("RBC", 368, 89, 464, 176),
]  # fmt: skip


def test_bccd_hand_checked_file(bccd_root):
    with pytest.warns(DegenerateBoxWarning):
        ds = read_voc(bccd_root, "trainval")
    assert ds.class_names == ["Platelets", "RBC", "WBC"]
    rec = next(r for r in ds if Path(r.image_path).name == "BloodImage_00000.jpg")
    assert (rec.width, rec.height) == (640, 480)
    # 1-based inclusive -> continuous pixels: (xmin - 1, ymin - 1, xmax, ymax)
    expected = np.array([[x1 - 1, y1 - 1, x2, y2] for _, x1, y1, x2, y2 in BLOOD_00000], dtype=np.float32)
    np.testing.assert_array_equal(rec.boxes, expected)
    assert [ds.class_names[i] for i in rec.labels] == [c for c, *_ in BLOOD_00000]
    assert rec.boxes[:, 2].max() == 640 and rec.boxes[:, 3].max() == 480  # touches the border, not beyond


def test_bccd_splits_counts_and_degenerate_warning(bccd_root):
    with pytest.warns(DegenerateBoxWarning, match=r"dropped 2 degenerate boxes") as record:
        trainval = read_voc(bccd_root, "trainval")
    assert len([w for w in record if issubclass(w.category, DegenerateBoxWarning)]) == 1  # one per file set
    raw_objects = sum(
        len(re.findall(r"<object>", (bccd_root / "Annotations" / f"{Path(r.image_path).stem}.xml").read_text()))
        for r in trainval
    )
    assert len(trainval) == 292
    assert trainval.num_boxes == raw_objects - 2  # README: exactly 2 degenerate boxes
    assert all(len(r.boxes) > 0 for r in trainval)
    assert all((r.width, r.height) == (640, 480) for r in trainval)
    for r in trainval:
        assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
        assert r.boxes.min() >= 0 and (r.boxes[:, 2] <= 640).all() and (r.boxes[:, 3] <= 480).all()
    with pytest.warns(DegenerateBoxWarning, match=r"dropped 1 degenerate box "):
        train = read_voc(bccd_root, "train", class_names=trainval.class_names)
    assert len(train) == 205


# --------------------------------------------------------------------------- hand-made COCO


def _cats():
    return [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]


def test_coco_degenerate_boxes_dropped_with_one_counted_warning(tmp_path, write_image, write_coco):
    write_image(tmp_path / "a.png", 40, 30)
    write_image(tmp_path / "b.png", 40, 30)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 5, 10, 10], "iscrowd": 0},  # kept
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [5, 5, 0, 10], "iscrowd": 0},  # zero width
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, -2], "iscrowd": 0},  # negative height
        {"id": 4, "image_id": 2, "category_id": 3, "bbox": [50, 5, 10, 10], "iscrowd": 0},  # right of the image
        {"id": 5, "image_id": 2, "category_id": 7, "bbox": [1, 1, 0.5, 8], "iscrowd": 0},  # < 1 px wide
        {"id": 6, "image_id": 2, "category_id": 3, "bbox": [30, 20, 20, 20], "iscrowd": 0},  # clipped, kept
        {"id": 7, "image_id": 2, "category_id": 7, "bbox": [0, 0, 40, 30], "iscrowd": 1},  # crowd -> ignore
    ]
    images = [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
              {"id": 2, "file_name": "b.png", "width": 40, "height": 30}]  # fmt: skip
    ann_file = write_coco(tmp_path / "ann.json", images, anns, _cats())
    with pytest.warns(DegenerateBoxWarning) as record:
        ds = read_coco(ann_file, tmp_path)
    assert len(record) == 1
    assert "dropped 4 degenerate boxes" in str(record[0].message) and "ann.json" in str(record[0].message)
    assert ds.class_names == ["dog", "cat"]  # sorted by category id: 3, 7
    a, b = ds.records
    np.testing.assert_array_equal(a.boxes, [[5, 5, 15, 15]])
    np.testing.assert_array_equal(a.labels, [1])
    np.testing.assert_array_equal(b.boxes, [[30, 20, 40, 30]])
    np.testing.assert_array_equal(b.labels, [0])
    np.testing.assert_array_equal(b.ignore_boxes, [[0, 0, 40, 30]])


def test_coco_missing_image_names_the_file(tmp_path, write_image, write_coco):
    write_image(tmp_path / "here.png", 8, 8)
    images = [{"id": 1, "file_name": "here.png", "width": 8, "height": 8},
              {"id": 2, "file_name": "gone.png", "width": 8, "height": 8}]  # fmt: skip
    ann_file = write_coco(tmp_path / "ann.json", images, [], _cats())
    with pytest.raises(FileNotFoundError, match="gone.png"):
        read_coco(ann_file, tmp_path)


@pytest.mark.parametrize(
    "text, problem",
    [('{"images": [', "not a valid COCO JSON"), ("[1, 2]", "JSON object"), ('{"images": []}', "categories")],
)
def test_coco_malformed_json_names_the_file(tmp_path, text, problem):
    ann_file = tmp_path / "broken.json"
    ann_file.write_text(text)
    with pytest.raises(ValueError, match=problem) as info:
        read_coco(ann_file, tmp_path)
    assert "broken.json" in str(info.value)


def test_coco_unknown_category_and_bad_bbox_name_the_file(tmp_path, write_image, write_coco):
    write_image(tmp_path / "a.png", 8, 8)
    images = [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}]
    bad_cat = write_coco(
        tmp_path / "cat.json", images, [{"id": 1, "image_id": 1, "category_id": 99, "bbox": [0, 0, 2, 2]}], _cats()
    )
    with pytest.raises(ValueError, match=r"cat\.json.*category_id 99"):
        read_coco(bad_cat, tmp_path)
    bad_box = write_coco(
        tmp_path / "box.json", images, [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0]}], _cats()
    )
    with pytest.raises(ValueError, match=r"box\.json"):
        read_coco(bad_box, tmp_path)


# --------------------------------------------------------------------------- hand-made VOC


def _voc(tmp_path: Path, write_image, xml_by_stem: dict[str, str], images: bool = True) -> Path:
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for stem, xml in xml_by_stem.items():
        (root / "Annotations" / f"{stem}.xml").write_text(xml)
        if images:
            write_image(root / "JPEGImages" / f"{stem}.jpg", 50, 40)
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(xml_by_stem) + "\n")
    return root


def _obj(name: str, box: tuple[int, int, int, int], difficult: int = 0) -> str:
    x1, y1, x2, y2 = box
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")  # fmt: skip


def _xml(*objects: str, size: bool = True) -> str:
    head = "<size><width>50</width><height>40</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>wrong_name.png</filename>{head}{''.join(objects)}</annotation>"


def test_voc_difficult_goes_to_ignore_and_size_from_image(tmp_path, write_image):
    root = _voc(
        tmp_path,
        write_image,
        {"x1": _xml(_obj("b", (1, 1, 50, 40)), _obj("a", (11, 6, 20, 30), difficult=1), size=False)},
    )
    ds = read_voc(root, "train")
    assert ds.class_names == ["a", "b"]
    (rec,) = ds.records
    assert (rec.width, rec.height) == (50, 40)  # no <size>: read from the image header
    assert Path(rec.image_path).name == "x1.jpg"  # the stem, not the XML <filename>
    np.testing.assert_array_equal(rec.boxes, [[0, 0, 50, 40]])
    np.testing.assert_array_equal(rec.labels, [1])
    np.testing.assert_array_equal(rec.ignore_boxes, [[10, 5, 20, 30]])


def test_voc_malformed_xml_names_the_file(tmp_path, write_image):
    root = _voc(tmp_path, write_image, {"good": _xml(_obj("a", (1, 1, 5, 5))), "bad": "<annotation><object>"})
    with pytest.raises(ValueError, match=r"bad\.xml"):
        read_voc(root, "train")
    (root / "Annotations" / "bad.xml").write_text(
        _xml("<object><name>a</name><bndbox><xmin>x</xmin></bndbox></object>")
    )
    with pytest.raises(ValueError, match=r"bad\.xml.*bndbox"):
        read_voc(root, "train")


def test_voc_missing_image_split_and_unknown_class(tmp_path, write_image):
    root = _voc(tmp_path, write_image, {"only": _xml(_obj("a", (1, 1, 5, 5)))}, images=False)
    with pytest.raises(FileNotFoundError, match=r"only\.jpg"):
        read_voc(root, "train")
    write_image(root / "JPEGImages" / "only.jpg", 50, 40)
    with pytest.raises(FileNotFoundError, match=r"val\.txt"):
        read_voc(root, "val")
    with pytest.raises(ValueError, match=r"only\.xml.*'a'"):
        read_voc(root, "train", class_names=["b"])
