"""End to end: train the quick start briefly, publish it to the (loopback) Hub under its pretrained
tag's repository, and fine-tune it on BCCD with recipes/bccd_atss_r18_finetune.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lossreg
from lossreg.cli import main as cli
from lossreg.engine import Trainer

BCCD = Path(__file__).resolve().parents[3] / "shared" / "data" / "bccd" / "BCCD"
SMALL_TRAIN = [
    "train.epochs=1",
    "train.batch_size=2",
    "train.warmup_iters=1",
    "train.log_interval=1",
    "eval.batch_size=2",
]


@pytest.mark.skipif(not BCCD.is_dir(), reason="../shared/data/bccd is not on this machine")
def test_quickstart_published_then_finetuned_on_bccd(hub_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSREG_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the recipe root ../shared/data/bccd/BCCD is relative to the checkout
    quick = lossreg.load_recipe(
        "quickstart",
        overrides=[*SMALL_TRAIN, "data.train.params.num_images=4", "data.val.params.num_images=2"],
    )
    Trainer(quick, output_dir=tmp_path / "quick").train()
    repo = lossreg.get_pretrained_cfg("atss_resnet18_fpn", "synthetic").hf_hub_id
    assert cli(["push", str(tmp_path / "quick"), repo, "--message", "quick-start model"]) == 0
    published = lossreg.create_model("atss_resnet18_fpn.synthetic", pretrained=True)
    assert published.label_names == ["ellipse", "rectangle", "triangle", "cross"]

    hub_server.server.clear_requests()
    recipe = lossreg.load_recipe(
        "bccd_atss_r18_finetune",
        overrides=[*SMALL_TRAIN, "data.train.max_images=4", "data.val.max_images=2", "data.image_size=128"],
    )
    assert recipe.model.weights == "atss_resnet18_fpn.synthetic"
    start = lossreg.create_model("bccd_atss_r18_finetune")  # the recipe's model at step 0
    for key, value in published.state_dict().items():
        if key.startswith(("backbone.", "neck.")) or "reg_out" in key:
            assert torch.equal(start.state_dict()[key], value), key  # kept from the published model
    assert start.head.cls_out.weight.shape[0] == 3 and start.label_names is None
    metrics = Trainer(recipe, output_dir=tmp_path / "bccd").train()
    assert metrics is not None and set(metrics["per_class"]) == {"Platelets", "RBC", "WBC"}
    config = json.loads((tmp_path / "bccd" / "model" / "config.json").read_text())
    assert config["num_classes"] == 3 and config["lossreg"]["components"]["head.assigner"]["name"] == "atss"
    fetched = [path for method, path in hub_server.server.requests if method == "GET"]
    assert not any(p.endswith("model.safetensors") for p in fetched)  # the published weights came from the cache
