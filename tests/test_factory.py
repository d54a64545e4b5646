"""create_model's name grammar, model entry points and pretrained tags."""

from __future__ import annotations

import pytest

import lossreg
from lossreg import _factory
from lossreg._factory import ModelName, PretrainedCfg, parse_model_name
from lossreg._registry import models as _models


@pytest.mark.parametrize(
    "name,expected",
    [
        ("atss_resnet50_fpn", ModelName("name", arch="atss_resnet50_fpn")),
        ("atss_resnet18_fpn.bccd", ModelName("name", arch="atss_resnet18_fpn", tag="bccd")),
        ("quickstart", ModelName("name", arch="quickstart")),
        ("hf-hub:owner/repo", ModelName("hf-hub", repo_id="owner/repo")),
        ("hf-hub:owner/my.repo-1@v1.0", ModelName("hf-hub", repo_id="owner/my.repo-1", revision="v1.0")),
        ("local-dir:/tmp/run/model", ModelName("local-dir", path="/tmp/run/model")),
        ("local-dir:relative/dir", ModelName("local-dir", path="relative/dir")),
    ],
)
def test_parse_model_name(name, expected):
    assert parse_model_name(name) == expected


@pytest.mark.parametrize(
    "name,needle",
    [
        ("owner/repo", "hf-hub:owner/repo"),
        ("/abs/path", "local-dir:/abs/path"),
        ("s3:bucket", "hf-hub:"),
        ("hf-hub:noslash", "owner/repo"),
        ("hf-hub:owner/repo@", "revision"),
        ("local-dir:", "folder path"),
        ("a.b.c", "<model>.<tag>"),
        ("", "non-empty"),
    ],
)
def test_parse_model_name_rejects(name, needle):
    with pytest.raises(ValueError) as exc:
        parse_model_name(name)
    assert needle in str(exc.value)


@pytest.fixture
def toy_model():
    calls = []

    def entry(pretrained=False, pretrained_cfg=None, **kwargs):
        calls.append((pretrained, pretrained_cfg, kwargs))
        return ("model", pretrained, pretrained_cfg, kwargs)

    _factory.register_model("_toy_resnet18_fpn")(entry)
    cfg = _factory.register_pretrained(PretrainedCfg("_toy_resnet18_fpn", "demo", hf_hub_id="lossreg/toy"))
    yield calls
    _models._MODELS.pop("_toy_resnet18_fpn")
    _models._PRETRAINED.pop(cfg.name)
    _models._DEFAULT_TAGS.pop("_toy_resnet18_fpn")


def test_create_model_entry_point_and_tags(toy_model):
    assert "_toy_resnet18_fpn" in lossreg.list_models("_toy*")
    assert lossreg.list_pretrained("_toy*") == ["_toy_resnet18_fpn.demo"]
    out = lossreg.create_model("_toy_resnet18_fpn", num_classes=3, cls_loss=None)
    assert out == ("model", False, None, {"num_classes": 3})  # None keywords are dropped
    out = lossreg.create_model("_toy_resnet18_fpn.demo", pretrained=True)
    assert out[1] is True and out[2].hf_hub_id == "lossreg/toy"
    out = lossreg.create_model("_toy_resnet18_fpn", pretrained=True)  # default tag
    assert out[2].tag == "demo"
    with pytest.raises(lossreg.UnknownComponentError, match="pretrained weights '_toy_resnet18_fpn.nope'"):
        lossreg.create_model("_toy_resnet18_fpn.nope")


def test_duplicate_model_refused(toy_model):
    with pytest.raises(ValueError, match="already registered"):
        _factory.register_model("_toy_resnet18_fpn")(lambda **kw: None)


def test_unknown_model_suggests(toy_model):
    with pytest.raises(lossreg.UnknownComponentError) as exc:
        lossreg.create_model("_toy_resnet19_fpn")
    assert "did you mean '_toy_resnet18_fpn'" in str(exc.value)


def test_sources_receive_parsed_names(monkeypatch):
    seen = {}
    monkeypatch.setattr(_factory, "load_hf_hub", lambda parsed, **kw: seen.setdefault("hub", (parsed, kw)))
    monkeypatch.setattr(_factory, "load_local_dir", lambda parsed, **kw: seen.setdefault("dir", (parsed, kw)))
    lossreg.create_model("hf-hub:o/r@main", num_classes=4, label_names=None)
    lossreg.create_model("local-dir:some/dir")
    assert seen["hub"] == (ModelName("hf-hub", repo_id="o/r", revision="main"), {"num_classes": 4})
    assert seen["dir"][0].path == "some/dir"


def test_recipe_names_are_model_names(monkeypatch):
    calls = []
    monkeypatch.setattr(_factory, "build_from_recipe", lambda name, **kw: calls.append((name, kw)) or "built")
    assert lossreg.create_model("quickstart", num_classes=2) == "built"
    assert calls == [("quickstart", {"pretrained": False, "num_classes": 2})]
    assert "quickstart" in lossreg.list_models(include_recipes=True)
    with pytest.raises(ValueError, match="cannot take a pretrained tag"):
        lossreg.create_model("quickstart.sometag")
