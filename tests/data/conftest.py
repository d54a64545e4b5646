"""Fixtures for the data tests: the shared real sets (skipped when absent) and tiny hand-made sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    root = SHARED / "bccd" / "BCCD"
    if not (root / "Annotations").is_dir():
        pytest.skip(f"shared BCCD set not found at {root} (expected ../shared/data next to the checkout)")
    return root


@pytest.fixture(scope="session")
def coco128() -> tuple[Path, Path]:
    root = SHARED / "coco128-permissive"
    if not (root / "instances.json").is_file():
        pytest.skip(f"shared coco128-permissive set not found at {root} (expected ../shared/data next to the checkout)")
    return root / "instances.json", root / "images"


def _write_image(path: Path, width: int, height: int, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8)).save(path)
    return path


def _write_coco(path: Path, images: list[dict], annotations: list[dict], categories: list[dict]) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


@pytest.fixture
def write_image():
    """``write_image(path, width, height, value=128)``: a flat RGB image file."""
    return _write_image


@pytest.fixture
def write_coco():
    """``write_coco(path, images, annotations, categories)``: a COCO JSON file."""
    return _write_coco
