"""Inference speed: lossreg eager, lossreg exported (ONNX on onnxruntime, CPU) and torchvision's same detector.

Models: ``retinanet_resnet50_fpn`` and ``fcos_resnet50_fpn`` of lossreg against
torchvision's ``retinanet_resnet50_fpn`` / ``fcos_resnet50_fpn``, with the same random
weights (``bench_detectors.copy_torchvision_weights``: lossreg gets a copy of torchvision's),
80 classes, the same post-processing settings (score 0.05, per-level top-k 1000,
class-wise NMS 0.5 / 0.6, 100 detections; torchvision's FCOS threshold is ``sqrt(0.05)``,
see bench_detectors.py), on the same ``[B, 3, S, S]`` batch of random images, for each
``--batches`` B, in one process. lossreg's model is exported once per batch size with
``lossreg.export_model`` (a fixed-shape graph, NMS included) and run by an onnxruntime CPU
session with as many intra-op threads as torch has.

Timed: eval forward ``model(images)`` under ``torch.inference_mode()`` (eager; torchvision with
``GeneralizedRCNNTransform`` at ``min_size = max_size = S``, so its resize is a no-op at scale
1 but stays in its time) and ``session.run`` (onnxruntime, input already a numpy array).
Rounds alternate the order of the three; ``--warmup`` untimed runs each first. Reported:
median time per image (ms) and images per second of each, and time-per-image ratios to
torchvision (medians) against the targets of issue 17: lossreg eager <= 0.8x, onnxruntime
<= 0.5x. The "agree" column checks that onnxruntime returned exactly as many detections as
eager lossreg on the timed batch (``num_detections``).

    python benchmarks/bench_inference.py                          # 320 px, batch 1 and 8
    python benchmarks/bench_inference.py --size 512 --batches 1,8 --repeat 5 --threads 2
    python benchmarks/bench_inference.py --models fcos --score-thr 0   # every candidate through NMS
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import bench_detectors as bd  # noqa: E402

from lossreg.export import export_model, load_onnx  # noqa: E402

TARGETS = {"eager": 0.8, "onnxruntime": 0.5}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="retinanet,fcos", help="comma-separated: retinanet, fcos [both]")
    parser.add_argument("--size", type=int, default=320, help="side of the square input images [320]")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes [1,8]")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds [3]")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each first [1]")
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime CPU threads [torch's default]")
    parser.add_argument("--score-thr", type=float, default=0.05, help="post-processing score threshold [0.05]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--bf16", choices=("auto", "yes", "no"), default="auto",
        help="also time lossreg eager under bf16 autocast (auto: on a CPU with native bf16) [auto]",
    )
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    opts = argparse.Namespace(frozen_bn=False, score_thr=args.score_thr, size=args.size)
    import onnxruntime

    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, cpu ({threads} threads); "
        f"{args.size}x{args.size}, 80 classes, score_thr {args.score_thr}, random weights shared with torchvision; "
        f"warmup {args.warmup}, repeat {args.repeat}"
    )
    from lossreg.engine.precision import cpu_has_native_bf16

    with_bf16 = args.bf16 == "yes" or (args.bf16 == "auto" and cpu_has_native_bf16())
    rows, bf16_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in models:
            torch.manual_seed(args.seed)
            ours, tv = bd.build_ours(arch, opts).eval(), bd.build_torchvision(arch, opts).eval()
            bd.copy_torchvision_weights(ours, tv)
            for batch in batches:
                images = torch.rand(batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(batch))
                t0 = time.perf_counter()
                path = export_model(ours, Path(tmp) / f"{arch}_b{batch}.onnx", image_size=args.size, batch_size=batch)
                print(f"  {arch} batch {batch}: exported in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
                run = load_onnx(path, threads=threads)
                array = images.numpy()
                results: dict[str, object] = {}

                def eager(images=images, results=results, ours=ours) -> None:
                    with torch.inference_mode():
                        results["eager"] = [int(d["boxes"].shape[0]) for d in ours(images)]

                def ort(array=array, run=run, results=results) -> None:
                    results["onnxruntime"] = run(array)

                def torchvision(images=images, tv=tv) -> None:
                    with torch.inference_mode():
                        tv(list(images))

                def eager_bf16(images=images, results=results, ours=ours) -> None:
                    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                        results["eager_bf16"] = [int(d["boxes"].shape[0]) for d in ours(images)]

                steps = {"eager": eager, "onnxruntime": ort, "torchvision": torchvision}
                if with_bf16:
                    steps["eager_bf16"] = eager_bf16
                times: dict[str, list[float]] = {k: [] for k in steps}
                for fn in steps.values():
                    for _ in range(args.warmup):
                        fn()
                keys = list(steps)
                for i in range(args.repeat):
                    order = keys[i % len(keys) :] + keys[: i % len(keys)]
                    for k in order:
                        times[k].append(_timed(steps[k]) / batch)
                    print(f"  {arch} batch {batch} round {i + 1}/{args.repeat}: "
                          + ", ".join(f"{k} {times[k][-1]:.0f} ms/img" for k in keys), file=sys.stderr, flush=True)
                agree = results["eager"] == results["onnxruntime"]["num_detections"].tolist()
                rows.append((arch, batch, {k: statistics.median(v) for k, v in times.items()}, agree))
                if with_bf16:
                    bf16_rows.append((arch, batch, statistics.median(times["eager_bf16"]),
                                      statistics.median(times["torchvision"]), results["eager_bf16"], results["eager"]))
                del run
            del ours, tv

    print()
    header = (f"{'model':<10} {'batch':>5} {'eager ms/img':>13} {'onnxrt ms/img':>14} {'tv ms/img':>10} "
              f"{'eager img/s':>12} {'onnxrt img/s':>13} {'tv img/s':>9} {'eager/tv':>9} {'onnxrt/tv':>10} agree  targets")
    print(header)
    print("-" * len(header))
    for arch, batch, med, agree in rows:
        e, o, t = med["eager"], med["onnxruntime"], med["torchvision"]
        re_, ro = e / t, o / t
        verdict = (f"eager <= {TARGETS['eager']} {'ok' if re_ <= TARGETS['eager'] else 'MISSED'}, "
                   f"onnxrt <= {TARGETS['onnxruntime']} {'ok' if ro <= TARGETS['onnxruntime'] else 'MISSED'}")
        print(f"{arch:<10} {batch:>5} {e:>13.1f} {o:>14.1f} {t:>10.1f} {1e3 / e:>12.2f} {1e3 / o:>13.2f} "
              f"{1e3 / t:>9.2f} {re_:>9.3f} {ro:>10.3f} {'yes' if agree else 'NO':>5}  {verdict}")

    if bf16_rows:
        print("\nlossreg eager under bf16 autocast (a precision change, not like for like: torchvision runs fp32)")
        header = f"{'model':<10} {'batch':>5} {'bf16 ms/img':>12} {'tv ms/img':>10} {'bf16/tv':>8}  detections bf16 vs fp32"
        print(header)
        print("-" * len(header))
        for arch, batch, b, t, n_bf16, n_fp32 in bf16_rows:
            print(f"{arch:<10} {batch:>5} {b:>12.1f} {t:>10.1f} {b / t:>8.3f}  {sum(n_bf16)} vs {sum(n_fp32)}")


if __name__ == "__main__":
    main()
