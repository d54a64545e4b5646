"""torch.compile against eager lossreg and eager torchvision, side by side in one process.

Compiles lossreg's backbone, neck and the head's two conv towers with ``torch.compile``
(post-processing, assignment and losses stay eager: they have data-dependent shapes) and
times, rounds alternating, after warm-up:

* ``--mode train``: the quick start's training step (``bench_detectors.py --config
  quickstart``: forward with targets, sum of the losses, backward; fp32) of eager lossreg,
  compiled lossreg and torchvision's FCOS of the same size;
* ``--mode infer``: ``fcos_resnet50_fpn`` inference on one ``--size`` image (fp32) with
  inductor's ``freezing`` on (BatchNorm folded into the convolutions, prepacked weights),
  against eager lossreg and torchvision's ``fcos_resnet50_fpn`` with the same weights.

The compile time (the first two calls) is printed apart. Results: ``benchmarks/RESULTS.md``,
"torch.compile, investigated".

    python benchmarks/bench_compile.py --mode train
    python benchmarks/bench_compile.py --mode infer --size 320
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import bench_detectors as bd  # noqa: E402


def compile_network(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with its backbone, neck and head towers compiled."""
    out = copy.deepcopy(model)
    out.backbone = torch.compile(out.backbone)
    out.neck = torch.compile(out.neck)
    out.head.cls_tower = torch.compile(out.head.cls_tower)
    out.head.reg_tower = torch.compile(out.head.reg_tower)
    return out


def time_rounds(fns: dict[str, tuple[Callable[[], None], Callable[[], None]]], repeat: int) -> dict[str, list[float]]:
    """``repeat`` rounds of ``(prepare, run)`` pairs, the order flipping every round; ms of each ``run``."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for prepare, run in fns.values():
        prepare()
        run()
    for i in range(repeat):
        for k in list(fns) if i % 2 == 0 else list(fns)[::-1]:
            prepare, run = fns[k]
            prepare()
            t0 = time.perf_counter()
            run()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("train", "infer"), default="train", help="[train]")
    parser.add_argument("--size", type=int, default=320, help="image side for --mode infer [320]")
    parser.add_argument("--repeat", type=int, default=12, help="timed rounds [12]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.mode == "train":
        ours, images, targets = bd.quickstart_batch()
        tv = bd.quickstart_torchvision(ours.num_classes).train()
        ours.train()
        compiled = compile_network(ours)
        fns = {
            "eager lossreg": bd.train_step(ours, images, targets, True)[:2],
            "compiled lossreg": bd.train_step(compiled, images, targets, True)[:2],
            "torchvision": bd.train_step(tv, images, targets, False)[:2],
        }
    else:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        opts = argparse.Namespace(frozen_bn=False, score_thr=0.05, size=args.size)
        ours, tv = bd.build_ours("fcos", opts).eval(), bd.build_torchvision("fcos", opts).eval()
        bd.copy_torchvision_weights(ours, tv)
        compiled = compile_network(ours)
        x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        fns = {
            "eager lossreg": bd.infer_step(ours, x, True)[:2],
            "compiled lossreg": bd.infer_step(compiled, x, True)[:2],
            "torchvision": bd.infer_step(tv, x, False)[:2],
        }
    prepare, run = fns["compiled lossreg"]
    t0 = time.perf_counter()
    for _ in range(2):
        prepare()
        run()
    print(f"torch {torch.__version__}, cpu ({torch.get_num_threads()} threads), mode {args.mode}: "
          f"compiling and two calls took {time.perf_counter() - t0:.0f} s")
    times = time_rounds(fns, args.repeat)
    tv_med = statistics.median(times["torchvision"])
    for k, v in times.items():
        print(f"{k:<18} median {statistics.median(v):8.1f} ms  min {min(v):8.1f} ms  / torchvision "
              f"{statistics.median(v) / tv_med:.3f}")


if __name__ == "__main__":
    main()
