"""Where a lossreg training step spends its time: the network against assignment, losses and the balancer.

For one configuration, on one batch, this times (rounds alternating, after warm-up):

* the **full step**: forward with targets, ``sum(loss_dict.values())``, backward (the
  trainer's step without the optimizer);
* the **network alone**: the same forward through backbone, neck and head towers, a
  trivial loss (the mean of every output), backward;
* inside the full step's forward, with wall-clock timers around the head's methods:
  ``assign`` (the assigner), ``loss_terms`` (targets and the three losses), ``balance``
  (the balancer), and the rest of ``flat_outputs`` (flattening, anchors, box decoding).

The share outside the network is ``(full - network) / full``: the forward parts above and
their backward. Targets (issue 18): under 8% of the quick-start step, under 5% at R50.

Configurations:

* ``quickstart``: ``recipes/quickstart.yaml``'s model (ATSS R18, 64-channel FPN and head,
  strides 8-32) on its first training batch (8 images of 128 px) from lossreg's own data
  pipeline;
* ``r50``: ``atss_resnet50_fpn`` with 80 classes on ``--batch`` random 512 px images with
  10 boxes each (bench_detectors.py's inputs).

Precision: ``--amp auto`` resolves as ``train.amp: auto`` does (bf16 autocast on a CPU
with native bf16), ``fp32`` / ``bf16`` force it. ``--trace FILE`` also writes a
``torch.profiler`` Chrome trace of one full step and prints its top operators.

    python benchmarks/profile_step.py --config quickstart --amp fp32
    python benchmarks/profile_step.py --config r50 --amp auto --threads 2
    python benchmarks/profile_step.py --config both    # what run_all.py runs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_detectors import quickstart_batch  # noqa: E402
from profile_epoch import Timers  # noqa: E402

import lossreg  # noqa: E402
from lossreg.engine.precision import resolve_precision  # noqa: E402

PARTS = ("flatten+decode", "assign", "loss_terms", "balance")


def r50_batch(batch: int) -> tuple[nn.Module, torch.Tensor, list[dict[str, torch.Tensor]]]:
    from bench_detectors import NUM_CLASSES, make_inputs

    model = lossreg.create_model("atss_resnet50_fpn", num_classes=NUM_CLASSES)
    images, targets = make_inputs(batch, 512, 10, "cpu")
    return model, images, targets


class PartTimer:
    """Wall-clock totals of the head's methods while installed (instance attributes shadow the class's)."""

    NAMES = {"forward": "head towers", "flat_outputs": "flat_outputs", "assign": "assign",
             "loss_terms": "loss_terms", "balance": "balance"}

    def __init__(self, head: nn.Module) -> None:
        self.head = head
        self.timers = Timers()

    def install(self) -> PartTimer:
        for name, label in self.NAMES.items():
            self.timers.wrap(self.head, name, label)
        return self

    def remove(self) -> None:
        for name in self.NAMES:
            self.head.__dict__.pop(name, None)

    def take(self) -> dict[str, float]:
        t = dict(self.timers.total)
        self.timers.total.clear()
        t["flatten+decode"] = t.pop("flat_outputs", 0.0) - t.get("head towers", 0.0)
        return t


def full_step(model: nn.Module, images, targets, autocast: Callable) -> None:
    model.zero_grad(set_to_none=True)
    with autocast():
        losses = model(images, targets)
    sum(losses.values()).backward()


def network_step(model: nn.Module, images, targets, autocast: Callable) -> None:
    """Backbone, neck and head towers forward, mean of every output, backward: no assignment, no losses."""
    from lossreg.ops.images import pad_images

    model.zero_grad(set_to_none=True)
    with autocast():
        batch, sizes = pad_images(images)
        cls, reg, qual = model.head(model._features(batch, sizes))
        loss = sum(t.float().mean() for t in [*cls, *reg, *(qual or [])])
    loss.backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("quickstart", "r50", "both"), default="quickstart", help="[quickstart]")
    parser.add_argument("--amp", choices=("auto", "bf16", "fp32"), default="auto", help="[auto: train.amp's rule]")
    parser.add_argument("--batch", type=int, default=2, help="r50 images per step [2]")
    parser.add_argument("--repeat", type=int, default=10, help="timed rounds [10]")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first [2]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    parser.add_argument(
        "--channels-last", choices=("auto", "true", "false"), default="auto", help="[auto: train.channels_last's rule]"
    )
    parser.add_argument("--trace", type=Path, default=None, help="write a Chrome trace of one full step here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for config in ("quickstart", "r50") if args.config == "both" else (args.config,):
        profile_config(config, args)


def profile_config(config: str, args: argparse.Namespace) -> None:
    """Time and print one configuration's step (see the module docstring)."""
    torch.manual_seed(0)
    model, images, targets = quickstart_batch() if config == "quickstart" else r50_batch(args.batch)
    model.train()
    layout = {"true": True, "false": False}.get(args.channels_last, "auto")
    precision = resolve_precision(args.amp, "cpu", layout)
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def autocast():
        return torch.autocast("cpu", dtype=precision.dtype or torch.float32, enabled=precision.dtype is not None)

    print(
        f"\ntorch {torch.__version__}, cpu ({torch.get_num_threads()} threads); config {config}: "
        f"batch {images.shape[0]}, {images.shape[-2]}x{images.shape[-1]}, "
        f"{sum(len(t['boxes']) for t in targets)} gts; precision {precision.name} ({precision.reason}), "
        f"channels_last {precision.channels_last}; "
        f"warmup {args.warmup}, repeat {args.repeat}"
    )
    timer = PartTimer(model.head)
    steps = {"full": full_step, "network": network_step}
    for _ in range(args.warmup):
        for step in steps.values():
            step(model, images, targets, autocast)
    times: dict[str, list[float]] = {k: [] for k in steps}
    parts: dict[str, list[float]] = defaultdict(list)
    for i in range(args.repeat):
        for name in list(steps) if i % 2 == 0 else list(steps)[::-1]:
            if name == "full":
                timer.install()
            t0 = time.perf_counter()
            steps[name](model, images, targets, autocast)
            times[name].append(time.perf_counter() - t0)
            if name == "full":
                timer.remove()
                for k, v in timer.take().items():
                    parts[k].append(v)

    full, net = statistics.median(times["full"]), statistics.median(times["network"])
    print(f"\n{'':<34}{'median ms':>10}{'min ms':>9}{'share':>8}")
    print(f"{'full step (fwd + losses + bwd)':<34}{full * 1e3:>10.1f}{min(times['full']) * 1e3:>9.1f}{1:>8.1%}")
    print(f"{'network alone (fwd + bwd)':<34}{net * 1e3:>10.1f}{min(times['network']) * 1e3:>9.1f}{net / full:>8.1%}")
    outside = full - net
    print(f"{'outside the network (difference)':<34}{outside * 1e3:>10.1f}{'':>9}{outside / full:>8.1%}")
    print("  of which forward, timed inside the full step:")
    for k in PARTS:
        v = statistics.median(parts[k])
        print(f"    {k:<30}{v * 1e3:>10.1f}{min(parts[k]) * 1e3:>9.1f}{v / full:>8.1%}")
    fwd = sum(statistics.median(parts[k]) for k in PARTS)
    print(f"    {'their backward (the rest)':<30}{(outside - fwd) * 1e3:>10.1f}{'':>9}{(outside - fwd) / full:>8.1%}")
    target = 0.08 if config == "quickstart" else 0.05
    verdict = "ok" if outside / full < target else "MISSED"
    print(f"\n{config}: outside-network share {outside / full:.1%} ({precision.name}); target < {target:.0%}: {verdict}")

    if args.trace is not None:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            with torch.profiler.record_function("full step"):
                full_step(model, images, targets, autocast)
        prof.export_chrome_trace(str(args.trace))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        print(f"trace written to {args.trace}")


if __name__ == "__main__":
    main()
