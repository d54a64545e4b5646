"""README.md's component tables are generated from the registry and must be current."""

from __future__ import annotations

import os
from pathlib import Path

import lossreg
from lossreg._docs import END, START, component_tables, update_readme

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tables_are_current():
    assert update_readme(README, check=True), "README.md's tables are stale: run `python tools/update_readme.py`"


def test_tables_list_every_component(temp_register):
    class Fresh:
        """A freshly registered assigner."""

        paper = "Fresh, 2026"

    temp_register("assigner", Fresh, name="fresh_assigner")
    tables = component_tables()
    assert "| `fresh_assigner` | A freshly registered assigner. | Fresh, 2026 |" in tables


def test_stale_readme_detected(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"intro\n{START}\nold table\n{END}\noutro\n")
    assert not update_readme(path, check=True)
    update_readme(path)
    assert update_readme(path, check=True)
    text = path.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text


def _quickstart_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```bash\n")[1:]
    return [b.split("```", 1)[0].strip() for b in blocks]


def test_quickstart_opens_with_two_commands_and_ci_runs_the_test_one():
    commands = _quickstart_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    setup_and_run, test = commands
    assert setup_and_run.startswith("python3 -m venv .venv && ") and "pytest" in test
    assert "lossreg train recipes/quickstart.yaml" in setup_and_run  # the main job comes first
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert test in ci.splitlines(), ".ci/run must run README's test command verbatim"


def test_readme_python_examples_run(tmp_path):
    """Every ```python block of README.md (except plugin/registration sketches) runs as written."""
    import subprocess
    import sys

    text = README.read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    runnable = [b for b in blocks if "@lossreg.register_" not in b]
    assert len(runnable) >= 3
    script = tmp_path / "readme_examples.py"
    script.write_text("import lossreg\n" + "\n".join(runnable))
    # the Hub examples publish to and download from the loopback Hub of tests/hub, and load
    # "runs/quick/model": a tiny model saved where the examples expect a run's model folder
    sys.path.insert(0, str(Path(__file__).parent / "hub"))
    try:
        from hubserver import HubServer
    finally:
        sys.path.pop(0)
    lossreg.save_pretrained(
        lossreg.create_model("atss_resnet18_fpn", backbone="test_resnet", num_classes=2, label_names=["cat", "bird"]),
        tmp_path / "runs" / "quick" / "model",
    )
    with HubServer() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": hub.token,
               "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_HUB_OFFLINE", None)
        res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
