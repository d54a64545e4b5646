"""Category A: unbounded work from a tiny file. YAML alias bombs, deep nesting, absurd model sizes.

Each hostile input must fail fast (well under a second of work) with one line naming the
file and the limit, before any large allocation; ordinary inputs must pass untouched.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
import yaml
from robust_helpers import TINY, TINY_HEADS, raises, tiny_model, yaml_alias_bomb

import lossreg
from lossreg import _limits
from lossreg._limits import InputLimitError, check_count, check_numel, load_json, safe_load_yaml
from lossreg.engine.ablate.swaps import AblationError, parse_swaps
from lossreg.hub import HubError, save_pretrained
from lossreg.recipe import RecipeError, apply_overrides, list_recipes, load_recipe

RECIPE_HEAD = "name: bomb\nmodel: {arch: atss}\ndata:\n  train:\n    format: synthetic\n    params:\n"


def _bomb_recipe(tmp_path, body: str):
    path = tmp_path / "bomb.yaml"
    path.write_text(body)
    return path


# --------------------------------------------------------------------------- YAML


def test_alias_bomb_in_free_form_params_is_refused_fast(tmp_path):
    bomb = "".join("      " + line + "\n" for line in yaml_alias_bomb().splitlines())
    path = _bomb_recipe(tmp_path, RECIPE_HEAD + bomb)
    assert path.stat().st_size < 1000  # the 525-byte kind of file
    start = time.perf_counter()
    with raises(RecipeError, "expands to more than 100000 values", "bomb.yaml"):
        load_recipe(path)
    assert time.perf_counter() - start < 5


def test_alias_bomb_through_lossreg_check(tmp_path, capsys):
    from robust_helpers import one_line_error

    bomb = "".join("      " + line + "\n" for line in yaml_alias_bomb().splitlines())
    path = _bomb_recipe(tmp_path, RECIPE_HEAD + bomb)
    from lossreg.cli import main

    assert main(["check", str(path)]) == 2
    one_line_error(capsys, "lossreg check: error:", "expands to more than", "bomb.yaml")


@pytest.mark.parametrize("depth", [65, 1000, 50_000])
def test_deep_flow_nesting_is_one_line_not_a_recursion_error(tmp_path, depth):
    path = _bomb_recipe(tmp_path, "name: deep\nmodel: {arch: atss}\nx: " + "[" * depth + "]" * depth + "\n")
    with raises(RecipeError, "nested deeper than 64 levels", "bomb.yaml"):
        load_recipe(path)


def test_deep_block_nesting(tmp_path):
    body = "".join("  " * i + f"k{i}:\n" for i in range(80)) + "  " * 80 + "v\n"
    with raises(RecipeError, "nested deeper than 64 levels"):
        load_recipe(_bomb_recipe(tmp_path, body))


@pytest.mark.parametrize("doc", ["a: &a [*a]", "&a [*a, 1]", "a: &a {b: *a}"])
def test_recursive_alias(tmp_path, doc):
    with raises(RecipeError, "refers to itself"):
        load_recipe(_bomb_recipe(tmp_path, doc + "\n"))


def test_alias_chain_deeper_than_the_limit():
    lines = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 80)]
    with raises(InputLimitError, "nested deeper than 64 levels once its aliases are expanded"):
        safe_load_yaml("\n".join(lines))


def test_text_size_limit(monkeypatch):
    monkeypatch.setattr(_limits, "MAX_TEXT_BYTES", 100)
    with raises(InputLimitError, "above the limit of 100"):
        safe_load_yaml("a: " + "x" * 200)


def test_override_value_bomb():
    value = "{" + ", ".join(f"k{i}: &k{i} [" + ", ".join([f"*k{i-1}" if i else "x"] * 9) + "]" for i in range(9)) + "}"
    with raises(RecipeError, "bad value in override 'data.train.params.x'", "expands to more than"):
        apply_overrides({"data": {}}, [f"data.train.params.x={value}"])


def test_override_value_depth():
    with raises(RecipeError, "bad value in override 'train.steps'", "nested deeper"):
        apply_overrides({}, ["train.steps=" + "[" * 200 + "]" * 200])


def test_ablate_swap_value_bomb():
    with raises(AblationError, "bad value in swap 'model.cls_loss'", "nested deeper"):
        parse_swaps(["model.cls_loss=" + "[" * 200 + "]" * 200])


@pytest.mark.parametrize(
    "doc",
    ["a: 1", "a: [1, 2, {b: c}]", "x: &x {y: 1}\nz: *x", "base: &b {lr: 0.1}\nopt: {<<: *b, momentum: 0.9}", "", "- 1\n- 2"],
)
def test_bounded_loader_reads_what_safe_load_reads(doc):
    assert safe_load_yaml(doc) == yaml.safe_load(doc)


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_is_within_the_limits(name):
    assert load_recipe(name, validate=False).name == name


def test_saved_recipe_of_a_bomb_is_never_written(tmp_path):
    """Recipe.to_yaml (what lossreg train writes) never sees an unbounded structure: loading refuses it first."""
    with pytest.raises(RecipeError):
        load_recipe(_bomb_recipe(tmp_path, RECIPE_HEAD + "".join("      " + ln + "\n" for ln in yaml_alias_bomb().splitlines())))


# --------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("depth", [65, 5_000, 200_000])
def test_config_json_nesting(tmp_path, depth):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"a": ' + "[" * depth + "]" * depth + "}")
    (folder / "model.safetensors").write_bytes(b"")
    with raises(HubError, "config.json", "nested deeper than 64 levels"):
        lossreg.create_model(f"local-dir:{folder}")


@pytest.mark.parametrize("depth", [100, 300_000])
def test_coco_json_nesting(tmp_path, depth):
    path = tmp_path / "ann.json"
    path.write_text('{"images": [], "categories": [], "annotations": [' + "[" * depth + "]" * depth + "]}")
    from lossreg.data import read_coco

    with raises(ValueError, "ann.json", "nested deeper than 64 levels"):
        read_coco(path, tmp_path)


@pytest.mark.parametrize("doc", ['{"a": [1, {"b": null}]}', "[]", '"x"', "3"])
def test_bounded_json_reads_what_json_reads(doc):
    assert load_json(doc) == json.loads(doc)


# --------------------------------------------------------------------------- model sizes


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "tiny"
    save_pretrained(tiny_model(), folder)
    return folder


def _with_model_args(saved_tiny, tmp_path, **changes):
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(saved_tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    for dotted, value in changes.items():
        node = config["model_args"]
        *keys, last = dotted.split("__")
        for key in keys:
            node = node[key]
        node[last] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "change,message",
    [
        ({"num_classes": 2_000_000_000}, "num_classes=2000000000 is above lossreg's limit of 100000"),
        ({"head__feat_channels": 200_000}, "feat_channels=200000 is above lossreg's limit of 4096"),
        ({"neck__out_channels": 200_000}, "out_channels=200000 is above lossreg's limit of 4096"),
        ({"head__stacked_convs": 10_000}, "stacked_convs=10000 is above lossreg's limit of 64"),
    ],
)
def test_config_json_asking_for_terabytes(saved_tiny, tmp_path, change, message):
    folder = _with_model_args(saved_tiny, tmp_path, **change)
    start = time.perf_counter()
    with raises(HubError, "config.json's model_args do not build a detector", message):
        lossreg.create_model(f"local-dir:{folder}")
    assert time.perf_counter() - start < 30  # refused before any large allocation


@pytest.mark.parametrize("num_classes", [2_000_000_000, 100_001])
def test_create_model_num_classes_limit(num_classes):
    with raises(InputLimitError, f"num_classes={num_classes} is above lossreg's limit of 100000"):
        lossreg.create_model("atss", num_classes=num_classes, **TINY)


@pytest.mark.parametrize(
    "head,message",
    [
        ({"feat_channels": 4097}, "feat_channels=4097 is above lossreg's limit of 4096"),
        ({"feat_channels": 200_000}, "feat_channels=200000"),
        ({"stacked_convs": 65}, "stacked_convs=65 is above lossreg's limit of 64"),
        ({"feat_channels": 0}, "feat_channels must be >= 1"),
        ({"stacked_convs": -1}, "stacked_convs must be >= 0"),
    ],
)
def test_head_size_limits(head, message):
    with raises(ValueError, message):
        tiny_model("atss", head=head)


def test_classification_output_too_large():
    # 9 anchors x 100000 classes x 4096 channels x 3 x 3: 33 billion weights
    with raises(InputLimitError, "classification output", "lower num_classes or feat_channels"):
        tiny_model("retinanet", num_classes=100_000, head={"feat_channels": 4096})


def test_fpn_out_channels_limit():
    with raises(InputLimitError, "fpn: out_channels=100000"):
        lossreg.create_model("atss", num_classes=3, backbone="test_resnet", neck={"name": "fpn", "out_channels": 100_000},
                             head=TINY_HEADS["atss"])


@pytest.mark.parametrize("key", ["fc_channels", "conv_channels"])
def test_roi_head_channel_limits(key):
    with raises(InputLimitError, f"roi_box: {key}=100000"):
        lossreg.create_model("faster_rcnn", num_classes=3, **TINY, roi_head={"name": "roi_box", key: 100_000})


def test_image_size_limit():
    with raises(RecipeError, "data.image_size", "must be <= 16384"):
        load_recipe({"model": {"arch": "atss"}, "data": {"image_size": 1_000_000}})


@pytest.mark.parametrize("value", [True, 2.5, "3"])
def test_count_must_be_an_int(value):
    with raises(ValueError, "head: width must be an int"):
        check_count("head", "width", value, 10)


def test_numel_limit_names_shape_and_size():
    with raises(InputLimitError, "out", "100000 x 100000", "GiB"):
        check_numel("x", "out", (100_000, 100_000), "make it smaller")
    check_numel("x", "out", (1000, 1000), "fine")


def test_within_the_limits_builds_and_runs():
    model = tiny_model("atss", num_classes=7).eval()
    with torch.no_grad():
        assert len(model(torch.rand(1, 3, 64, 64))) == 1
