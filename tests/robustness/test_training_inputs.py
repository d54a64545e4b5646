"""Category C: silent wrong training inputs, checked at the model's and the loss's boundary.

Images: every image's dtype is checked (not only the first), values must be finite RGB in
0-1, empty images are refused, other float dtypes and tiny images give the right result.
Targets: lists and arrays are accepted, float/bool labels refused, out-of-range labels
refused by every loss, and boxes outside the image follow the readers' rule (clipped to
the image; dropped with a DegenerateBoxWarning when under 1 px after clipping).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from robust_helpers import one_target, raises, tiny_model

import lossreg
from lossreg.data.records import DegenerateBoxWarning, clip_boxes
from lossreg.detectors.inputs import check_targets

SIZE = 64


@pytest.fixture(scope="module")
def model():
    return tiny_model("atss").train()


@pytest.fixture(scope="module")
def frcnn():
    return tiny_model("faster_rcnn").train()


def _loss(model, images, targets):
    torch.manual_seed(0)
    out = model(images, targets)
    return {k: float(v.detach()) for k, v in out.items()}


def _images(n=1, size=SIZE, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- images


def test_mixed_float_and_uint8_batch_is_refused_naming_the_image(model):
    images = [torch.rand(3, SIZE, SIZE), (torch.rand(3, SIZE, SIZE) * 255).to(torch.uint8)]
    with raises(ValueError, "images[1] is torch.uint8", "image.float() / 255"):
        model(images, [one_target(), one_target()])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64, torch.bool])
def test_integer_images_are_refused(model, dtype):
    with raises(ValueError, f"images[0] is {dtype}", "float RGB in 0-1"):
        model((torch.rand(1, 3, SIZE, SIZE) * 255).to(dtype), [one_target()])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_give_the_float32_result(model, dtype):
    images = _images()
    ref = _loss(model, images, [one_target()])
    got = _loss(model, images.to(dtype), [one_target()])
    tol = 1e-5 if dtype == torch.float64 else 5e-2
    assert got.keys() == ref.keys() and all(abs(got[k] - ref[k]) <= tol * max(1.0, abs(ref[k])) for k in ref)


def test_mixed_float_dtypes_in_a_list(model):
    images = [_images()[0], _images(seed=2)[0].double()]
    assert all(np.isfinite(v) for v in _loss(model, images, [one_target(), one_target()]).values())


@pytest.mark.parametrize("shape", [(3, SIZE, 0), (3, 0, SIZE), (3, 0, 0)])
def test_empty_image_is_refused(model, shape):
    with raises(ValueError, "images[0] is", "an image needs at least 1 x 1"):
        model([torch.rand(*shape)], [one_target(boxes=(), labels=())])


@pytest.mark.parametrize("size", [32, 16, 8])
def test_one_small_image_trains(model, size):
    losses = _loss(model, torch.rand(1, 3, size, size), [one_target(boxes=((1.0, 1.0, size - 1.0, size - 1.0),))])
    assert all(np.isfinite(v) for v in losses.values())


def test_one_pixel_wide_image_trains(model):
    losses = _loss(model, [torch.rand(3, 40, 1)], [one_target(boxes=(), labels=())])
    assert all(np.isfinite(v) for v in losses.values())


def test_one_small_image_trains_in_faster_rcnn(frcnn):
    losses = _loss(frcnn, torch.rand(1, 3, 32, 32), [one_target(boxes=((2.0, 2.0, 30.0, 30.0),))])
    assert all(np.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_pixels_are_refused_in_training(model, value):
    images = _images()
    images[0, 1, 5, 7] = value
    with raises(ValueError, "images[0] has 1 NaN or infinite pixel value(s)"):
        model(images, [one_target()])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_pixels_are_refused_in_eval(value):
    model = tiny_model("atss").eval()
    images = _images(2)
    images[1, 0, 0, 0] = value
    with raises(ValueError, "images[1] has 1 NaN or infinite"):
        model(images)


@pytest.mark.parametrize(
    "scale,shift,shown",
    [(255.0, 0.0, "divide 0-255 images by 255"), (4.0, -2.0, "do not normalise them"), (1.0, -1.0, "in 0-1")],
)
def test_values_outside_0_1_are_refused(model, scale, shift, shown):
    with raises(ValueError, "images[0] has values in", shown):
        model(_images() * scale + shift, [one_target()])


def test_slight_overshoot_from_augmentation_is_accepted(model):
    assert np.isfinite(_loss(model, _images() * 1.2 - 0.1, [one_target()])["loss_cls"])


@pytest.mark.parametrize(
    "images,shown",
    [
        (torch.rand(1, 1, SIZE, SIZE), "images must be a float [B, 3, H, W] tensor"),
        (torch.rand(3, SIZE, SIZE), "images must be a float [B, 3, H, W] tensor"),
        ([torch.rand(SIZE, SIZE)], "images[0] must be a float [3, H, W] RGB tensor"),
        ([np.zeros((3, SIZE, SIZE), np.float32)], "images[0] must be a float [3, H, W] RGB tensor, got ndarray"),
        ([], "images is empty"),
        ("photo.jpg", "got str"),
    ],
)
def test_malformed_image_batches(model, images, shown):
    with raises(ValueError, shown):
        model(images, [one_target()])


# --------------------------------------------------------------------------- targets: types


def test_boxes_and_labels_as_python_lists_equal_tensors(model):
    images = _images()
    ref = _loss(model, images, [one_target()])
    got = _loss(model, images, [{"boxes": [[4, 6, 40, 50]], "labels": [1]}])
    assert got == ref


def test_boxes_as_numpy(model):
    images = _images()
    ref = _loss(model, images, [one_target()])
    got = _loss(model, images, [{"boxes": np.array([[4.0, 6, 40, 50]]), "labels": np.array([1])}])
    assert got == ref


@pytest.mark.parametrize("empty_labels", [torch.zeros(0), [], torch.zeros(0, dtype=torch.long)])
def test_image_without_objects_any_empty_labels(model, empty_labels):
    losses = _loss(model, _images(), [{"boxes": torch.zeros(0, 4), "labels": empty_labels}])
    assert np.isfinite(losses["loss_cls"]) and losses["loss_reg"] == 0.0


@pytest.mark.parametrize(
    "labels,dtype", [(torch.tensor([1.7]), "float32"), (torch.tensor([1.0]), "float32"), (torch.tensor([True]), "bool"),
                     (torch.tensor([1.0], dtype=torch.float64), "float64")],
)
def test_float_and_bool_labels_are_refused(model, labels, dtype):
    with raises(ValueError, "targets[0]: 'labels' must be integer class indices", dtype):
        model(_images(), [{"boxes": torch.tensor([[4.0, 6, 40, 50]]), "labels": labels}])


@pytest.mark.parametrize("label", [3, 4, 100, -1])
def test_labels_out_of_range_are_refused(model, label):
    with raises(ValueError, "targets[0]: labels must be in [0, 2]", "no background label"):
        model(_images(), [one_target(labels=(label,))])


@pytest.mark.parametrize(
    "boxes,shown",
    [
        ([[float("nan"), 1, 2, 3]], "boxes contain NaN or inf"),
        ([[0, 0, float("inf"), 3]], "boxes contain NaN or inf"),
        ([[10, 10, 5, 20]], "x2 >= x1 and y2 >= y1"),
        ([[1, 2, 3, 4, 5]], "boxes must be [G, 4]"),
        ([1, 2, 3, 4], "boxes must be [G, 4]"),
        ([["a", 1, 2, 3]], "'boxes' cannot be made a tensor"),
        ({"x": 1}, "'boxes' must be a tensor"),
    ],
)
def test_malformed_boxes_are_refused(model, boxes, shown):
    with raises(ValueError, "targets[0]", shown):
        model(_images(), [{"boxes": boxes, "labels": torch.tensor([1])}])


def test_bool_boxes_are_refused(model):
    with raises(ValueError, "'boxes' must be float pixel coordinates", "bool"):
        model(_images(), [{"boxes": torch.ones(1, 4, dtype=torch.bool), "labels": torch.tensor([1])}])


@pytest.mark.parametrize(
    "targets,shown",
    [
        ([], "training needs one target dict per image (1), got 0 target dicts"),
        ({"boxes": 1}, "got dict"),
        ([{"boxes": torch.zeros(0, 4)}], "targets[0] must be a dict with 'boxes'"),
        ([[1, 2, 3, 4]], "targets[0] must be a dict"),
        (None, "needs targets"),
    ],
)
def test_malformed_target_lists(model, targets, shown):
    with raises(ValueError, shown):
        model(_images(), targets)


# --------------------------------------------------------------------------- boxes outside the image


def _warned(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [w for w in caught if issubclass(w.category, DegenerateBoxWarning)]


@pytest.mark.parametrize(
    "outside",
    [(100.0, 100.0, 150.0, 160.0), (-50.0, -50.0, -10.0, -5.0), (10.0, 70.0, 30.0, 90.0), (20.0, 20.0, 20.0, 40.0)],
)
def test_box_outside_the_image_is_dropped_with_a_warning(model, outside):
    images = _images()
    ref = _loss(model, images, [one_target()])
    got, warned = _warned(lambda: _loss(model, images, [one_target(boxes=((4.0, 6.0, 40.0, 50.0), outside), labels=(1, 2))]))
    assert got == ref  # exactly as if the box were not there
    assert len(warned) == 1 and "dropped 1 target box outside the image" in str(warned[0].message)


def test_box_partly_outside_is_clipped_to_the_image(model):
    images = _images()
    ref = _loss(model, images, [one_target(boxes=((0.0, 0.0, 30.0, SIZE),))])
    got, warned = _warned(lambda: _loss(model, images, [one_target(boxes=((-20.0, -5.0, 30.0, 500.0),))]))
    assert got == ref and not warned


def test_clip_uses_each_image_own_size_not_the_padded_batch(model):
    images = [torch.rand(3, 64, 64), torch.rand(3, 40, 30)]  # padded to 64 x 64
    targets = [one_target(), one_target(boxes=((31.0, 5.0, 60.0, 20.0),))]  # x1 >= 30: outside the second image
    _, warned = _warned(lambda: model(images, targets))
    assert len(warned) == 1 and "image 1" in str(warned[0].message)


def test_model_rule_is_the_readers_rule():
    rng = np.random.default_rng(0)
    boxes = np.sort(rng.uniform(-40, 110, size=(200, 2, 2)), axis=1).transpose(0, 2, 1).reshape(-1, 4)[:, [0, 1, 2, 3]]
    boxes = np.stack([boxes[:, 0], boxes[:, 2], boxes[:, 1], boxes[:, 3]], 1).astype(np.float32)  # x1, y1, x2, y2
    clipped, keep = clip_boxes(boxes, 64, 48, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateBoxWarning)
        out = check_targets([{"boxes": torch.from_numpy(boxes), "labels": torch.zeros(200, dtype=torch.long)}], 1, 3,
                            [(48, 64)])[0]
    assert torch.equal(out["boxes"], torch.from_numpy(clipped[keep]))


def test_faster_rcnn_applies_the_same_rule(frcnn):
    _, warned = _warned(lambda: frcnn(_images(), [one_target(boxes=((4.0, 6.0, 40.0, 50.0), (70.0, 70.0, 90.0, 90.0)), labels=(1, 2))]))
    assert len(warned) == 1


def test_explain_assignment_applies_the_same_rule():
    model = tiny_model("atss")
    with raises(ValueError, "'labels' must be integer class indices"):
        model.explain_assignment(_images(), [{"boxes": torch.tensor([[4.0, 6, 40, 50]]), "labels": torch.tensor([1.0])}])
    _, warned = _warned(lambda: model.explain_assignment(_images(), [one_target(boxes=((80.0, 80.0, 90.0, 90.0),))]))
    assert len(warned) == 1


# --------------------------------------------------------------------------- the loss's boundary


CLS_LOSSES = ["focal", "qfl", "vfl", "ghm_c", "hcra_c", "bce", "dr"]


@pytest.mark.parametrize("name", CLS_LOSSES)
def test_every_sigmoid_loss_refuses_labels_beyond_background(name):
    loss = lossreg.create_loss(name)
    with raises(ValueError, "labels must be in -1..3", "would silently count as background"):
        loss(torch.randn(4, 3), torch.tensor([0, 1, 4, 3]), quality=torch.rand(4))


@pytest.mark.parametrize("name", CLS_LOSSES + ["ce"])
@pytest.mark.parametrize("labels", [torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([True, False, True, False])])
def test_every_classification_loss_refuses_float_and_bool_labels(name, labels):
    with raises(ValueError, "labels must be integer class indices", str(labels.dtype)):
        lossreg.create_loss(name)(torch.randn(4, 4), labels, quality=torch.rand(4))


@pytest.mark.parametrize("label", [-2, -100])
def test_labels_below_minus_one_are_refused(label):
    with raises(ValueError, "labels must be in -1..3"):
        lossreg.create_loss("focal")(torch.randn(2, 3), torch.tensor([0, label]))


def test_ce_keeps_its_narrower_range():
    with raises(ValueError, "labels must be in -1..3"):
        lossreg.create_loss("ce")(torch.randn(2, 4), torch.tensor([0, 4]))


@pytest.mark.parametrize("name", CLS_LOSSES)
def test_valid_labels_still_work(name):
    out = lossreg.create_loss(name)(torch.randn(5, 3), torch.tensor([0, 1, 2, 3, -1]), quality=torch.rand(5))
    assert torch.isfinite(out)
