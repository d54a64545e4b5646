"""A head with a new component slot is one file: recipes, detectors, config.json and loading follow it.

The test defines, in this file only, a head that takes an extra regression loss in a new
``aux_loss`` slot, and checks every place that used to spell the slot names by hand.
"""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch

import lossreg
from lossreg import Slot
from lossreg.heads.atss import ATSSHead
from lossreg.hub import save_pretrained

TINY = {"backbone": "test_resnet", "neck": {"name": "fpn", "out_channels": 32}, "num_classes": 3}


class AuxHead(ATSSHead):
    """ATSS head with an auxiliary regression loss on the positives (a test-only head).

    Paper: none.
    """

    slots: ClassVar[dict[str, Slot]] = {**ATSSHead.slots, "aux_loss": Slot("loss", "reg")}

    def __init__(self, *args, aux_loss="l1", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.aux_loss = lossreg.build_component("loss", aux_loss, require_task="reg")


@pytest.fixture
def aux_head(temp_register):
    return temp_register("head", AuxHead, name="_aux_atss")


def test_declared_slot_is_a_recipe_field_and_a_detector_keyword(aux_head):
    assert lossreg.component_slots()["aux_loss"] == Slot("loss", "reg")
    recipe = lossreg.load_recipe(
        {"model": {"arch": "atss", "head": {"name": aux_head, "feat_channels": 32, "stacked_convs": 1},
                   "aux_loss": {"name": "smooth_l1", "beta": 0.5}, **TINY}}
    )
    assert recipe.model.aux_loss.name == "smooth_l1" and recipe.model.cls_loss is None
    assert lossreg.load_recipe(recipe.to_dict()) == recipe  # the slot round-trips through YAML
    model = lossreg.create_model("atss", **recipe.model.component_kwargs())
    assert type(model.head.aux_loss).__name__ == "SmoothL1Loss" and model.head.aux_loss.beta == 0.5


def test_declared_slot_is_checked_like_the_others(aux_head):
    head = {"name": aux_head, "feat_channels": 32, "stacked_convs": 1}
    with pytest.raises(lossreg.RecipeError, match=r"model\.aux_loss\.name: 'focal' is a classification loss"):
        lossreg.load_recipe({"model": {"arch": "atss", "head": head, "aux_loss": "focal", **TINY}})
    with pytest.raises(TypeError, match=r"'aux_los'; did you mean 'aux_loss'\?"):
        lossreg.create_model("atss", head=head, aux_los="giou", **TINY)
    with pytest.raises(TypeError, match="unexpected keyword argument"):  # the stock atss head has no such slot
        lossreg.create_model("atss", aux_loss="giou", **TINY)


def test_declared_slot_reaches_config_and_fresh_state_on_load(aux_head, tmp_path):
    torch.manual_seed(0)
    model = lossreg.create_model(
        "atss", head={"name": aux_head, "feat_channels": 32, "stacked_convs": 1}, aux_loss="giou", **TINY
    )
    save_pretrained(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["lossreg"]["components"]["head.aux_loss"]["name"] == "giou"
    loaded = lossreg.create_model(f"local-dir:{tmp_path / 'm'}", aux_loss="l1")  # swapped on load
    assert type(loaded.head.aux_loss).__name__ == "L1Loss"
    for key, value in model.state_dict().items():
        if not key.startswith("head.aux_loss."):
            torch.testing.assert_close(loaded.state_dict()[key], value)
