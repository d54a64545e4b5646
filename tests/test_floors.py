"""The dependency floors that CI tests are the ones pyproject.toml declares (issue 16).

``.ci/floors`` installs ``.ci/floors-constraints.txt`` (every runtime dependency at its
floor) and runs a smoke subset; this keeps that file and ``pyproject.toml`` in step, so
a floor raised (or added) in one place and not the other fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")


def _floors() -> dict[str, Version]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    out = {}
    for text in deps:
        req = Requirement(text)
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{text}: every runtime dependency needs one '>=' floor"
        out[req.name.lower().replace("_", "-")] = Version(lower[0])
    return out


def _pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / ".ci" / "floors-constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line).groups()
            out[name.lower().replace("_", "-")] = Version(version)
    return out


def test_floors_job_pins_every_dependency_at_its_floor():
    floors, pins = _floors(), _pins()
    assert pins.keys() == floors.keys()
    assert {k: str(v) for k, v in pins.items() if v != floors[k]} == {}


def test_ci_runs_the_floors_job():
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash .ci/floors" in run
    script = (ROOT / ".ci" / "floors").read_text(encoding="utf-8")
    assert "-c .ci/floors-constraints.txt" in script
