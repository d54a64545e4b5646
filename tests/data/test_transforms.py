"""Transforms: boxes stay valid and inside the image through augmentation; scales map back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossreg.data.transforms import build_transforms, resized_shape, unscale_boxes
from lossreg.recipe import ComponentSpec

AUGMENTS = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "VerticalFlip", "p": 0.5},
    {"name": "Affine", "scale": (0.7, 1.3), "translate_percent": (-0.2, 0.2), "rotate": (-20, 20), "p": 0.8},
    {"name": "RandomSizedBBoxSafeCrop", "height": 48, "width": 64, "p": 0.5},
    {"name": "RandomScale", "scale_limit": 0.3, "p": 0.5},
    {"name": "ColorJitter", "p": 0.5},
]


@st.composite
def samples(draw):
    h = draw(st.integers(16, 96))
    w = draw(st.integers(16, 96))
    n = draw(st.integers(0, 5))
    boxes = []
    for _ in range(n):
        x1 = draw(st.floats(0, w - 2))
        y1 = draw(st.floats(0, h - 2))
        boxes.append([x1, y1, draw(st.floats(x1 + 1, w)), draw(st.floats(y1 + 1, h))])
    labels = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    augment = draw(st.lists(st.sampled_from(AUGMENTS), max_size=3, unique_by=lambda a: a["name"]))
    size = draw(st.sampled_from([64, (48, 80)]))
    seed = draw(st.integers(0, 2**16))
    return h, w, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64), augment, size, seed


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(samples())
def test_augmented_boxes_stay_valid_and_inside(sample):
    h, w, boxes, labels, augment, size, seed = sample
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = build_transforms(augment, size, train=True, seed=seed)(image, boxes, labels)
    oh, ow = out["image"].shape[:2]
    rh, rw = resized_shape(*out["input_size"], size)  # the resized (unpadded) content
    if isinstance(size, int):
        assert (oh, ow) == (size, size) and max(rh, rw) == size
    else:
        assert (oh, ow) == (rh, rw) and min(rh, rw) <= 48 and max(rh, rw) <= 80
    b = out["boxes"]
    assert b.dtype == np.float32 and b.shape == (len(out["labels"]), 4)
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert (b >= 0).all() and (b[:, 2] <= rw + 1e-3).all() and (b[:, 3] <= rh + 1e-3).all()
    assert set(out["labels"].tolist()) <= set(labels.tolist())
    assert out["scale"] == pytest.approx((rh / out["input_size"][0], rw / out["input_size"][1]))


def test_eval_letterbox_scales_map_back_to_original_pixels():
    image = np.zeros((480, 640, 3), np.uint8)
    boxes = np.array([[0, 0, 640, 480], [100.5, 20, 300, 410.25]], np.float32)
    t = build_transforms([{"name": "HorizontalFlip", "p": 1.0}], 256, train=False)  # eval: no augmentation
    out = t(image, boxes, np.array([0, 2]), ignore_boxes=np.array([[10, 10, 50, 60]]))
    assert out["image"].shape == (256, 256, 3)
    assert out["scale"] == (192 / 480, 256 / 640)
    assert (out["image"][192:] == 0).all()  # letterbox padding at the bottom
    np.testing.assert_allclose(out["boxes"], boxes * 0.4, atol=1e-3)
    np.testing.assert_array_equal(out["labels"], [0, 2])
    np.testing.assert_allclose(out["ignore_boxes"], [[4, 4, 20, 24]], atol=1e-3)
    np.testing.assert_allclose(unscale_boxes(out["boxes"], out["scale"], (480, 640)), boxes, atol=1e-2)


def test_pair_size_keeps_ratio_like_mmdetection():
    assert resized_shape(480, 640, (800, 1333)) == (800, 1067)  # short side 800
    assert resized_shape(400, 1200, (1333, 800)) == (444, 1333)  # long side capped at 1333
    out = build_transforms([], [800, 1333], train=False)(np.zeros((480, 640, 3), np.uint8), [[0, 0, 64, 48]], [1])
    assert out["image"].shape == (800, 1067, 3)
    np.testing.assert_allclose(out["boxes"], [[0, 0, 64 * 1067 / 640, 80]], atol=1e-2)


def test_training_flip_moves_boxes_and_ignore_regions_together():
    image = np.zeros((64, 64, 3), np.uint8)
    spec = ComponentSpec("HorizontalFlip", {"p": 1.0})  # the recipe's own type
    out = build_transforms([spec], 64)(image, [[0, 0, 10, 20]], [1], ignore_boxes=[[50, 0, 64, 8]])
    np.testing.assert_allclose(out["boxes"], [[54, 0, 64, 20]], atol=1e-4)
    np.testing.assert_allclose(out["ignore_boxes"], [[0, 0, 14, 8]], atol=1e-4)


def test_bad_augment_specs_are_named_with_suggestions():
    with pytest.raises(
        ValueError, match=r"augment\[1\]: unknown albumentations transform 'HorizontalFlp'.*'HorizontalFlip'"
    ):
        build_transforms(["VerticalFlip", {"name": "HorizontalFlp"}], 64)
    with pytest.raises(
        TypeError, match=r"augment\[0\]: transform 'HorizontalFlip' has no parameter 'pp'; did you mean 'p'"
    ):
        build_transforms([("HorizontalFlip", {"pp": 0.5})], 64)
    with pytest.raises(ValueError, match=r"augment\[0\]: bad parameters for 'HorizontalFlip'"):
        build_transforms([{"name": "HorizontalFlip", "p": 3}], 64)
    with pytest.raises(ValueError, match=r"augment\[0\].transforms\[1\]: unknown"):
        build_transforms([{"name": "OneOf", "transforms": ["Blur", "NoSuchThing"]}], 64)
    with pytest.raises(ValueError, match="unknown albumentations transform 'BboxParams'"):
        build_transforms(["BboxParams"], 64)  # an albumentations class, but not a transform
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        build_transforms([], 64)(np.zeros((8, 8), np.uint8), [], [])


@st.composite
def _overlapping_box(draw):
    """A box at least half a pixel inside the 64 x 64 image on each axis, possibly sticking out of it (the
    boxes the readers and augmentations hand on; the epsilon rules for slivers differ between versions)."""
    x1, y1 = draw(st.floats(-20, 63)), draw(st.floats(-20, 63))
    x2 = draw(st.floats(max(x1, 0.0) + 0.5, 84))
    y2 = draw(st.floats(max(y1, 0.0) + 0.5, 84))
    return x1, y1, x2, y2


@settings(max_examples=100, deadline=None)
@given(st.lists(_overlapping_box(), max_size=6), st.booleans())
def test_identity_resize_shortcut_equals_albumentations(raw, ignore_last):
    """An image already at the output size skips albumentations' resize and pad: same image, same boxes kept."""
    transform = build_transforms((), 64, train=False)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    boxes = np.array(raw, np.float32).reshape(-1, 4)
    labels = np.arange(len(boxes), dtype=np.int64)
    ignore = boxes[-1:] if ignore_last and len(boxes) else None
    got = transform(image, boxes, labels, ignore)
    # the long way: albumentations' resize and pad on the same sample
    all_boxes = np.concatenate([boxes, np.zeros((0, 4), np.float32) if ignore is None else ignore])
    all_labels = np.concatenate([labels, np.full(0 if ignore is None else 1, -1, np.int64)])
    sample = transform._resizer((64, 64))(image=image, bboxes=all_boxes, labels=all_labels)
    sample = transform.pad(**sample)
    want_boxes = np.asarray(sample["bboxes"], np.float32).reshape(-1, 4)
    want_labels = np.asarray(sample["labels"], np.int64)
    assert np.array_equal(got["image"], sample["image"])
    assert np.array_equal(got["labels"], want_labels[want_labels >= 0])
    np.testing.assert_allclose(got["boxes"], want_boxes[want_labels >= 0], atol=1e-4)
    np.testing.assert_allclose(got["ignore_boxes"], want_boxes[want_labels < 0], atol=1e-4)
    assert got["scale"] == (1.0, 1.0)


def test_identity_resize_does_not_run_albumentations(monkeypatch):
    transform = build_transforms((), 64, train=False)

    def refuse(shape):
        raise AssertionError(f"albumentations resize to {shape} for an image already 64 x 64")

    monkeypatch.setattr(transform, "_resizer", refuse)
    monkeypatch.setattr(transform, "pad", None)
    boxes = np.array([[-5.0, 10.0, 30.0, 70.0], [70.0, 0.0, 90.0, 9.0], [3.0, 3.0, 3.0, 9.0]])  # in, outside, no width
    out = transform(np.zeros((64, 64, 3), np.uint8), boxes, np.array([2, 1, 0]))
    assert out["boxes"].tolist() == [[0.0, 10.0, 30.0, 64.0]] and out["labels"].tolist() == [2]
    with pytest.raises(AssertionError, match="albumentations resize"):
        transform(np.zeros((32, 32, 3), np.uint8), np.zeros((0, 4)), np.zeros((0,), np.int64))
