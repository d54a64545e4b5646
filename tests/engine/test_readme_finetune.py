"""README's "Fine-tuning on your own COCO data": its three recipe lines train as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import lossreg
from lossreg.engine import Trainer

ROOT = Path(__file__).resolve().parents[2]
COCO = ROOT.parent / "shared" / "data" / "coco128-permissive"


def readme_recipe() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Fine-tuning on your own COCO data", 1)[1]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


def test_readme_recipe_has_three_lines():
    assert len(readme_recipe().strip().splitlines()) == 3


@pytest.mark.skipif(not (COCO / "instances.json").is_file(), reason="../shared/data/coco128-permissive is not here")
def test_readme_finetune_recipe_trains_on_coco(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOSSREG_CACHE", str(tmp_path / "cache"))
    # what the quick start leaves in runs/quickstart/model (untrained weights do for this test)
    lossreg.save_pretrained(lossreg.create_model("quickstart"), "runs/quickstart/model")
    text = readme_recipe().replace("my/train.json", str(COCO / "instances.json"))
    text = text.replace("my/val.json", str(COCO / "instances.json")).replace("my/images", str(COCO / "images"))
    Path("my_data.yaml").write_text(text)
    recipe = lossreg.load_recipe(
        "my_data.yaml",
        overrides=["data.train.max_images=2", "data.val.max_images=2", "data.image_size=128", "train.epochs=1",
                   "train.batch_size=2", "train.warmup_iters=1", "eval.batch_size=2"],
    )
    assert recipe.model.arch == "atss" and recipe.data.train.format == "coco"
    metrics = Trainer(recipe, output_dir=tmp_path / "runs" / "mine").train()
    coco_names = {c["name"] for c in yaml.safe_load((COCO / "instances.json").read_text())["categories"]}
    assert set(metrics["per_class"]) <= coco_names and len(metrics["per_class"]) > 0
