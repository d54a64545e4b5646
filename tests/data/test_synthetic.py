"""The synthetic set: deterministic bytes, cache re-use, and a sane spread of objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lossreg.data.synthetic as synthetic
from lossreg.data.synthetic import CLASS_NAMES, make_synthetic, read_synthetic


def _files(ann_file: Path, image_dir: Path) -> dict[str, bytes]:
    out = {"annotations.json": ann_file.read_bytes()}
    out.update({p.name: p.read_bytes() for p in sorted(image_dir.iterdir())})
    return out


def test_same_seed_same_bytes_other_seed_or_split_differs(tmp_path):
    a = _files(*make_synthetic(tmp_path / "a", num_images=4, image_size=64, seed=3))
    b = _files(*make_synthetic(tmp_path / "b", num_images=4, image_size=64, seed=3))
    assert list(a) == ["annotations.json", "000000.png", "000001.png", "000002.png", "000003.png"]
    assert a == b
    c = _files(*make_synthetic(tmp_path / "c", num_images=4, image_size=64, seed=4))
    assert all(a[k] != c[k] for k in a)
    d = _files(*make_synthetic(tmp_path / "d", split="val", num_images=4, image_size=64, seed=3))
    assert all(a[k] != d[k] for k in a if k.endswith(".png"))


def test_reuses_a_complete_folder_and_redoes_an_incomplete_one(tmp_path, monkeypatch):
    ann_file, image_dir = make_synthetic(tmp_path, num_images=2, image_size=32, seed=0)
    before = ann_file.read_bytes()
    calls = []
    real = synthetic._generate
    monkeypatch.setattr(synthetic, "_generate", lambda *a: (calls.append(a), real(*a)))
    assert make_synthetic(tmp_path, num_images=2, image_size=32, seed=0) == (ann_file, image_dir)
    assert calls == []  # re-used
    (ann_file.parent / "COMPLETE").unlink()  # as if a writer had died before finishing
    assert make_synthetic(tmp_path, num_images=2, image_size=32, seed=0) == (ann_file, image_dir)
    assert len(calls) == 1 and ann_file.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [ann_file.parent.name]  # no temporary folders left


def test_cache_env_and_bad_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSREG_CACHE", str(tmp_path / "cache"))
    ann_file, _ = make_synthetic(num_images=1, image_size=32)
    assert ann_file.parent.parent == tmp_path / "cache" / "synthetic"
    for bad in ({"num_images": 0}, {"image_size": 16}, {"seed": -1}, {"split": "a/b"}, {"num_images": 2.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make_synthetic(tmp_path, **bad)


def test_objects_are_varied_and_inside_the_image(tmp_path):
    size = 128
    ds = read_synthetic(tmp_path, num_images=40, image_size=size, seed=0)
    raw = json.loads(next(tmp_path.glob("*/annotations.json")).read_text())
    assert ds.class_names == list(CLASS_NAMES)
    assert len(ds) == 40 and ds.num_boxes == len(raw["annotations"])
    assert all(1 <= len(r.boxes) <= 8 for r in ds)
    counts = ds.class_counts()
    assert min(counts.values()) >= 10, counts  # every class well represented
    boxes = np.concatenate([r.boxes for r in ds])
    assert boxes.min() >= 0 and boxes.max() <= size
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    longer = np.maximum(w, h)
    assert longer.min() < 16 and longer.max() > size / 3  # small and large objects
    assert longer.max() <= size / 2 + 1
    ratio = w / h
    assert ratio.min() < 0.5 and ratio.max() > 2  # tall and wide objects
    overlapping = 0
    for r in ds:
        b = r.boxes
        ix = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
        iy = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
        inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
        overlapping += int((np.triu(inter, 1) > 0).any())
    assert overlapping >= 3  # some images have overlapping objects
    # boxes are tight around drawn shapes: a rectangle drawn last (nothing covers it) is one flat
    # colour inside its box (plus noise of sigma <= 6), and its 2-px-larger surroundings are not
    checked = 0
    for r in ds:
        x1, y1, x2, y2 = r.boxes[-1].astype(int)
        if ds.class_names[r.labels[-1]] != "rectangle" or min(x2 - x1, y2 - y1) < 6:
            continue
        img = np.asarray(Image.open(r.image_path)).astype(np.float32)
        assert img.shape == (size, size, 3)
        inside = img[y1:y2, x1:x2].reshape(-1, 3)
        assert inside.std(axis=0).max() < 10
        around = img[max(y1 - 2, 0) : y2 + 2, max(x1 - 2, 0) : x2 + 2].reshape(-1, 3)
        assert np.abs(around - inside.mean(axis=0)).sum(axis=1).max() > 60
        checked += 1
    assert checked >= 3
