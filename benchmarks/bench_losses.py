"""Time forward + backward of every registered loss on a realistic dense batch.

Classification losses get ``images x anchors`` rows of ``classes`` logits (~1% positives,
random IoU ``quality``); regression losses get ``images x positives`` box pairs (and
``scores``); delta-space losses get random deltas. Each loss is compared with its
``torchvision.ops`` counterpart where one exists, otherwise with ``focal`` (cls) or
``giou`` (reg). All cases run in one process, interleaved round by round after a warm-up,
and the best (min) and median time per case are reported; ratios use the best.

    python benchmarks/bench_losses.py                      # full size on CPU
    python benchmarks/bench_losses.py --scale 0.05         # quick run
    python benchmarks/bench_losses.py --device cuda --repeat 20
"""

from __future__ import annotations

import argparse
import fnmatch
import inspect
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torchvision.ops as tvops

import lossreg

# lossreg name -> (torchvision.ops function, its label in the table)
TORCHVISION_REFERENCE: dict[str, str] = {
    "focal": "sigmoid_focal_loss",
    "giou": "generalized_box_iou_loss",
    "diou": "distance_box_iou_loss",
    "ciou": "complete_box_iou_loss",
}
FALLBACK_REFERENCE = {"cls": "focal", "reg": "giou"}


@dataclass
class Case:
    name: str
    task: str
    run: Callable[[], torch.Tensor]
    leaves: list[torch.Tensor]
    times: list[float] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per loss (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds before timing (default: 2)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply anchors and positives per image, e.g. 0.05 (default: 1)"
    )
    parser.add_argument("--images", type=int, default=8, help="images per batch (default: 8)")
    parser.add_argument("--anchors", type=int, default=20000, help="anchors per image for cls losses (default: 20000)")
    parser.add_argument("--classes", type=int, default=80, help="number of classes (default: 80)")
    parser.add_argument(
        "--positives", type=int, default=2000, help="positives per image for reg losses (default: 2000)"
    )
    parser.add_argument("--pos-fraction", type=float, default=0.01, help="fraction of positive anchors (default: 0.01)")
    parser.add_argument("--losses", default="*", help="fnmatch pattern selecting the losses (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _forward_accepts(module: torch.nn.Module, name: str) -> bool:
    return name in inspect.signature(module.forward).parameters


def build_cls_cases(args: argparse.Namespace, device: torch.device) -> list[Case]:
    gen = torch.Generator().manual_seed(args.seed)
    per_image = max(1, round(args.anchors * args.scale))
    n, c = args.images * per_image, args.classes
    is_pos = torch.rand(n, generator=gen) < args.pos_fraction
    labels = torch.full((n,), c, dtype=torch.long)
    labels[is_pos] = torch.randint(0, c, (int(is_pos.sum()),), generator=gen)
    # Positives' IoU with their gt in [0.3, 1), negatives' max IoU with any gt in [0, 0.5).
    quality = torch.where(is_pos, 0.3 + 0.7 * torch.rand(n, generator=gen), 0.5 * torch.rand(n, generator=gen))
    # Logits around the focal prior (p ~ 0.01) as early in training, with spread.
    base_logits = torch.randn(n, c + 1, generator=gen) * 2.0 - 4.6
    image_ids = torch.arange(args.images).repeat_interleave(per_image)
    labels, quality, image_ids = labels.to(device), quality.to(device), image_ids.to(device)
    num_pos = max(int(is_pos.sum()), 1)
    onehot = torch.zeros(n, c, device=device)
    onehot[is_pos.to(device), labels[is_pos.to(device)]] = 1.0

    cases = []
    for name in lossreg.list_components("loss", args.losses, task="cls"):
        loss = lossreg.create_loss(name).to(device)
        cols = c + 1 if getattr(loss, "background_column", False) else c
        x = base_logits[:, :cols].clone().to(device).requires_grad_()
        kwargs = {"quality": quality, "avg_factor": num_pos}
        if _forward_accepts(loss, "image_ids"):
            kwargs["image_ids"] = image_ids

        def run(loss=loss, x=x, kwargs=kwargs) -> torch.Tensor:
            return loss(x, labels, **kwargs)

        cases.append(Case(name, "cls", run, [x]))
    if fnmatch.fnmatchcase("focal", args.losses):
        x = base_logits[:, :c].clone().to(device).requires_grad_()

        def run_tv(x=x) -> torch.Tensor:
            return tvops.sigmoid_focal_loss(x, onehot, reduction="sum") / num_pos

        cases.append(Case("tv:sigmoid_focal_loss", "cls", run_tv, [x]))
    return cases


def build_reg_cases(args: argparse.Namespace, device: torch.device) -> list[Case]:
    gen = torch.Generator().manual_seed(args.seed + 1)
    m = args.images * max(1, round(args.positives * args.scale))
    xy = torch.rand(m, 2, generator=gen) * 600
    wh = 8 + torch.rand(m, 2, generator=gen) * 300
    target = torch.cat([xy, xy + wh], dim=1)
    # Predictions: the target jittered by ~15% of its size, kept valid (x2 > x1).
    jitter = torch.randn(m, 4, generator=gen) * 0.15 * wh.repeat(1, 2)
    pred = target + jitter
    pred[:, 2:] = torch.maximum(pred[:, 2:], pred[:, :2] + 1.0)
    scores = torch.rand(m, generator=gen)
    deltas_pred, deltas_target = torch.randn(m, 4, generator=gen) * 0.5, torch.randn(m, 4, generator=gen) * 0.5
    target, scores, deltas_target = target.to(device), scores.to(device), deltas_target.to(device)

    cases = []
    for name in lossreg.list_components("loss", args.losses, task="reg"):
        loss = lossreg.create_loss(name).to(device)
        delta = getattr(loss, "space", "box") == "delta"
        p = (deltas_pred if delta else pred).clone().to(device).requires_grad_()
        t = deltas_target if delta else target

        def run(loss=loss, p=p, t=t) -> torch.Tensor:
            return loss(p, t, scores=scores)

        cases.append(Case(name, "reg", run, [p]))
    for name, fn_name in TORCHVISION_REFERENCE.items():
        if name == "focal" or not fnmatch.fnmatchcase(name, args.losses):
            continue
        p = pred.clone().to(device).requires_grad_()
        tv_fn = getattr(tvops, fn_name)

        def run_tv(p=p, fn=tv_fn) -> torch.Tensor:
            return fn(p, target, reduction="mean")

        cases.append(Case(f"tv:{fn_name}", "reg", run_tv, [p]))
    return cases


def time_cases(cases: list[Case], device: torch.device, warmup: int, repeat: int) -> None:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step(case: Case) -> float:
        sync()
        start = time.perf_counter()
        case.run().backward()
        sync()
        elapsed = time.perf_counter() - start
        for leaf in case.leaves:
            leaf.grad = None
        return elapsed

    for _ in range(warmup):
        for case in cases:
            step(case)
    # Interleaved rounds: slow drifts (thermal, other processes) hit every loss alike.
    for _ in range(repeat):
        for case in cases:
            case.times.append(step(case))


def report(cases: list[Case]) -> str:
    # Ratios use the best round: on a shared machine other processes only ever add time, so the minimum
    # is the steadiest estimate of the loss's own cost (as timeit recommends); the median is shown too.
    ms = {case.name: 1000 * min(case.times) for case in cases}
    median = {case.name: 1000 * statistics.median(case.times) for case in cases}
    rows = []
    for case in cases:
        if case.name.startswith("tv:"):
            continue
        if case.name in TORCHVISION_REFERENCE and f"tv:{TORCHVISION_REFERENCE[case.name]}" in ms:
            ref = f"tv:{TORCHVISION_REFERENCE[case.name]}"
        else:
            ref = FALLBACK_REFERENCE[case.task]
        ratio = ms[case.name] / ms[ref] if ref in ms and ref != case.name else None
        rows.append((case.name, case.task, ms[case.name], ref if ratio is not None else "-", ratio))
    rows += [(c.name, c.task, ms[c.name], "-", None) for c in cases if c.name.startswith("tv:")]
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'loss':<{width}} | task | {'min ms':>9} | {'median ms':>9} | {'reference':<28} | ratio |"]
    lines.append(f"|{'-' * (width + 2)}|------|{'-' * 11}|{'-' * 11}|{'-' * 30}|-------|")
    for name, task, t, ref, ratio in rows:
        r = f"{ratio:5.2f}" if ratio is not None else "    -"
        lines.append(f"| {name:<{width}} | {task:<4} | {t:9.1f} | {median[name]:9.1f} | {ref:<28} | {r} |")
    return "\n".join(lines)


def check_agreement(cases: list[Case]) -> list[str]:
    """Each loss with a torchvision twin must compute the same value, or the timing compares different work."""
    by_name = {case.name: case for case in cases}
    notes = []
    for name, fn_name in TORCHVISION_REFERENCE.items():
        ours, theirs = by_name.get(name), by_name.get(f"tv:{fn_name}")
        if ours is None or theirs is None:
            continue
        with torch.no_grad():
            a, b = ours.run().float(), theirs.run().float()
        rel = (a - b).abs().item() / max(b.abs().item(), 1e-12)
        notes.append(f"{name} vs torchvision.ops.{fn_name}: relative difference {rel:.1e}")
    return notes


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    n_cls = args.images * max(1, round(args.anchors * args.scale))
    n_reg = args.images * max(1, round(args.positives * args.scale))
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"cls: N={n_cls} x C={args.classes}, reg: N={n_reg}; warmup={args.warmup} repeat={args.repeat}"
    )
    # The small regression batch runs first: on CPU, after the classification cases have churned through
    # gigabytes of large tensors, small-tensor ops are an order of magnitude slower (allocator page faults).
    reg_cases = build_reg_cases(args, device)
    time_cases(reg_cases, device, args.warmup, args.repeat)
    cls_cases = build_cls_cases(args, device)
    time_cases(cls_cases, device, args.warmup, args.repeat)
    print(report(cls_cases + reg_cases))
    for note in check_agreement(cls_cases + reg_cases):
        print(note)


if __name__ == "__main__":
    main()
