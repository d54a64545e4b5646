"""The wheel ships the recipes, and an installed (non-editable) lossreg finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (path,) = out.glob("lossreg-*.whl")
    return path


def test_wheel_contains_recipes(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("lossreg/recipes/")}
    assert shipped == {p.name for p in (ROOT / "recipes").glob("*.yaml")}
    assert "lossreg/cli.py" in names


def test_installed_wheel_finds_recipes(wheel, tmp_path):
    site = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    code = (
        "import lossreg, pathlib; "
        "assert 'site' in pathlib.Path(lossreg.__file__).parts, lossreg.__file__; "
        "from lossreg.recipe import find_recipe; "
        "p = find_recipe('quickstart'); assert 'site' in p.parts, p; "
        "print(sorted(lossreg.list_recipes()))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "quickstart" in res.stdout
