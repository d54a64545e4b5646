"""Recipes: loading by name and path, validation errors with YAML paths, overrides, round trip."""

from __future__ import annotations

import textwrap
from typing import Literal

import pytest
import yaml
from torch import nn

import lossreg
from lossreg.recipe import RecipeError, apply_overrides, find_recipe, load_recipe, save_recipe


class _Cls(nn.Module):
    """Toy classification loss.

    Paper: none.
    """

    task = "cls"

    def __init__(self, theta: float = 5.0, rci_mode: Literal["consistent", "paper"] = "consistent") -> None:
        super().__init__()


class _Reg(nn.Module):
    """Toy regression loss."""

    task = "reg"

    def __init__(self, gamma: float | None = 1.2) -> None:
        super().__init__()


class _Assigner:
    """Toy assigner."""

    def __init__(self, topk: int = 9, extra: int = 3) -> None:
        pass


@pytest.fixture
def parts(temp_register, dummy_detector):
    temp_register("loss", _Cls, name="toyhcra_c")
    temp_register("loss", _Reg, name="toyhcra_r")
    temp_register("assigner", _Assigner, name="toyeatss")
    return dummy_detector


def _recipe(tmp_path, body: str, name: str = "r"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


GOOD = """
description: a test recipe
model:
  arch: _test_det
  backbone: resnet18
  cls_loss: {name: toyhcra_c, theta: 4.0}
  reg_loss: toyhcra_r
  assigner: {name: toyeatss, extra: 2}
data:
  image_size: [256, 320]
  augment:
    - {name: HorizontalFlip, p: 0.5}
train:
  epochs: 2
  optimizer: {name: adamw, lr: 0.0001, weight_decay: 0.05}
"""


def test_load_by_path_and_round_trip(tmp_path, parts):
    recipe = load_recipe(_recipe(tmp_path, GOOD))
    assert recipe.name == "r" and recipe.model.cls_loss.params == {"theta": 4.0}
    assert recipe.model.reg_loss.name == "toyhcra_r" and recipe.data.image_size == (256, 320)
    assert recipe.train.optimizer.name == "adamw" and recipe.train.batch_size == 8  # default filled
    assert load_recipe(recipe.to_dict()) == recipe
    assert load_recipe(yaml.safe_load(recipe.to_yaml())) == recipe
    saved = save_recipe(recipe, tmp_path / "out" / "saved.yaml")
    assert load_recipe(saved) == recipe
    assert not list((tmp_path / "out").glob("*.tmp"))  # atomic write leaves no temp file


def test_component_kwargs(tmp_path, parts):
    kwargs = load_recipe(_recipe(tmp_path, GOOD)).model.component_kwargs()
    assert kwargs["cls_loss"] == {"name": "toyhcra_c", "theta": 4.0}
    assert kwargs["reg_loss"] == "toyhcra_r" and kwargs["backbone"] == "resnet18"
    assert "balancer" not in kwargs


@pytest.mark.parametrize(
    "edit,message",
    [
        ("model.cls_loss.name=toyhcra_x", "model.cls_loss.name: unknown loss 'toyhcra_x'; did you mean 'toyhcra_c'"),
        ("model.cls_loss=toyhcra_r", "model.cls_loss.name: 'toyhcra_r' is a regression loss"),
        ("model.reg_loss=toyhcra_c", "model.reg_loss.name: 'toyhcra_c' is a classification loss"),
        ("model.cls_loss.thetaa=3", "model.cls_loss.thetaa: loss 'toyhcra_c' has no parameter 'thetaa'; did you mean 'theta'"),
        ("model.cls_loss.rci_mode=other", "model.cls_loss.rci_mode: loss 'toyhcra_c': parameter 'rci_mode'"),
        ("model.assigner.extra=x", "model.assigner.extra: assigner 'toyeatss': parameter 'extra' expects int"),
        ("model.arch=_test_dex", "model.arch: unknown detector '_test_dex'; did you mean '_test_det'"),
        ("train.epochs=many", "train.epochs: expected int, got str 'many'"),
        ("train.epochs=0", "train.epochs: must be >= 1"),
        ("train.optimizer.name=adamx", "train.optimizer.name: unknown optimizer 'adamx'; did you mean 'adamax'"),
        ("train.epoch=3", "train.epoch: unknown field; did you mean 'epochs'"),
        ("data.image_size=[1, 2, 3]", "data.image_size: expected"),
        ("data.augment=[{name: HorizontalFlop}]", "data.augment[0].name: unknown albumentations transform 'HorizontalFlop'; did you mean 'HorizontalFlip'"),
        ("data.train.format=coco", "data.train: a coco dataset needs 'ann_file'"),
        ("model.weights=owner/repo", "model.weights: model name 'owner/repo' looks like a repository"),
    ],
)
def test_errors_name_the_yaml_path(tmp_path, parts, edit, message):
    with pytest.raises(RecipeError) as exc:
        load_recipe(_recipe(tmp_path, GOOD), overrides=[edit])
    assert message in str(exc.value)


def test_overrides(tmp_path, parts):
    path = _recipe(tmp_path, GOOD)
    r = load_recipe(path, overrides=["train.epochs=24", "model.cls_loss.rci_mode=paper", "train.steps=[16, 22]"])
    assert r.train.epochs == 24 and r.train.steps == (16, 22)
    assert r.model.cls_loss.params == {"theta": 4.0, "rci_mode": "paper"}
    # a parameter of a component given by bare name turns it into a mapping
    r = load_recipe(path, overrides=["model.reg_loss.gamma=null"])
    assert r.model.reg_loss.params == {"gamma": None}
    # swapping a component by name drops the old one's parameters
    r = load_recipe(path, overrides=["model.assigner=toyeatss"])
    assert r.model.assigner.params == {}
    assert r.with_overrides(["train.seed=3"]).train.seed == 3
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(RecipeError, match="not a mapping"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])


def test_base_inheritance(tmp_path, parts):
    _recipe(tmp_path, GOOD, name="parent")
    child = _recipe(
        tmp_path,
        """
        base: parent.yaml
        model:
          cls_loss: {theta: 6.0}
          assigner: {name: toyeatss}
        train: {epochs: 5}
        """,
        name="child",
    )
    r = load_recipe(child)
    assert r.name == "child" and r.description == ""
    assert r.model.cls_loss.params == {"theta": 6.0} and r.model.cls_loss.name == "toyhcra_c"
    assert r.model.assigner.params == {"extra": 2}  # same component: params merged
    assert r.train.epochs == 5 and r.train.optimizer.name == "adamw"


def test_base_cycle(tmp_path):
    _recipe(tmp_path, "base: b.yaml\n", name="a")
    _recipe(tmp_path, "base: a.yaml\n", name="b")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    "body,message",
    [
        ("model: [1, 2\n", "malformed YAML at line"),
        ("", "empty"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("description: x\n", "model: required field is missing"),
        ("model: {backbone: resnet18}\n", "model.arch: required field is missing"),
        ("model: {arch: _test_det, cls_loss: {theta: 1}}\n", "model.cls_loss: a component mapping needs a 'name' key"),
    ],
)
def test_malformed_files(tmp_path, parts, body, message):
    with pytest.raises(RecipeError) as exc:
        load_recipe(_recipe(tmp_path, body))
    assert message in str(exc.value)
    assert "r.yaml" in str(exc.value)  # names the file


def test_missing_recipe_suggests():
    with pytest.raises(RecipeError, match="no recipe named 'quickstat'; did you mean 'quickstart'"):
        find_recipe("quickstat")
    with pytest.raises(RecipeError, match="does not exist"):
        find_recipe("nowhere/x.yaml")


def test_recipe_path_env(tmp_path, monkeypatch, parts):
    _recipe(tmp_path, GOOD, name="my_env_recipe")
    monkeypatch.setenv("LOSSREG_RECIPE_PATH", str(tmp_path))
    assert "my_env_recipe" in lossreg.list_recipes()
    assert load_recipe("my_env_recipe").name == "my_env_recipe"


@pytest.mark.parametrize("name", lossreg.list_recipes())
def test_shipped_recipes_parse_and_round_trip(name):
    recipe = load_recipe(name, validate=False)
    assert recipe.name == name and recipe.description
    assert load_recipe(recipe.to_dict(), validate=False) == recipe


@pytest.mark.parametrize("name", lossreg.list_recipes())
def test_shipped_recipes_validate_against_the_registry(name):
    recipe = load_recipe(name)
    assert recipe.model.arch in lossreg.list_components("detector")


def test_shipped_recipes_exist():
    assert {"quickstart", "atss_r50_hcral_eatss"} <= set(lossreg.list_recipes())


def test_base_dataset_of_another_format_is_replaced():
    r = load_recipe("bccd_atss_r18_finetune")  # base: quickstart, whose splits are synthetic
    assert r.data.train.format == "voc" and r.data.train.params == {} and r.data.train.split == "train"
    assert r.model.assigner.name == "atss" and r.model.num_classes == 3  # the model section is inherited
    assert r.model.neck.params == {"out_channels": 64, "extra": "none"}
    same = load_recipe("quickstart", overrides=["data.train.params.seed=5"])
    assert dict(same.data.train.params) == {**load_recipe("quickstart").data.train.params, "seed": 5}
