"""README.md's component tables are generated from the registry and must be current."""

from __future__ import annotations

import os
import re
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
    # "runs/quickstart/model": a tiny model saved where the examples expect the quick start's model folder
    sys.path.insert(0, str(Path(__file__).parent / "hub"))
    try:
        from hubserver import HubServer
    finally:
        sys.path.pop(0)
    lossreg.save_pretrained(
        lossreg.create_model("atss_resnet18_fpn", backbone="test_resnet", num_classes=2, label_names=["cat", "bird"]),
        tmp_path / "runs" / "quickstart" / "model",
    )
    # the COCO fine-tuning example loads retinanet_resnet50_fpn.tv_coco: a random-init torchvision RetinaNet,
    # converted into LOSSREG_HOME's cache, where create_model finds a converted tag without downloading it
    import torchvision

    from lossreg.convert import from_torchvision
    from lossreg.hub.converted import write_converted

    cfg = lossreg.get_pretrained_cfg("retinanet_resnet50_fpn", "tv_coco")
    tv = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None)
    write_converted(from_torchvision(tv), cfg, tmp_path / "lossreg_home" / "converted" / cfg.name)
    with HubServer() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": hub.token,
               "HF_HUB_DISABLE_TELEMETRY": "1", "LOSSREG_HOME": str(tmp_path / "lossreg_home"), "LOSSREG_OFFLINE": "1"}
        env.pop("HF_HUB_OFFLINE", None)
        res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]


API = README.parent / "docs" / "api.md"
# A cite of the contract: docs/api.md, then a comma and the heading in double quotes (several
# headings joined by a comma, "and" or "or").
_CITE = re.compile(r'docs/api\.md,\s*((?:"[^"\n]+"(?:\s*(?:,|and|or)\s*(?:#:?\s*)?)?)+)')


def _api_headings() -> set[str]:
    return {line[3:].strip() for line in API.read_text(encoding="utf-8").splitlines() if line.startswith("## ")}


def _cites() -> dict[str, set[str]]:
    """Every docs/api.md heading cited in src/, tests/ and benchmarks/ -> the files citing it."""
    out: dict[str, set[str]] = {}
    root = README.parent
    for folder in ("src", "tests", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            for match in _CITE.finditer(path.read_text(encoding="utf-8")):
                for heading in re.findall(r'"([^"\n]+)"', match.group(1)):
                    out.setdefault(heading, set()).add(str(path.relative_to(root)))
    return out


def test_readme_own_components_example_runs(tmp_path):
    """README's "Your own components" block subclasses the real base classes and runs as printed."""
    import subprocess
    import sys

    section = README.read_text(encoding="utf-8").split("### Your own components", 1)[1].split("\n### ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "from lossreg.losses import" in code and 'print(lossreg.create_loss("my_loss"))' in code
    script = tmp_path / "own_components.py"
    script.write_text(code)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    first, second = res.stdout.splitlines()[:2]
    assert first == "MyLoss(beta=1.0, reduction='mean', loss_weight=1.0)"
    assert second == "tensor(4.)"


def test_api_md_sections_cited_in_code_exist():
    """Every section of docs/api.md that the code cites is a heading there, so the cites cannot drift."""
    headings = _api_headings()
    required = {
        "Registries and plugins", "Slots", "Classification losses", "Regression losses", "Assigners",
        "Balancers", "Heads", "Detectors", "Fine-tuning and component state", "Writing a plugin",
    }
    assert required <= headings, f"docs/api.md lacks sections {sorted(required - headings)}"
    cites = _cites()
    assert cites, "no docs/api.md cite found: the cite pattern no longer matches the docstrings"
    missing = {h: sorted(files) for h, files in cites.items() if h not in headings}
    assert not missing, f"cites of docs/api.md sections that do not exist: {missing}"


def test_no_cites_of_missing_design_files():
    """The old design documents are not in the repository; nothing may send a reader there."""
    root = README.parent
    stale = re.compile(r"api\.md section|design/methods\.md|DEVELOPERS\.md")
    hits = []
    for folder in ("src", "tests", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            if path == Path(__file__).resolve():
                continue
            text = path.read_text(encoding="utf-8")
            hits += [f"{path.relative_to(root)}: {m.group(0)}" for m in stale.finditer(text)]
    hits += [f"pyproject.toml: {m.group(0)}" for m in stale.finditer((root / "pyproject.toml").read_text())]
    assert not hits, hits
