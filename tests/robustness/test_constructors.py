"""Category D: constructors that accepted what would fail later. Checked at construction now.

Components of the wrong type, a head whose strides do not match the neck, post-processing
out of range, NaN hyperparameters, repeated class names; and assigners take their level
layout from the head, so a head's ``strides`` alone is enough to change the pyramid.
"""

from __future__ import annotations

import math

import pytest
import torch
from robust_helpers import TINY, TINY_HEADS, one_target, raises, tiny_model

import lossreg
from lossreg._registry import BadParameterError, build_component
from lossreg.assigners.fcos import DEFAULT_SCALE_RANGES, DEFAULT_STRIDES, default_scale_ranges
from lossreg.recipe import RecipeError, load_recipe

# --------------------------------------------------------------------------- component types


@pytest.mark.parametrize(
    "slot,value,kind",
    [
        ("cls_loss", 42, "loss"),
        ("reg_loss", 3.5, "loss"),
        ("quality_loss", [1, 2], "loss"),
        ("assigner", True, "assigner"),
        ("balancer", (1,), "balancer"),
        ("cls_loss", object(), "loss"),
    ],
)
def test_create_model_refuses_a_component_of_the_wrong_type(slot, value, kind):
    with raises(TypeError, f"atss: {slot} must be a {kind} name", f"`lossreg list {kind}`", type(value).__name__):
        lossreg.create_model("atss", num_classes=3, **TINY, **{slot: value})


@pytest.mark.parametrize("kind,value", [("loss", 42), ("assigner", 1.5), ("balancer", ["static"]), ("head", b"x")])
def test_build_component_refuses_non_components(kind, value):
    with raises(TypeError, f"expected a {kind} name", "built"):
        build_component(kind, value)


def test_head_built_directly_names_the_slot():
    with raises(TypeError, "ATSSHead: cls_loss: expected a loss name"):
        lossreg.create_head("atss", num_classes=3, cls_loss=42)


def test_a_built_module_is_still_accepted():
    model = lossreg.create_model("atss", num_classes=3, **TINY, head=TINY_HEADS["atss"], cls_loss=lossreg.create_loss("qfl"))
    assert type(model.head.cls_loss).__name__ == "QualityFocalLoss"


# --------------------------------------------------------------------------- strides


@pytest.mark.parametrize("arch", ["atss", "fcos", "retinanet", "vfnet"])
@pytest.mark.parametrize("strides", [[8, 16], [8, 16, 32, 64, 256], [4, 8, 16, 32, 64]])
def test_head_strides_that_do_not_match_the_neck(arch, strides):
    with raises(ValueError, "head's strides", "do not match the neck's 5 levels", "set the head's strides to [8, 16, 32, 64, 128]"):
        tiny_model(arch, head={"strides": strides})


def test_fcos_head_strides_alone_set_the_assigner_levels():
    model = tiny_model("fcos", neck={"name": "fpn", "out_channels": 32, "extra": "none"}, head={"strides": [8, 16, 32]})
    assigner = model.head.assigner
    assert assigner.strides == (8.0, 16.0, 32.0)
    assert assigner.scale_ranges == ((-1.0, 64.0), (64.0, 128.0), (128.0, math.inf))
    losses = model.train()(torch.rand(2, 3, 64, 64), [one_target(), one_target()])
    assert all(torch.isfinite(v) for v in losses.values())


def test_fcos_default_layout_is_the_papers():
    assert default_scale_ranges(DEFAULT_STRIDES) == tuple((float(lo), float(hi)) for lo, hi in DEFAULT_SCALE_RANGES)
    assert tiny_model("fcos").head.assigner.scale_ranges == default_scale_ranges(DEFAULT_STRIDES)


def test_fcos_assigner_strides_that_differ_from_the_head():
    with raises(ValueError, "strides [8, 16, 32, 64, 128] differ from the head's [8, 16, 32]", "drop the assigner's strides"):
        tiny_model("fcos", neck={"name": "fpn", "out_channels": 32, "extra": "none"}, head={"strides": [8, 16, 32]},
                   assigner={"name": "fcos", "strides": [8, 16, 32, 64, 128]})


def test_fcos_assigner_scale_ranges_for_another_pyramid():
    with raises(ValueError, "5 scale_ranges for the head's 3 pyramid levels", "leave scale_ranges unset"):
        tiny_model("fcos", neck={"name": "fpn", "out_channels": 32, "extra": "none"}, head={"strides": [8, 16, 32]},
                   assigner={"name": "fcos", "scale_ranges": [list(r) for r in DEFAULT_SCALE_RANGES]})


def test_fcos_assigner_own_ranges_for_the_heads_levels_are_kept():
    ranges = [[-1, 32], [32, 96], [96, 1e8]]
    model = tiny_model("fcos", neck={"name": "fpn", "out_channels": 32, "extra": "none"}, head={"strides": [8, 16, 32]},
                       assigner={"name": "fcos", "scale_ranges": ranges})
    assert model.head.assigner.scale_ranges == tuple(tuple(map(float, r)) for r in ranges)


def test_fcos_atss_needs_no_strides():
    model = tiny_model("fcos", neck={"name": "fpn", "out_channels": 32, "extra": "none"}, head={"strides": [8, 16, 32]},
                       assigner="atss")
    assert torch.isfinite(model.train()(torch.rand(1, 3, 64, 64), [one_target()])["loss_cls"])


def test_standalone_fcos_assigner_without_strides_for_its_ranges():
    assigner = lossreg.create_assigner("fcos", scale_ranges=[[-1, 64], [64, math.inf]])
    with raises(ValueError, "pyramid levels", "pass strides=..."):
        assigner.assign(torch.tensor([[0.0, 0, 8, 8], [0, 0, 16, 16]]), [1, 1], torch.tensor([[0.0, 0, 10, 10]]),
                        torch.tensor([0]))


def test_faster_rcnn_rpn_strides_must_match():
    with raises(ValueError, "the rpn head's strides [8, 16, 32, 64, 128] do not match the neck's 5 levels (strides [4, 8, 16, 32, 64])"):
        tiny_model("faster_rcnn", rpn_head={"name": "rpn", "strides": [8, 16, 32, 64, 128]})


def test_faster_rcnn_roi_levels_must_exist():
    with raises(ValueError, "pools from 6 levels but the neck has 5", "num_levels to at most 5"):
        lossreg.create_model("faster_rcnn", num_classes=3, **TINY, roi_head={"name": "roi_box", "num_levels": 6})


# --------------------------------------------------------------------------- post-processing and numbers


@pytest.mark.parametrize(
    "kwargs,shown",
    [
        ({"score_thr": 2.0}, "score_thr must be in [0, 1]"),
        ({"score_thr": -0.1}, "score_thr must be in [0, 1]"),
        ({"score_thr": float("nan")}, "parameter 'score_thr' is NaN"),
        ({"nms_thr": -1}, "nms_thr must be in (0, 1]"),
        ({"nms_thr": 0}, "nms_thr must be in (0, 1]"),
        ({"nms_thr": 1.5}, "nms_thr must be in (0, 1]"),
        ({"max_dets": 0}, "max_dets must be an int >= 1"),
        ({"max_dets": -5}, "max_dets must be an int >= 1"),
        ({"max_dets": 2.5}, "parameter 'max_dets' expects int, got float 2.5"),
        ({"pre_nms_topk": 0}, "pre_nms_topk must be an int >= 1"),
    ],
)
def test_post_processing_out_of_range(kwargs, shown):
    with raises((ValueError, TypeError), shown):
        lossreg.create_model("atss", num_classes=3, **TINY, head=TINY_HEADS["atss"], **kwargs)


@pytest.mark.parametrize("kwargs", [{"score_thr": 2.0}, {"nms_thr": -1}, {"max_dets": 0}])
def test_faster_rcnn_post_processing_out_of_range(kwargs):
    with pytest.raises(ValueError, match="roi_box"):
        lossreg.create_model("faster_rcnn", num_classes=3, **TINY, **kwargs)


@pytest.mark.parametrize(
    "kind,name,params,shown",
    [
        ("loss", "focal", {"alpha": float("nan")}, "parameter 'alpha' is NaN"),
        ("loss", "focal", {"gamma": float("inf")}, "parameter 'gamma' is inf"),
        ("loss", "giou", {"loss_weight": float("nan")}, "parameter 'loss_weight' is NaN"),
        ("loss", "hcra_r", {"alpha": float("-inf")}, "parameter 'alpha' is -inf"),
        ("balancer", "alwa1", {"lambda0": float("nan")}, "parameter 'lambda0' is NaN"),
        ("assigner", "fcos", {"scale_ranges": [[-1, float("nan")]]}, "NaN inside a list"),
        ("assigner", "atss", {"topk": 9.5}, "expects int"),
    ],
)
def test_nan_and_inf_hyperparameters_are_refused(kind, name, params, shown):
    with raises(BadParameterError, shown):
        lossreg.create_component(kind, name, **params)


def test_focal_alpha_above_one():
    with raises(ValueError, "focal: parameter 'alpha' must be <= 1"):
        lossreg.create_loss("focal", alpha=2.0)


def test_inf_inside_a_range_is_fine():
    assert lossreg.create_assigner("fcos", scale_ranges=DEFAULT_SCALE_RANGES).scale_ranges[-1][1] == math.inf


def test_nan_hyperparameter_in_a_recipe_names_the_field():
    with raises(RecipeError, "model.cls_loss.alpha", "is NaN"):
        load_recipe({"model": {"arch": "atss", "cls_loss": {"name": "focal", "alpha": float("nan")}}})


# --------------------------------------------------------------------------- class names and counts


@pytest.mark.parametrize(
    "label_names,shown",
    [
        (["cat", "cat", "dog"], "label_names repeats 'cat'"),
        (["a", "b"], "2 label_names for num_classes=3"),
        (["a", "", "c"], "label_names must be non-empty strings"),
        (["a", 2, "c"], "parameter 'label_names' expects collections.abc.Sequence[str] | None, got list"),
        ("abc", "parameter 'label_names' expects collections.abc.Sequence[str] | None, got str 'abc'"),
    ],
)
def test_bad_label_names(label_names, shown):
    with raises((ValueError, TypeError), shown):
        lossreg.create_model("atss", num_classes=3, **TINY, label_names=label_names)


@pytest.mark.parametrize(
    "num_classes,shown",
    [(0, "num_classes must be a positive int, got 0"), (-1, "num_classes must be a positive int, got -1"),
     (True, "parameter 'num_classes' expects int, got bool True"), (2.5, "parameter 'num_classes' expects int"),
     ("3", "parameter 'num_classes' expects int, got str '3'")],
)
def test_bad_num_classes(num_classes, shown):
    with raises((ValueError, TypeError), shown):
        lossreg.create_model("atss", num_classes=num_classes, **TINY)


def test_label_names_checked_without_the_registry():
    from lossreg.detectors.inputs import check_label_names

    with raises(ValueError, "x: label_names must be non-empty strings, got 2"):
        check_label_names("x", ["a", 2], 2)
    with raises(ValueError, "x: label_names must be a list of class names, got str"):
        check_label_names("x", "ab", 2)
    assert check_label_names("x", ("a", "b"), 2) == ["a", "b"]


# --------------------------------------------------------------------------- the recipe's eval section


@pytest.mark.parametrize("key", ["max_dets", "pre_nms_topk", "interval", "batch_size"])
def test_recipe_eval_counts(key):
    with raises(RecipeError, f"eval.{key}", "must be >= 1"):
        load_recipe({"model": {"arch": "atss"}, "eval": {key: 0}})


@pytest.mark.parametrize("key,value", [("score_thr", 2.0), ("nms_thr", -1.0)])
def test_recipe_eval_thresholds(key, value):
    with raises(RecipeError, "eval", "score_thr must be in [0, 1] and nms_thr in (0, 1]"):
        load_recipe({"model": {"arch": "atss"}, "eval": {key: value}})
