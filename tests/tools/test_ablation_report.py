"""tools/ablation_report.py: the papers'-layout tables of docs/results.md, against hand-computed numbers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "ablation_report.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("ablation_report", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _run(archive: Path, variant: str, seed: int, ap: float) -> None:
    folder = archive / variant / f"seed{seed}" / "eval-test"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"AP": ap, "AP50": ap + 0.2, "AP75": ap - 0.05}))


def _table(tool, runs_per_variant=3):
    return tool.Table("t", "Table T", "arch", runs_per_variant, (
        tool.Row("baseline", "focal", "baseline", "40.0 (paper)"),
        tool.Row("cls", "QFL", "cls_loss=qfl", "+0.2 (paper)", 0.2),
        tool.Row("cls", "VFL", "cls_loss=vfl"),
        tool.Row("bal", "ALWA-1", "balancer=alwa1-interval-50"),
    ))


def test_paired_differences_intervals_verdicts_and_missing_rows(tool, tmp_path):
    archive = tmp_path / "arch"
    for seed, (base, qfl) in enumerate([(0.40, 0.41), (0.42, 0.44), (0.41, 0.42)]):
        _run(archive, "baseline", seed, base)
        _run(archive, "cls_loss=qfl-0a1b2c", seed, qfl)  # the hash suffix is not part of the row's name
    _run(archive, "balancer=alwa1-interval-50-31cfce", 0, 0.40)  # identical to the baseline's seed 0
    text = tool.render_table(_table(tool), tool.read_archive(archive))
    # per-seed differences +1, +2, +1 points: mean 1.333, sd 0.577, t(2) = 4.303 -> half-width 1.434
    assert "| cls | QFL | 0,1,2 | 42.3 ± 1.5 | 62.3 ± 1.5 | 37.3 ± 1.5 | +1.3 [-0.1, +2.8] | no effect resolvable | +0.2 (paper) |" in text
    assert "| baseline | focal | 0,1,2 | 41.0 ± 1.0 |" in text
    assert "| cls | VFL | not run yet |" in text
    assert "| bal | ALWA-1 | 0 | 40.0 | 60.0 | 35.0 | +0.0 (1 seed) | pending (1 of 3 paired seeds) |" in text
    assert "`arch`: 7 of 12 runs archived." in text
    assert "ALWA-1 = focal (seeds 0)" in text


def test_a_clear_difference_is_a_verdict(tool, tmp_path):
    archive = tmp_path / "arch"
    for seed, (base, qfl) in enumerate([(0.40, 0.43), (0.42, 0.45), (0.41, 0.44)]):
        _run(archive, "baseline", seed, base)
        _run(archive, "cls_loss=qfl", seed, qfl)
        _run(archive, "cls_loss=vfl", seed, base - 0.02 - 0.001 * seed)
    text = tool.render_table(_table(tool), tool.read_archive(archive))
    assert "| cls | QFL | 0,1,2 |" in text and "+3.0 [+3.0, +3.0] | helped |" in text
    assert "| hurt |" in text.split("| cls | VFL |")[1].splitlines()[0]
    png = tool.plot(_table(tool), tool.read_archive(archive), tmp_path / "forest.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _run(tmp_path / "one", "baseline", 0, 0.40)
    _run(tmp_path / "one", "cls_loss=qfl", 0, 0.41)
    assert tool.plot(_table(tool), tool.read_archive(tmp_path / "one"), tmp_path / "none.png") is None  # 1 seed: no interval


def test_block_is_replaced_and_checked(tool, tmp_path, monkeypatch):
    archive = tmp_path / "arch"
    _run(archive, "baseline", 0, 0.40)
    monkeypatch.setattr(tool, "TABLES", (_table(tool),))
    doc = tmp_path / "results.md"
    doc.write_text(f"# R\n\nbefore\n{tool.START}\nstale\n{tool.END}\nafter\n")
    assert not tool.update(doc, check=True, root=tmp_path)
    assert "stale" in doc.read_text()  # --check writes nothing
    assert not tool.update(doc, plots=False, root=tmp_path)
    text = doc.read_text()
    assert text.startswith("# R\n\nbefore\n") and text.endswith(f"{tool.END}\nafter\n") and "stale" not in text
    assert "| baseline | focal | 0 | 40.0 |" in text
    assert tool.update(doc, check=True, root=tmp_path)
    doc.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="no <!-- ablation_report:start -->"):
        tool.update(doc, root=tmp_path)


def test_docs_results_tables_are_current(tool):
    assert tool.main(["--check"]) == 0, "docs/results.md's ablation tables are stale: run `python tools/ablation_report.py`"
