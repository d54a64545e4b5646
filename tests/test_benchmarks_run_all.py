"""benchmarks/run_all.py: the commands it runs and the RESULTS.md it writes, from canned benchmark outputs
(no benchmark runs here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("lossreg_bench_run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


LOSSES_OUT = """device=cpu threads=1 torch=2.15.0 cls: N=8000 x C=80, reg: N=800; warmup=1 repeat=3
| loss                  | task |    min ms | median ms | reference                    | ratio |
|-----------------------|------|-----------|-----------|------------------------------|-------|
| focal                 | cls  |      12.0 |      12.5 | tv:sigmoid_focal_loss        |  0.98 |
| qfl                   | cls  |      15.1 |      15.3 | focal                        |  1.26 |
| giou                  | reg  |       1.1 |       1.2 | tv:generalized_box_iou_loss  |  0.91 |
| tv:sigmoid_focal_loss | cls  |      12.2 |      12.4 | -                            |     - |
focal vs torchvision.ops.sigmoid_focal_loss: relative difference 1.2e-07
"""

ASSIGNERS_OUT = """torch 2.15.0, 1 threads, device cpu
batch 8 x 640x640, strides (8, 16, 32, 64, 128)
assigner apl  A/img G/img  batch ms per-img ms   loop ms  vs loop
-----------------------------------------------------------------
atss       1   8525    20      12.3       20.1     150.2    12.2x
eatss      1   8525    20      30.0       41.0     400.0    13.3x

ATSS-R50 stand-in step (forward + backward, ...): 5000 ms measured at batch 2, scaled x4 to batch 8: 20000 ms
  atss     assign_batch, 1 anchor(s)/location,  20 gts/img:    12.3 ms = 0.06% of the step
"""

DETECTORS_OUT = """torch 2.15.0, device cpu (1 threads); batch 1, 128x128, 10 gts/image, 80 classes, score_thr 0.05

model      mode    lossreg min   median  torchvision min   median  ratio med  ratio min  paired  target
-------------------------------------------------------------------------------------------------------
retinanet  train       310.2ms  320.1ms          305.0ms  318.0ms      1.007      1.017   1.004  <= 1.1 ok  (first loss 1.234 vs 1.230)
fcos       infer      1120.3ms 1133.4ms         1128.4ms 1137.9ms      0.996      0.993   0.997  <= 1.0 ok  (detections 0 vs 0)
quickstart train  defaults (bf16 / fp32)      214.5ms  255.8ms          417.8ms  426.6ms      0.600      0.513   0.603  <= 0.85 ok  (first loss 3.003 vs 2.810)
quickstart train  fp32                        317.6ms  320.3ms          293.4ms  303.2ms      1.056      1.082   1.078  <= 0.85 MISSED  (first loss 3.004 vs 2.810)
"""

PROFILE_OUT = """torch 2.14.1, cpu (2 threads); config quickstart: batch 8, 128x128, 21 gts
full step (fwd + losses + bwd)         176.2    158.4  100.0%

quickstart: outside-network share 3.2% (bf16); target < 8%: ok
r50: outside-network share 5.6% (fp32); target < 5%: MISSED
"""


INFERENCE_OUT = """torch 2.14.1, onnxruntime 1.32.0, cpu (2 threads); 320x320

model      batch  eager ms/img  onnxrt ms/img  tv ms/img  eager img/s  onnxrt img/s  tv img/s  eager/tv  onnxrt/tv agree  targets
---------------------------------------------------------------------------------------------------------------------------------
fcos           1        4659.6         3886.1     4624.6         0.21          0.26      0.22     1.008      0.840   yes  eager <= 0.8 MISSED, onnxrt <= 0.5 MISSED

lossreg eager under bf16 autocast (a precision change, not like for like: torchvision runs fp32)
model      batch  bf16 ms/img  tv ms/img  bf16/tv  detections bf16 vs fp32
-----------------------------------------------------------------------------
fcos           1       2700.0     4624.6    0.584  3 vs 3
"""


INFERENCE_PROFILE_OUT = """torch 2.14.1, cpu (2 threads); 320x320, batch 1

model      side            ms/forward  conv ms  conv share  other ms  conv / tv  conv floor  target
---------------------------------------------------------------------------------------------------
fcos       lossreg eager        400.1    343.7       85.9%      56.4      1.188       0.870  <= 0.8: below the floor
fcos       torchvision          332.6    289.4       87.0%      43.1      1.000       0.870
fcos       onnxruntime          120.0    100.0       83.3%      20.0      0.346       0.301  <= 0.5: reachable
"""


def test_inference_profile_summary_gives_the_floor_of_each_target(run_all):
    assert run_all.summary_lines("inference_profile", INFERENCE_PROFILE_OUT) == [
        "fcos lossreg eager: convolutions 85.9% of its time; with nothing else it would take 0.870x torchvision's "
        "time (target <= 0.8: below the floor)",
        "fcos onnxruntime: convolutions 83.3% of its time; with nothing else it would take 0.301x torchvision's "
        "time (target <= 0.5: reachable)",
    ]


def test_inference_summary_reads_both_tables(run_all):
    assert run_all.summary_lines("inference", INFERENCE_OUT) == [
        "fcos batch 1: images/s eager 0.21, onnxruntime 0.26, torchvision 0.22; time per image / torchvision's: "
        "eager 1.008, onnxruntime 0.840 (eager <= 0.8 MISSED, onnxrt <= 0.5 MISSED); same detection counts: yes",
        "fcos batch 1: eager under bf16 autocast / torchvision fp32: 0.584 (detections 3 vs 3 in fp32)",
    ]


def _results(run_all, fail_detectors=False):
    cmds = dict(run_all.build_commands(["losses", "assigners", "detectors"], quick=True, python="/usr/bin/python3"))
    return [
        run_all.Result("losses", cmds["losses"], LOSSES_OUT, "", 0, 12.0),
        run_all.Result("assigners", cmds["assigners"], ASSIGNERS_OUT, "", 0, 30.0),
        run_all.Result("detectors", cmds["detectors"], "" if fail_detectors else DETECTORS_OUT,
                       "Traceback ...\nRuntimeError: out of memory\n" if fail_detectors else "", 1 if fail_detectors else 0,
                       40.0),
    ]


def test_build_commands_quick_full_device_threads(run_all):
    full = dict(run_all.build_commands(["losses", "assigners"], python="py"))
    assert full["losses"] == ["py", str(ROOT / "benchmarks" / "bench_losses.py")]
    quick = dict(run_all.build_commands(["losses", "assigners", "detectors"], quick=True, device="cuda", threads=2,
                                        extra={"detectors": "--models 'fcos'"}, python="py"))
    assert quick["losses"][2:] == ["--scale", "0.05", "--repeat", "3", "--warmup", "1", "--device", "cuda", "--threads", "2"]
    assert quick["assigners"][2:] == ["--quick"]  # it takes neither --device nor --threads
    assert quick["detectors"][-6:] == ["--device", "cuda", "--threads", "2", "--models", "fcos"]


def test_summary_lines_pick_the_ratios(run_all):
    assert run_all.summary_lines("losses", LOSSES_OUT) == [
        "against torchvision.ops (min time ratio): focal 0.98x tv:sigmoid_focal_loss, giou 0.91x tv:generalized_box_iou_loss",
        "against focal (cls) / giou (reg): qfl 1.26x focal",
        "focal vs torchvision.ops.sigmoid_focal_loss: relative difference 1.2e-07",
    ]
    assert run_all.summary_lines("assigners", ASSIGNERS_OUT) == [
        "assign_batch speed-up over the per-gt loop: atss (1 anchor/loc, 20 gts) 12.2x, eatss (1 anchor/loc, 20 gts) 13.3x",
        "assignment as a share of an ATSS-R50 training step: atss (1 anchor/loc, 20 gts) 0.06%",
    ]
    assert run_all.summary_lines("detectors", DETECTORS_OUT) == [
        "retinanet train: lossreg / torchvision 1.007 (medians), 1.017 (mins), 1.004 (paired); target <= 1.1: ok",
        "fcos infer: lossreg / torchvision 0.996 (medians), 0.993 (mins), 0.997 (paired); target <= 1.0: ok",
        "quickstart train defaults (bf16 / fp32): lossreg / torchvision 0.600 (medians), 0.513 (mins), 0.603 (paired); "
        "target <= 0.85: ok",
        "quickstart train fp32: lossreg / torchvision 1.056 (medians), 1.082 (mins), 1.078 (paired); target <= 0.85: MISSED",
    ]
    assert run_all.summary_lines("profile", PROFILE_OUT) == [
        "quickstart: outside-network share 3.2% (bf16); target < 8%: ok",
        "r50: outside-network share 5.6% (fp32); target < 5%: MISSED",
    ]
    assert run_all.summary_lines("detectors", "no table here") == []


def test_markdown_has_every_section_and_the_outputs_verbatim(run_all):
    machine = {"platform": "Linux-test", "cpu": "Test CPU @ 2 GHz", "cores": "2 logical, 2 usable", "torch threads": "2",
               "gpu": "none"}
    versions = {"python": "3.12.0", "torch": "2.15.0", "torchvision": "0.29.2", "timm": "1.0.31", "lossreg": "0.1.0"}
    text = run_all.render_markdown(_results(run_all, fail_detectors=True), machine, versions, quick=True,
                                   command="python benchmarks/run_all.py --quick", date="2026-01-02 03:04 UTC")
    assert text.startswith("# Benchmark results\n")
    assert "Written by `python benchmarks/run_all.py --quick` on 2026-01-02 03:04 UTC, at **quick sizes**" in text
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Machine", "## Versions", "## Summary",
                        "## Losses: forward + backward of every registered loss",
                        "## Assigners: vectorised against the per-ground-truth loop",
                        "## Detectors: lossreg against torchvision, training step and inference"]
    assert "| cpu | Test CPU @ 2 GHz |" in text and "| timm | 1.0.31 |" in text
    assert f"```text\n{LOSSES_OUT.rstrip()}\n```" in text and f"```text\n{ASSIGNERS_OUT.rstrip()}\n```" in text
    assert "Command: `python benchmarks/bench_losses.py --scale 0.05 --repeat 3 --warmup 1` (12 s, exit code 0)" in text
    assert "- **assigners**: assign_batch speed-up over the per-gt loop: atss (1 anchor/loc, 20 gts) 12.2x" in text
    assert "- **detectors** **failed (exit code 1)**: no ratios printed" in text
    assert "RuntimeError: out of memory" in text.split("## Detectors")[1]


def test_main_writes_results_atomically_and_reports_failures(run_all, tmp_path, monkeypatch):
    canned = {r.name: r for r in _results(run_all)}
    ran = []

    def fake_run(name, cmd, timeout=None, threads=None):
        ran.append(name)
        return canned[name]

    monkeypatch.setattr(run_all, "run_benchmark", fake_run)
    monkeypatch.setattr(run_all, "machine_info", lambda threads=None: {"cpu": "canned", "threads": str(threads)})
    monkeypatch.setattr(run_all, "versions", lambda: {"torch": "canned"})
    out = tmp_path / "RESULTS.md"
    assert run_all.main(["--quick", "--only", "losses,detectors", "--threads", "1", "--output", str(out)]) == 0
    assert ran == ["losses", "detectors"]
    text = out.read_text()
    assert "## Losses" in text and "## Assigners" not in text and "| cpu | canned |" in text and "| threads | 1 |" in text
    assert not list(tmp_path.glob(".*.tmp"))
    canned["losses"].returncode = 1
    assert run_all.main(["--only", "losses", "--output", str(out)]) == 1
    assert "**failed (exit code 1)**" in out.read_text() and "at full sizes" in out.read_text()
    with pytest.raises(SystemExit):
        run_all.main(["--only", "nothing"])


def test_main_keeps_the_sections_below_the_marker(run_all, tmp_path, monkeypatch):
    """Hand-measured sections (bench_parity.py's accuracy parity) survive a rewrite of RESULTS.md."""
    canned = run_all.Result("losses", ["py", "bench_losses.py"], LOSSES_OUT, "", 0, 1.0)
    monkeypatch.setattr(run_all, "run_benchmark", lambda name, cmd, timeout=None, threads=None: canned)
    monkeypatch.setattr(run_all, "machine_info", lambda threads=None: {"cpu": "canned"})
    monkeypatch.setattr(run_all, "versions", lambda: {"torch": "canned"})
    out = tmp_path / "RESULTS.md"
    kept = f"{run_all.KEEP_MARKER}\n\n## Accuracy parity\n\nmeasured by hand\n"
    out.write_text("# old generated part\n\n" + kept)
    for _ in range(2):  # kept once, however often it is rewritten
        assert run_all.main(["--only", "losses", "--output", str(out)]) == 0
        text = out.read_text()
        assert "# old generated part" not in text and text.count("## Accuracy parity") == 1
        assert text.index("## Losses") < text.index(run_all.KEEP_MARKER) and text.endswith("measured by hand\n")
