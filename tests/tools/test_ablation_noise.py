"""tools/ablation_noise.py against numbers worked out by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "ablation_noise.py"


def _tool():
    spec = importlib.util.spec_from_file_location("ablation_noise", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _variant(name, aps, baseline=False):
    runs = [{"seed": s, "finished": ap is not None, "metrics": None if ap is None else {"AP": ap}} for s, ap in enumerate(aps)]
    return {"name": name, "label": name, "is_baseline": baseline, "runs": runs}


def test_pooled_std_standard_error_and_paired_differences(tmp_path):
    summary = {"baseline": "baseline", "variants": [
        _variant("baseline", [0.30, 0.32, 0.34], baseline=True),  # variance 4 (points^2)
        _variant("qfl", [0.31, 0.35, 0.33]),                       # variance 4; per-seed +1, +3, -1
        _variant("broken", [0.0, 0.0, 0.0]),                       # never trained: left out of the pooled std
    ]}
    (tmp_path / "ablation.json").write_text(json.dumps(summary))
    lines = _tool().noise(tmp_path)
    # pooled std sqrt((4 + 4) / 2) = 2; standard error 2 * sqrt(2 / 3) = 1.633
    assert lines[0].endswith("pooled AP std over seeds 2.00 points (2 variants, n=3); "
                             "standard error of a difference of two means 1.63")
    qfl = next(line for line in lines if line.strip().startswith("qfl"))
    assert "ΔAP  +1.00" in qfl and "z  +0.6" in qfl  # 1 / 1.633
    assert qfl.endswith("per-seed Δ +1.0, +3.0, -1.0 (mean +1.00 ± 2.00)")
    broken = next(line for line in lines if line.strip().startswith("broken"))
    assert "ΔAP -32.00" in broken and "per-seed Δ -30.0, -32.0, -34.0" in broken
