"""config.json records what was built (issue 16): each component entry holds the values its module received.

The detector passes build-time values to its components (a head's ``in_channels`` is the
neck's ``out_channels``, ``num_classes``, the post-processing thresholds); the registry keeps
the resolved keyword arguments on every instance it builds (``build_spec``) and the config's
``lossreg.components`` are read from them, so the quick start's config and card say
``in_channels=64``, not the signature's 256. ``pretrained_cfg`` leaves out keys without a
value (timm). Configs written before (signature defaults, null keys) still load.
"""

from __future__ import annotations

import json

import pytest
import torch

import lossreg
from lossreg._factory import build_from_recipe
from lossreg._registry import declared_slots, get_registry
from lossreg.hub import save_pretrained
from lossreg.hub.config import component_entries, component_kind, make_config


@pytest.fixture(scope="module")
def quickstart():
    """The quick start's detector (neck out_channels 64, head feat_channels 64) on the tiny test backbone."""
    torch.manual_seed(0)
    return build_from_recipe("quickstart", backbone="test_resnet", num_classes=3)


def _module(model, key):
    for part in key.split("."):
        model = getattr(model, part)
    return model


def _plain(value):
    return json.loads(json.dumps(value))


def test_quickstart_config_and_card_say_what_the_head_takes(quickstart, tmp_path):
    folder = save_pretrained(quickstart, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    comps = config["lossreg"]["components"]
    first_conv = quickstart.head.cls_tower[0]
    assert first_conv.in_channels == quickstart.neck.out_channels == 64  # what the head was built with
    assert comps["head"]["params"]["in_channels"] == 64
    assert comps["head"]["params"]["num_classes"] == 3 and comps["head"]["params"]["feat_channels"] == 64
    assert comps["neck"]["params"]["in_channels"] == list(quickstart.backbone.channels)
    card = (folder / "README.md").read_text()
    assert "in_channels=64" in card and "in_channels=256" not in card


@pytest.mark.parametrize("arch", ["quickstart", "faster_rcnn"])
def test_every_entry_is_what_its_module_was_built_with(quickstart, arch):
    if arch == "quickstart":
        model = quickstart
    else:
        torch.manual_seed(0)
        model = lossreg.create_model("faster_rcnn_resnet18_fpn", backbone="test_resnet", num_classes=2,
                                     neck={"name": "fpn", "out_channels": 32})
    comps = make_config(model)["lossreg"]["components"]
    slots = declared_slots("head")
    heads = ["rpn_head", "roi_head"] if arch == "faster_rcnn" else ["head"]
    assert set(comps) >= {"neck", *heads, *(f"{h}.cls_loss" for h in heads)}
    for key, entry in comps.items():
        spec = _module(model, key).build_spec  # recorded by the registry when it built the module
        assert entry["name"] == spec["name"], key
        built = {k: v for k, v in spec.items() if k != "name" and not (k in slots and "." not in key)}
        assert entry["params"] == _plain(built), key
        rebuilt = get_registry(component_kind(key)).build(dict(spec))  # the spec builds the same component again
        assert _plain(rebuilt.build_spec) == _plain(spec), key
    if arch == "faster_rcnn":
        assert comps["rpn_head"]["params"]["in_channels"] == comps["roi_head"]["params"]["in_channels"] == 32


def test_without_the_model_the_signature_defaults_fill_in(quickstart):
    """What configs said before: the registry's defaults (the head's in_channels=256)."""
    described = component_entries(quickstart.model_args)
    assert described["head"]["params"]["in_channels"] == 256
    assert described.keys() == component_entries(quickstart.model_args, quickstart).keys()


def test_pretrained_cfg_has_no_null_keys(quickstart):
    pcfg = make_config(quickstart)["pretrained_cfg"]
    assert None not in pcfg.values()
    assert "hf_hub_id" not in pcfg and "tag" not in pcfg and "input_size" not in pcfg
    given = make_config(quickstart, pretrained_cfg={"tag": "synthetic", "license": None}, input_size=128)["pretrained_cfg"]
    assert given["tag"] == "synthetic" and given["input_size"] == [3, 128, 128] and "license" not in given


def test_old_and_new_configs_load(quickstart, tmp_path):
    folder = save_pretrained(quickstart, tmp_path / "new")
    new = lossreg.create_model(f"local-dir:{folder}")
    # a config as written before: signature defaults in the entries, null pretrained_cfg keys
    old = tmp_path / "old"
    old.mkdir()
    for path in folder.iterdir():
        (old / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["lossreg"]["components"] = component_entries(config["model_args"])
    config["pretrained_cfg"].update(hf_hub_id=None, tag=None, input_size=None)
    (old / "config.json").write_text(json.dumps(config))
    loaded = lossreg.create_model(f"local-dir:{old}")
    for model in (new, loaded):
        assert model.head.cls_tower[0].in_channels == 64
        for key, value in quickstart.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
