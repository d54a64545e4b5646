"""Where inference time goes: convolutions against everything else, in lossreg eager, torchvision and onnxruntime.

For each model (lossreg's ``retinanet_resnet50_fpn`` / ``fcos_resnet50_fpn`` and torchvision's
same detector with the same random weights, as in bench_inference.py), on one ``[B, 3, S, S]``
batch, this profiles ``--repeat`` eval forwards of

* lossreg eager and torchvision eager with ``torch.profiler`` (self CPU time per operator;
  "convolution" is every ``aten::*convolution*`` operator's self time, oneDNN's kernels
  included),
* lossreg's exported ONNX graph with onnxruntime's own profiler (kernel time per node type;
  "convolution" is ``Conv`` and ``FusedConv``),

and prints each one's time per forward, its convolution time and share, and the
**convolution floor**: the ratio to torchvision's time that each would reach if everything
but its convolutions took no time at all. Issue 17's targets (lossreg eager <= 0.8x,
onnxruntime <= 0.5x torchvision's time per image) are reachable without a precision change
only where that floor is below them. Profiling slows every side; compare shares and floors,
not the absolute times (bench_inference.py times without a profiler).

    python benchmarks/profile_inference.py                      # both models, 320 px, batch 1
    python benchmarks/profile_inference.py --models fcos --size 512 --batch 2 --threads 2
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import bench_detectors as bd  # noqa: E402
from bench_inference import TARGETS  # noqa: E402

from lossreg.export import export_model, load_onnx  # noqa: E402

_ORT_CONV = ("Conv", "FusedConv")


def torch_profile(fn, repeat: int) -> tuple[float, float]:
    """(ms per call, convolution ms per call) of ``fn`` from torch.profiler's self CPU times."""
    fn()  # warm-up outside the profile: oneDNN primitive creation, allocator
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeat):
            fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
    return total / repeat / 1e3, conv / repeat / 1e3


def ort_profile(path: Path, array, threads: int, repeat: int) -> tuple[float, float, dict[str, float]]:
    """(ms per run, convolution ms per run, ms per run of each node type) from onnxruntime's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: array})  # warm-up; its nodes are dropped below by run count
    for _ in range(repeat):
        session.run(None, {name: array})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_type: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_type[event["args"]["op_name"]] += event["dur"]
    runs = repeat + 1
    per_type_ms = {k: v / runs / 1e3 for k, v in per_type.items()}
    total = sum(per_type_ms.values())
    return total, sum(v for k, v in per_type_ms.items() if k in _ORT_CONV), per_type_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="retinanet,fcos", help="comma-separated: retinanet, fcos [both]")
    parser.add_argument("--size", type=int, default=320, help="side of the square input images [320]")
    parser.add_argument("--batch", type=int, default=1, help="images per forward [1]")
    parser.add_argument("--repeat", type=int, default=3, help="profiled forwards of each [3]")
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime CPU threads [torch's default]")
    parser.add_argument("--score-thr", type=float, default=0.05, help="post-processing score threshold [0.05]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    opts = argparse.Namespace(frozen_bn=False, score_thr=args.score_thr, size=args.size)
    print(f"torch {torch.__version__}, cpu ({threads} threads); {args.size}x{args.size}, batch {args.batch}, "
          f"80 classes, score_thr {args.score_thr}, random weights shared with torchvision; repeat {args.repeat}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in [m.strip() for m in args.models.split(",") if m.strip()]:
            torch.manual_seed(args.seed)
            ours, tv = bd.build_ours(arch, opts).eval(), bd.build_torchvision(arch, opts).eval()
            bd.copy_torchvision_weights(ours, tv)
            images = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                sides = {
                    "lossreg eager": torch_profile(lambda: ours(images), args.repeat),
                    "torchvision": torch_profile(lambda: tv(list(images)), args.repeat),
                }
            path = export_model(ours, Path(tmp) / f"{arch}.onnx", image_size=args.size, batch_size=args.batch)
            load_onnx(path, threads=threads)  # the same session options bench_inference.py times
            total, conv, per_type = ort_profile(path, images.numpy(), threads, args.repeat)
            sides["onnxruntime"] = (total, conv)
            top = sorted(per_type.items(), key=lambda kv: -kv[1])[:4]
            print(f"  {arch} onnxruntime node types: " + ", ".join(f"{k} {v:.1f} ms" for k, v in top), file=sys.stderr)
            rows.append((arch, sides))
            del ours, tv

    print()
    header = (f"{'model':<10} {'side':<14} {'ms/forward':>11} {'conv ms':>8} {'conv share':>11} "
              f"{'other ms':>9} {'conv floor':>11}  target")
    print(header)
    print("-" * len(header))
    for arch, sides in rows:
        tv_total = sides["torchvision"][0]
        for side, (total, conv) in sides.items():
            floor = conv / tv_total
            target = {"lossreg eager": TARGETS["eager"], "onnxruntime": TARGETS["onnxruntime"]}.get(side)
            verdict = "" if target is None else f"<= {target}: {'reachable' if floor <= target else 'below the floor'}"
            print(f"{arch:<10} {side:<14} {total:>11.1f} {conv:>8.1f} {100 * conv / total:>10.1f}% "
                  f"{total - conv:>9.1f} {floor:>11.3f}  {verdict}")


if __name__ == "__main__":
    main()
