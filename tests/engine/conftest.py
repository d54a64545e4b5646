"""A tiny recipe (test_resnet backbone, slim FPN and head, 64 px synthetic images) for engine tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """One cache folder for the synthetic sets of every engine test (generated once)."""
    return tmp_path_factory.mktemp("synthetic")


def make_recipe(root: Path, **sections: Any) -> dict[str, Any]:
    """The tiny recipe as a dict; ``sections`` (``train={...}``, ``model={...}``) update its sections key by key."""
    recipe: dict[str, Any] = {
        "name": "tiny",
        "model": {
            "arch": "atss",
            "backbone": "test_resnet",
            "neck": {"name": "fpn", "out_channels": 32},
            "head": {"name": "atss", "feat_channels": 32, "stacked_convs": 1},
        },
        "data": {
            "train": {"format": "synthetic", "root": str(root), "params": {"num_images": 6, "image_size": 64}},
            "val": {"format": "synthetic", "root": str(root), "params": {"split": "val", "num_images": 3, "image_size": 64}},
            "image_size": 64,
            "augment": [{"name": "HorizontalFlip", "p": 0.5}],
        },
        # fp32 pinned: train.amp's default (auto) is bf16 on CPUs with native bf16, and these tests
        # compare exact values across runs and loops on whichever machine runs them
        "train": {"epochs": 2, "batch_size": 2, "warmup_iters": 2, "schedule": "cosine", "log_interval": 1,
                  "amp": "fp32"},
        "eval": {"batch_size": 3},
    }
    out = copy.deepcopy(recipe)
    for key, value in sections.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) else value
    return out


@pytest.fixture
def tiny_recipe(synthetic_root):
    """``tiny_recipe(**sections) -> dict`` (see :func:`make_recipe`)."""

    def factory(**sections: Any) -> dict[str, Any]:
        return make_recipe(synthetic_root, **sections)

    return factory
