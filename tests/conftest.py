"""Shared fixtures: throw-away components registered for one test and removed after it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import torch

from lossreg._registry import get_registry

_counter = itertools.count()

# Small CPU ops (deform_conv2d above all) run many times faster on one thread than on two
# contended ones, and pytest-xdist already uses the cores: one intra-op thread per worker.
torch.set_num_threads(1)


@pytest.fixture
def temp_register() -> Iterator:
    """``temp_register(kind, obj, name=None, **meta) -> name``; unregistered at teardown."""
    added: list[tuple[str, str]] = []

    def add(kind: str, obj, name: str | None = None, **meta) -> str:
        name = name or f"_test_{kind}_{next(_counter)}"
        get_registry(kind).add(obj, name=name, **meta)
        added.append((kind, name))
        return name

    yield add
    for kind, name in reversed(added):
        get_registry(kind).unregister(name)


@pytest.fixture
def dummy_detector(temp_register) -> str:
    """A registered detector architecture name that recipes may use as ``model.arch``."""

    class DummyDetector(torch.nn.Module):
        """A detector that only exists for tests.

        Paper: none.
        """

        def __init__(self, num_classes: int = 80, backbone: str = "resnet50") -> None:
            super().__init__()
            self.num_classes = num_classes
            self.backbone = backbone

    return temp_register("detector", DummyDetector, name="_test_det")
