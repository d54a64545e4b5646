"""Shared pieces of lossreg's bad-input suite: tiny models, tiny data, and message checks.

Every test of ``tests/robustness`` feeds lossreg something a hostile or careless user
would and asserts either the correct result or the specific one-line error: a substring
naming what was wrong (the field, file or argument) and one saying how to fix it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import lossreg

#: A detector small enough for a CPU test: timm's test_resnet, a 32-channel FPN, a one-conv head.
TINY: dict[str, Any] = {
    "backbone": "test_resnet",
    "neck": {"name": "fpn", "out_channels": 32},
}
TINY_HEADS: dict[str, dict[str, Any]] = {
    "atss": {"name": "atss", "feat_channels": 64, "stacked_convs": 1},
    "fcos": {"name": "fcos", "feat_channels": 64, "stacked_convs": 1},
    "retinanet": {"name": "retina", "feat_channels": 64, "stacked_convs": 1},
    "vfnet": {"name": "vfnet", "feat_channels": 64, "stacked_convs": 1},
}


def tiny_model(arch: str = "atss", num_classes: int = 3, head: dict[str, Any] | None = None, **kwargs: Any):
    """A tiny detector of ``arch`` (its head's parameters updated by ``head``)."""
    torch.manual_seed(0)
    if arch == "faster_rcnn":
        spec = {"backbone": "test_resnet", "neck": {"name": "fpn", "out_channels": 32},
                "roi_head": {"name": "roi_box", "fc_channels": 64}, **kwargs}
        return lossreg.create_model("faster_rcnn", num_classes=num_classes, **spec)
    head_cfg = {**TINY_HEADS[arch], **(head or {})}
    return lossreg.create_model(arch, num_classes=num_classes, **{**copy.deepcopy(TINY), "head": head_cfg, **kwargs})


def one_target(boxes=((4.0, 6.0, 40.0, 50.0),), labels=(1,)) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels).long()}


@contextmanager
def raises(exc_type: type[BaseException] | tuple[type[BaseException], ...], *parts: str) -> Iterator[Any]:
    """``pytest.raises`` that also asserts the message is one line holding every ``part`` (plain substrings)."""
    with pytest.raises(exc_type) as info:
        yield info
    text = info.value.message if hasattr(info.value, "message") and isinstance(info.value.message, str) else str(info.value)
    assert "\n" not in text.strip(), f"the message spans several lines: {text!r}"
    for part in parts:
        assert part in text, f"{part!r} not in {text!r}"


def one_line_error(capsys: pytest.CaptureFixture[str], *parts: str) -> str:
    """The CLI's stderr: exactly one line, no traceback, holding every ``part``."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert "Traceback" not in err, err
    assert len(errors) == 1, err
    for part in parts:
        assert part in errors[0], f"{part!r} not in {errors[0]!r}"
    return errors[0]


def write_image(path: Path, width: int = 64, height: int = 48, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8)).save(path)
    return path


def write_coco(path: Path, images: list[dict] | None = None, annotations: list[dict] | None = None,
               categories: list[dict] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A COCO JSON file (two 64 x 48 images, one box, one category by default); ``drop`` removes top-level keys."""
    data = {
        "images": images if images is not None else [
            {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "b.png", "width": 64, "height": 48},
        ],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "iscrowd": 0, "area": 400},
        ],
        "categories": categories if categories is not None else [{"id": 1, "name": "thing"}],
    }
    for key in drop:
        data.pop(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    for img in data["images"]:
        if isinstance(img, dict) and isinstance(img.get("file_name"), str):
            write_image(path.parent / img["file_name"])
    return path


def yaml_alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A few hundred bytes of YAML whose aliases expand to ``width ** levels`` values."""
    names = [f"a{i}" for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['x'] * width)}]"]
    for prev, name in zip(names, names[1:]):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * width)}]")
    return "\n".join(lines) + "\n"


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def tiny_recipe(root: Path, **sections: Any) -> dict[str, Any]:
    """A recipe dict training the tiny ATSS on 4 synthetic 64 px images for one epoch of 2 iterations."""
    recipe: dict[str, Any] = {
        "name": "robust",
        "model": {"arch": "atss", **copy.deepcopy(TINY), "head": dict(TINY_HEADS["atss"])},
        "data": {
            "train": {"format": "synthetic", "root": str(root), "params": {"num_images": 4, "image_size": 64}},
            "image_size": 64,
        },
        "train": {"epochs": 1, "batch_size": 2, "warmup_iters": 1, "schedule": "constant", "log_interval": 1},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe
