"""benchmarks/run_all.py condenses bench_inference.py's table into RESULTS.md's summary lines."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OUT = """torch 2.14.1, onnxruntime 1.32.0, cpu (1 threads); 320x320, 80 classes

model      batch  eager ms/img  onnxrt ms/img  tv ms/img  eager img/s  onnxrt img/s  tv img/s  eager/tv  onnxrt/tv agree  targets
---------------------------------------------------------------------------------------------------------------------------------
retinanet      1        4918.2         4037.3     5504.1         0.20          0.25      0.18     0.894      0.733   yes  eager <= 0.8 MISSED, onnxrt <= 0.5 MISSED
fcos           8         300.0          150.0      400.0         3.33          6.67      2.50     0.750      0.375    NO  eager <= 0.8 ok, onnxrt <= 0.5 ok
"""


def test_inference_summary_and_command():
    spec = importlib.util.spec_from_file_location("lossreg_bench_run_all_inference", ROOT / "benchmarks" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = run_all
    try:
        spec.loader.exec_module(run_all)
        lines = run_all.summary_lines("inference", OUT)
        (name, cmd), = run_all.build_commands(["inference"], quick=True, device="cuda", threads=1, python="py")
    finally:
        sys.modules.pop(spec.name, None)
    assert lines == [
        "retinanet batch 1: images/s eager 0.20, onnxruntime 0.25, torchvision 0.18; time per image / torchvision's: "
        "eager 0.894, onnxruntime 0.733 (eager <= 0.8 MISSED, onnxrt <= 0.5 MISSED); same detection counts: yes",
        "fcos batch 8: images/s eager 3.33, onnxruntime 6.67, torchvision 2.50; time per image / torchvision's: "
        "eager 0.750, onnxruntime 0.375 (eager <= 0.8 ok, onnxrt <= 0.5 ok); same detection counts: NO",
    ]
    assert name == "inference" and cmd[1].endswith("bench_inference.py") and "--device" not in cmd  # CPU only
    assert cmd[-2:] == ["--threads", "1"]
