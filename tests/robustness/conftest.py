"""Fixtures of lossreg's bad-input suite (helpers in ``robust_helpers.py``, importable from every test here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # ``import robust_helpers`` under --import-mode=importlib
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """One cache folder for the tiny synthetic sets of this suite (generated once)."""
    return tmp_path_factory.mktemp("robust-synthetic")
