"""push_to_hub / hf-hub: / name.tag over real HTTP: the loopback Hub, the olah mirror, offline mode."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub import file_download as hf_file_download
from huggingface_hub.utils import _http as hf_http

import lossreg
from lossreg import _factory
from lossreg._registry import models as _models
from lossreg.hub import HubError, push_folder, push_to_hub, save_pretrained

REPO = "lossreg-tests/tiny-atss"
TINY = {
    "backbone": "test_resnet",
    "neck": {"name": "fpn", "out_channels": 32},
    "head": {"name": "atss", "feat_channels": 32, "stacked_convs": 1},
    "num_classes": 3,
    "label_names": ["ellipse", "rectangle", "triangle"],
    "cls_loss": "hcra_c",
}


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = lossreg.create_model("atss_resnet18_fpn", **TINY)
    with torch.no_grad():
        model.head.cls_out.bias.fill_(2.0)  # detections exist, so comparisons compare something
    return model.eval()


def outputs(model: torch.nn.Module) -> list[dict[str, torch.Tensor]]:
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model.eval()(images)


def assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    oa, ob = outputs(a), outputs(b)
    assert len(oa[0]["boxes"]) > 0
    for da, db in zip(oa, ob):
        assert all(torch.equal(da[k], db[k]) for k in ("boxes", "scores", "labels"))


def test_push_then_load_identical(hub_server):
    model = tiny_model()
    info = push_to_hub(model, REPO, metrics={"AP": 0.4, "AP50": 0.7}, commit_message="first model")
    assert info.oid and REPO in info.commit_url
    files = set(hub_server.api().list_repo_files(REPO))
    assert {"config.json", "model.safetensors", "recipe.yaml", "README.md"} <= files
    writes = [r for r in hub_server.server.records if r.is_write]
    assert writes and all(r.authorization == f"Bearer {hub_server.token}" for r in writes)
    assert any("lossreg/" in r.headers.get("user-agent", "") for r in writes)  # library_name reaches the Hub
    card = ModelCard.load(REPO)  # downloaded by the client and parsed by it
    assert card.data.library_name == "lossreg" and "hcra_c" in card.data.tags
    assert f'create_model("hf-hub:{REPO}")' in card.text  # the usage snippet names the repository
    loaded = lossreg.create_model(f"hf-hub:{REPO}")
    assert_same(model, loaded)
    config = json.loads(hub_server.server.read_file(REPO, "config.json"))
    assert config["pretrained_cfg"]["hf_hub_id"] == REPO and config["lossreg"]["metrics"]["AP50"] == 0.7
    assert loaded.pretrained_cfg["hf_hub_id"] == REPO


def test_revisions_pin_weights(hub_server):
    first, second = tiny_model(0), tiny_model(1)
    sha1 = push_to_hub(first, REPO).oid
    push_to_hub(second, REPO, commit_message="retrained")
    assert_same(first, lossreg.create_model(f"hf-hub:{REPO}@{sha1}"))
    assert_same(second, lossreg.create_model(f"hf-hub:{REPO}"))
    push_to_hub(first, REPO, revision="v1")  # a new branch
    assert_same(first, lossreg.create_model(f"hf-hub:{REPO}@v1"))
    with pytest.raises(HubError, match="revision 'nope' not found"):
        lossreg.create_model(f"hf-hub:{REPO}@nope")


def test_finetune_from_hub_with_label_names(hub_server):
    model = tiny_model()
    push_to_hub(model, REPO)
    tuned = lossreg.create_model(f"hf-hub:{REPO}", label_names=["rectangle", "cell"])
    assert tuned.num_classes == 2
    assert torch.equal(tuned.head.cls_out.weight[0], model.head.cls_out.weight[1])


def test_offline_cached_loads_uncached_fails(hub_server, hf_offline):
    model = tiny_model()
    push_to_hub(model, REPO)
    lossreg.create_model(f"hf-hub:{REPO}")  # fills the cache
    hf_offline()
    hub_server.server.clear_requests()
    assert_same(model, lossreg.create_model(f"hf-hub:{REPO}"))
    assert hub_server.server.requests == []  # served from the cache without a request
    with pytest.raises(HubError, match=r"HF_HUB_OFFLINE=1 .* not in the Hugging Face cache"):
        lossreg.create_model("hf-hub:lossreg-tests/never-downloaded")


def test_unreachable_hub_and_not_cached(hub_server, monkeypatch):
    hub_server.server.stop()
    monkeypatch.setattr(hf_http, "time", SimpleNamespace(sleep=lambda seconds: None))
    with pytest.raises(HubError, match="cannot reach the Hub at http://127.0.0.1"):
        lossreg.create_model(f"hf-hub:{REPO}")


def test_missing_repo_and_non_lossreg_repo(hub_server):
    with pytest.raises(HubError, match="no such repository"):
        lossreg.create_model("hf-hub:lossreg-tests/absent")
    hub_server.api().create_repo("lossreg-tests/plain")
    hub_server.server.commit("lossreg-tests/plain", {"README.md": "# not a model\n"})
    with pytest.raises(HubError, match="not a lossreg model"):
        lossreg.create_model("hf-hub:lossreg-tests/plain")


def test_truncated_download_gives_no_model(hub_server, monkeypatch):
    push_to_hub(tiny_model(), REPO)
    monkeypatch.setattr(hf_file_download, "time", SimpleNamespace(sleep=lambda seconds: None))
    hub_server.server.truncate_downloads("/model.safetensors", keep=2000, times=None)
    with pytest.raises(HubError, match="download failed"):
        lossreg.create_model(f"hf-hub:{REPO}")
    hub_server.server._truncations.clear()
    hub_server.server.truncate_downloads("/model.safetensors", keep=2000, times=1, mode="short")
    with pytest.raises(HubError, match="download failed"):
        lossreg.create_model(f"hf-hub:{REPO}")


def test_incompatible_config_fails_before_weights_download(hub_server):
    folder = save_pretrained(tiny_model(), hub_server.hf_home / "out")
    config = json.loads((folder / "config.json").read_text())
    config["lossreg"]["components"]["head.cls_loss"]["name"] = "future_loss"
    hub_server.api().create_repo(REPO)
    hub_server.server.commit(REPO, {"config.json": json.dumps(config), "model.safetensors": (folder / "model.safetensors").read_bytes()})
    hub_server.server.clear_requests()
    with pytest.raises(HubError, match="'future_loss'"):
        lossreg.create_model(f"hf-hub:{REPO}")
    assert not any(path.endswith("model.safetensors") for method, path in hub_server.server.requests if method == "GET")


@pytest.fixture
def tag(monkeypatch):
    """A registered pretrained tag pointing at the test repository."""
    from lossreg.detectors._models import register_arch_models

    lossreg.list_models()  # the built-in entry points are registered before the copies below
    for name in ("_MODELS", "_PRETRAINED", "_DEFAULT_TAGS"):
        monkeypatch.setattr(_models, name, dict(getattr(_models, name)))
    register_arch_models("atss", ("test_resnet",))  # atss_test_resnet_fpn, the tiny models' entry point
    cfg = lossreg.PretrainedCfg(model="atss_test_resnet_fpn", tag="unittest", hf_hub_id=REPO, num_classes=3)
    lossreg.register_pretrained(cfg, default=True)
    return cfg


def test_pretrained_tag_resolves_through_the_hub(hub_server, tag):
    model = tiny_model()
    push_to_hub(model, REPO)
    assert lossreg.list_pretrained("*unittest") == ["atss_test_resnet_fpn.unittest"]
    loaded = lossreg.create_model("atss_test_resnet_fpn.unittest", pretrained=True)
    assert_same(model, loaded)
    assert loaded.pretrained_cfg["tag"] == "unittest"
    assert_same(model, lossreg.create_model("atss_test_resnet_fpn", pretrained=True))  # the default tag
    with pytest.raises(HubError, match="backbone 'test_resnet', not 'resnet50'"):
        lossreg.create_model("atss_test_resnet_fpn.unittest", pretrained=True, backbone="resnet50")
    with pytest.raises(HubError, match="holds a 'atss' detector, not 'fcos'"):
        _factory.load_pretrained(tag, arch="fcos")


def test_push_folder_refuses_broken_folders(hub_server, tmp_path):
    folder = save_pretrained(tiny_model(), tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(HubError, match="truncated"):
        push_folder(folder, REPO)
    with pytest.raises(HubError, match="holds no saved model"):
        push_folder(tmp_path, REPO)
    assert not hub_server.api().repo_exists(REPO)


def test_olah_mirror_serves_a_published_model(olah_server, tmp_path):
    model = tiny_model()
    folder = save_pretrained(model, tmp_path / "m")
    repo = "lossreg-tests/olah-model"
    olah_server.publish(repo, {p.name: p.read_bytes() for p in folder.iterdir()})
    assert_same(model, lossreg.create_model(f"hf-hub:{repo}@main"))
    assert_same(model, lossreg.create_model(f"hf-hub:{repo}"))


def test_train_push_download_identical(hub_server, tmp_path, monkeypatch):
    """The issue's round trip: train 3 iterations, `lossreg push`, download into a fresh cache."""
    from lossreg.cli import main as cli
    from lossreg.engine import Trainer
    from lossreg.engine.runs import load_model

    monkeypatch.setenv("LOSSREG_CACHE", str(tmp_path / "cache"))
    recipe = {
        "name": "tiny",
        "model": {"arch": "atss", "backbone": "test_resnet", "cls_loss": "hcra_c", "assigner": "eatss",
                  "neck": {"name": "fpn", "out_channels": 32}, "head": {"name": "atss", "feat_channels": 32, "stacked_convs": 1}},
        "data": {"train": {"format": "synthetic", "params": {"num_images": 6, "image_size": 64}},
                 "val": {"format": "synthetic", "params": {"split": "val", "num_images": 2, "image_size": 64}},
                 "image_size": 64},
        "train": {"epochs": 1, "batch_size": 2, "warmup_iters": 1},
        "eval": {"batch_size": 2},
    }
    Trainer(lossreg.load_recipe(recipe), output_dir=tmp_path / "run").train()
    assert cli(["push", str(tmp_path / "run"), REPO]) == 0
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "fresh-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "fresh-cache"))
    downloaded = lossreg.create_model(f"hf-hub:{REPO}")
    assert (tmp_path / "fresh-cache").is_dir()  # really downloaded, into the new cache
    trained = load_model(tmp_path / "run")
    assert downloaded.recipe.train.epochs == 1 and downloaded.label_names == trained.label_names
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = trained.eval()(images), downloaded.eval()(images)
    for da, db in zip(a, b):
        assert all(torch.equal(da[k], db[k]) for k in ("boxes", "scores", "labels"))
    for key, value in trained.state_dict().items():
        assert torch.equal(downloaded.state_dict()[key], value), key
