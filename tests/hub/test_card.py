"""The model card's Hub metadata: dataset ids where the Hub has one, the split evaluated, metric units, ModelCardData."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import ModelCard

import lossreg
from lossreg.hub import save_pretrained
from lossreg.hub.card import dataset_entry

METRICS = {"AP": 0.3642, "AP50": 0.55, "per_class": {"a": 0.3, "b": 0.4, "c": 0.4}}


def _model():
    torch.manual_seed(0)
    return lossreg.create_model("atss_resnet18_fpn", backbone="test_resnet", num_classes=3, label_names=["a", "b", "c"],
                                neck={"name": "fpn", "out_channels": 32},
                                head={"name": "atss", "feat_channels": 32, "stacked_convs": 1})


def _recipe(data):
    return lossreg.load_recipe({"name": "t", "model": {"arch": "atss", "backbone": "test_resnet"}, "data": data})


def _card(tmp_path, **kwargs):
    folder = save_pretrained(_model(), tmp_path / "m", metrics=METRICS, **kwargs)
    return ModelCard.load(folder / "README.md")  # parsed back by huggingface_hub


COCO = {"train": {"format": "coco", "root": "coco/train2017", "ann_file": "coco/annotations/instances_train2017.json"},
        "val": {"format": "coco", "root": "coco/val2017", "ann_file": "coco/annotations/instances_val2017.json"}}


@pytest.mark.parametrize(
    ("data", "kwargs", "hub_id", "name", "split"),
    [
        (COCO, {}, "detection-datasets/coco", "COCO 2017", "val"),
        ({"val": {"format": "voc", "root": "data/BCCD", "split": "val"}}, {}, None, "BCCD", "val"),
        ({"val": {"format": "synthetic", "params": {"split": "test"}}}, {}, None, "lossreg-synthetic-shapes", "test"),
        (None, {"dataset": "coco"}, "detection-datasets/coco", "COCO 2017", "val"),  # converted weights
        (None, {"dataset": "me/cells", "dataset_split": "test"}, "me/cells", "cells", "test"),
    ],
    ids=["coco-files", "voc-folder", "synthetic-test-split", "dataset=coco", "hub-id"],
)
def test_card_names_the_hub_dataset_and_the_split_evaluated(tmp_path, data, kwargs, hub_id, name, split):
    if data is not None:
        kwargs = {**kwargs, "recipe": _recipe(data)}
    card = _card(tmp_path, **kwargs)
    meta = card.data
    assert meta.datasets == ([hub_id] if hub_id else None)  # only ids that exist on the Hub
    (result_ap, result_50) = meta.eval_results
    assert result_ap.dataset_type == (hub_id or name) and result_ap.dataset_name == name
    assert result_ap.dataset_split == split  # not a hard-coded "validation"
    assert result_ap.task_type == "object-detection"
    # units: percent in the model-index, stated in every metric name and in the text
    assert (result_ap.metric_type, result_ap.metric_value, result_ap.metric_name) == ("mAP", 36.42, "AP (IoU 0.50:0.95), %")
    assert (result_50.metric_value, result_50.metric_name) == (55.0, "AP50, %")
    assert "**in %**" in card.text and "| 36.4 | 55.0 |" in card.text
    if hub_id:
        assert f"https://huggingface.co/datasets/{hub_id}" in card.text


def test_dataset_entry():
    assert dataset_entry("COCO") == {"id": "detection-datasets/coco", "name": "COCO 2017", "split": "val"}
    assert dataset_entry(None) == {"id": None, "name": "custom", "split": None}
    assert dataset_entry("VOC2007", "test") == {"id": None, "name": "VOC2007", "split": "test"}


def test_a_card_without_metrics_has_no_model_index(tmp_path):
    folder = save_pretrained(_model(), tmp_path / "m")
    card = ModelCard.load(folder / "README.md")
    assert card.data.eval_results is None and card.data.library_name == "lossreg"
