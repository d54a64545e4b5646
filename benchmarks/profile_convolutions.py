"""Where the time goes: convolutions against everything else, in lossreg, torchvision and onnxruntime.

Issue 17 and 18 set speed targets against torchvision's detectors: lossreg eager inference
<= 0.8x torchvision's time per image and onnxruntime <= 0.5x (``--mode infer``), a training
step <= 0.85x at the quick start's size and <= 0.9x at R50 in float32 (``--mode train``).
Both sides run the same convolutions; this script measures how much of each side's time
they take and prints the **convolution floor**: the ratio to torchvision's time that a side
would reach if everything but its convolutions took no time at all. A like-for-like target
is reachable without a precision change only where the floor is below it. lossreg's
PyTorch convolutions have torchvision's shapes and kernels (the "conv / tv" column: 1 up to
timing noise), so their floor is computed with torchvision's convolution time, which makes
it torchvision's convolution share; onnxruntime's floor uses its own (different kernels).

``--mode infer`` (default): lossreg's ``retinanet_resnet50_fpn`` / ``fcos_resnet50_fpn`` and
torchvision's same detector with the same random weights (as in bench_inference.py) on one
``[B, 3, S, S]`` batch, eval forwards of lossreg eager and torchvision eager profiled with
``torch.profiler`` and lossreg's exported ONNX graph with onnxruntime's own profiler.

``--mode train``: forward with targets, ``sum(loss_dict.values())`` and backward in float32,
as bench_detectors.py times them: the quick start's ATSS R18 on its first real batch against
torchvision's FCOS of the same size (``--models quickstart``), and RetinaNet / FCOS R50 on
bench_detectors.py's random 512 px batch of 2 with 10 boxes each.

"Convolution" is every operator whose name holds ``convolution`` (torch.profiler's self CPU
time: oneDNN's and the fallback kernels, forward and backward) or onnxruntime's ``Conv`` /
``FusedConv`` nodes. Profiling slows every side; compare shares and floors, not absolute
times (bench_inference.py and bench_detectors.py time without a profiler).

    python benchmarks/profile_convolutions.py                       # inference, both models, 320 px, batch 1
    python benchmarks/profile_convolutions.py --mode train          # quickstart, retinanet, fcos
    python benchmarks/profile_convolutions.py --models fcos --size 512 --batch 2 --threads 2
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
from bench_inference import TARGETS as INFER_TARGETS  # noqa: E402

from lossreg.export import export_model  # noqa: E402

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


def infer_rows(args: argparse.Namespace, threads: int) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    """Per model: {side: (ms per forward, convolution ms)} of lossreg eager, torchvision and onnxruntime."""
    opts = argparse.Namespace(frozen_bn=False, score_thr=args.score_thr, size=args.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.models:
            torch.manual_seed(args.seed)
            ours, tv = bd.build_ours(arch, opts).eval(), bd.build_torchvision(arch, opts).eval()
            bd.copy_torchvision_weights(ours, tv)
            images = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                sides = {
                    "lossreg eager": torch_profile(lambda m=ours, x=images: m(x), args.repeat),
                    "torchvision": torch_profile(lambda m=tv, x=images: m(list(x)), args.repeat),
                }
            path = export_model(ours, Path(tmp) / f"{arch}.onnx", image_size=args.size, batch_size=args.batch)
            total, conv, per_type = ort_profile(path, images.numpy(), threads, args.repeat)
            sides["onnxruntime"] = (total, conv)
            top = sorted(per_type.items(), key=lambda kv: -kv[1])[:4]
            print(f"  {arch} onnxruntime node types: " + ", ".join(f"{k} {v:.1f} ms" for k, v in top), file=sys.stderr)
            rows.append((arch, sides))
    return rows


def train_rows(args: argparse.Namespace) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    """Per model: {side: (ms per training step, convolution ms)} of lossreg and torchvision in float32."""
    # size: torchvision's transform resizes to it, so it must be the batch's 512 (bench_detectors' default)
    opts = argparse.Namespace(frozen_bn=False, score_thr=args.score_thr, size=512, seed=args.seed,
                              own_init=False, device="cpu")
    rows = []
    for arch in args.models:
        ours, tv = bd.build_pair(arch, opts, None)
        if arch == "quickstart":
            _, images, targets = bd.quickstart_batch()
        else:
            images, targets = bd.make_inputs(2, 512, 10, "cpu")
        ours.train(), tv.train()
        sides = {}
        for side, model, is_ours in (("lossreg", ours, True), ("torchvision", tv, False)):
            prepare, run, _ = bd.train_step(model, images, targets, ours=is_ours)

            def step(prepare=prepare, run=run) -> None:
                prepare()
                run()

            sides[side] = torch_profile(step, args.repeat)
        rows.append((arch, sides))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("infer", "train"), default="infer", help="[infer]")
    parser.add_argument("--models", default=None,
                        help="comma-separated: retinanet, fcos (and quickstart with --mode train) [all of them]")
    parser.add_argument("--size", type=int, default=320, help="side of the square input images (infer) [320]")
    parser.add_argument("--batch", type=int, default=1, help="images per forward (infer) [1]")
    parser.add_argument("--repeat", type=int, default=5, help="profiled forwards / steps of each [5]")
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime CPU threads [torch's default]")
    parser.add_argument("--score-thr", type=float, default=0.05, help="post-processing score threshold [0.05]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    default = "quickstart,retinanet,fcos" if args.mode == "train" else "retinanet,fcos"
    args.models = [m.strip() for m in (args.models or default).split(",") if m.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.mode == "infer":
        print(f"torch {torch.__version__}, cpu ({threads} threads); inference, {args.size}x{args.size}, "
              f"batch {args.batch}, 80 classes, score_thr {args.score_thr}, random weights shared with torchvision; "
              f"repeat {args.repeat}")
        rows = infer_rows(args, threads)
    else:
        print(f"torch {torch.__version__}, cpu ({threads} threads); training step in float32 (forward, losses, "
              f"backward): quickstart on its first batch, R50 on 2 random 512 px images; repeat {args.repeat}")
        rows = train_rows(args)

    print()
    unit = "ms/forward" if args.mode == "infer" else "ms/step"
    header = (f"{'model':<10} {'side':<14} {unit:>11} {'conv ms':>8} {'conv share':>11} "
              f"{'other ms':>9} {'conv / tv':>10} {'conv floor':>11}  target")
    print(header)
    print("-" * len(header))
    for arch, sides in rows:
        ref_total, ref_conv = sides["torchvision"]
        for side, (total, conv) in sides.items():
            floor = (conv if side == "onnxruntime" else ref_conv) / ref_total
            if args.mode == "infer":
                target = {"lossreg eager": INFER_TARGETS["eager"], "onnxruntime": INFER_TARGETS["onnxruntime"]}.get(side)
            else:
                target = bd.TARGETS["quickstart" if arch == "quickstart" else "r50"]["train"] if side == "lossreg" else None
            verdict = "" if target is None else f"<= {target}: {'reachable' if floor <= target else 'below the floor'}"
            print(f"{arch:<10} {side:<14} {total:>11.1f} {conv:>8.1f} {100 * conv / total:>10.1f}% "
                  f"{total - conv:>9.1f} {conv / ref_conv:>10.3f} {floor:>11.3f}  {verdict}".rstrip())


if __name__ == "__main__":
    main()
