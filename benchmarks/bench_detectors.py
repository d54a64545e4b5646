"""Training-step and inference time of lossreg's detectors against torchvision's, side by side.

Models: ``retinanet_resnet50_fpn`` and ``fcos_resnet50_fpn`` of lossreg against
``torchvision.models.detection.retinanet_resnet50_fpn`` / ``fcos_resnet50_fpn``, in one
process, on the same input tensor, batch, number of classes (80) and ground truths
(``--gts`` random boxes per image), with random weights (``weights=None,
weights_backbone=None``). Targets (issue): training step <= 1.1x torchvision,
inference <= 1.0x.

Fairness:
  * torchvision resizes inside the model (``GeneralizedRCNNTransform``): it gets
    ``min_size = max_size = --size`` so that square ``--size`` inputs keep their size.
    Both models take float images in 0-1 and normalise them inside.
  * Backbone normalisation: torchvision's builders use plain ``BatchNorm2d`` with every
    layer trainable when no weights are given, and so does lossreg with
    ``freeze_bn=False`` (the default without pretrained weights). ``--frozen-bn`` gives
    both frozen BatchNorm (torchvision's backbone built as its builder does with
    pretrained weights, but with all five stages trainable as lossreg has them).
  * Post-processing: score threshold ``--score-thr`` (0.05), per-level pre-NMS top-k
    1000, class-wise NMS (0.5 for RetinaNet, 0.6 for FCOS: torchvision's defaults, set
    on both), 100 detections. With random weights the classification prior (0.01) keeps
    every score below 0.05, so post-processing has nothing to do; ``--score-thr 0``
    makes every candidate pass and times top-k and NMS on full candidate sets.
  * Training step = forward + loss + backward (gradients cleared beforehand, outside the
    timing; no optimizer step for either). Inference = eval forward under
    ``torch.inference_mode()``, post-processing included.
  * Timed runs alternate between the two implementations (the order flips every
    round), after ``--warmup`` untimed runs of each. Reported: min and median in ms, and
    the ratio lossreg / torchvision of the medians and of the mins, and the median of the
    per-round ratios ("paired": each round's two runs are adjacent in time, so it is the
    figure least disturbed by other load on a shared machine). The target check uses the
    ratio of the medians.

    python benchmarks/bench_detectors.py                       # CPU, batch 2, 512x512
    python benchmarks/bench_detectors.py --device cuda --batch 8 --size 800 --repeat 20
    python benchmarks/bench_detectors.py --models fcos --score-thr 0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lossreg  # noqa: E402

NUM_CLASSES = 80
NMS = {"retinanet": 0.5, "fcos": 0.6}
TARGETS = {"train": 1.1, "infer": 1.0}


def make_inputs(batch: int, size: int, num_gts: int, device: str, seed: int = 0):
    """Images ``[B, 3, size, size]`` in 0-1 and ``num_gts`` random boxes (sides 16 px to 3/4 of the image) per image."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=gen)
    targets = []
    for _ in range(batch):
        wh = 16 + torch.rand(num_gts, 2, generator=gen) * (0.75 * size - 16)
        xy = torch.rand(num_gts, 2, generator=gen) * (size - wh)
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(0, NUM_CLASSES, (num_gts,), generator=gen)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images.to(device), targets


def build_ours(arch: str, args: argparse.Namespace) -> nn.Module:
    return lossreg.create_model(
        f"{arch}_resnet50_fpn",
        num_classes=NUM_CLASSES,
        freeze_bn=args.frozen_bn,
        score_thr=args.score_thr,
        nms_thr=NMS[arch],
        pre_nms_topk=1000,
        max_dets=100,
    )


def build_torchvision(arch: str, args: argparse.Namespace) -> nn.Module:
    from torchvision.models.detection import FCOS, RetinaNet, fcos_resnet50_fpn, retinanet_resnet50_fpn

    kwargs = {
        "min_size": args.size,
        "max_size": args.size,
        "score_thresh": args.score_thr,
        "nms_thresh": NMS[arch],
        "detections_per_img": 100,
        "topk_candidates": 1000,
    }
    if not args.frozen_bn:
        builder = {"retinanet": retinanet_resnet50_fpn, "fcos": fcos_resnet50_fpn}[arch]
        return builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, **kwargs)
    # what the builders do with pretrained weights (FrozenBatchNorm2d), all five stages trainable
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    return {"retinanet": RetinaNet, "fcos": FCOS}[arch](backbone, NUM_CLASSES, **kwargs)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_step(model: nn.Module, images, targets, ours: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    """(prepare, run): clear the gradients (untimed); forward with targets, sum of the losses, backward."""

    def prepare() -> None:
        model.zero_grad(set_to_none=True)

    def run() -> None:
        losses = model(images if ours else list(images), targets)
        loss = losses["loss"] if ours else sum(losses.values())
        loss.backward()

    return prepare, run


def infer_step(model: nn.Module, images, ours: bool) -> tuple[Callable[[], None], Callable[[], None], list[int]]:
    """(prepare, run, counts): eval forward under inference_mode; counts collects the detections per batch."""
    counts: list[int] = []

    def run() -> None:
        with torch.inference_mode():
            dets = model(images if ours else list(images))
        counts.append(sum(int(d["boxes"].shape[0]) for d in dets))

    return (lambda: None), run, counts


def timed(prepare: Callable[[], None], run: Callable[[], None], device: str) -> float:
    """Milliseconds of ``run()`` (after an untimed ``prepare()``), synchronising CUDA around it."""
    prepare()
    sync(device)
    t0 = time.perf_counter()
    run()
    sync(device)
    return (time.perf_counter() - t0) * 1e3


def compare(name: str, steps: dict[str, tuple], args: argparse.Namespace) -> dict[str, list[float]]:
    """Warm up both, then ``repeat`` rounds alternating which implementation goes first."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for prepare, run in steps.values():
        for _ in range(args.warmup):
            timed(prepare, run, args.device)
    keys = list(steps)
    for i in range(args.repeat):
        for k in keys if i % 2 == 0 else keys[::-1]:
            times[k].append(timed(*steps[k], args.device))
        print(
            f"  {name} round {i + 1}/{args.repeat}: " + ", ".join(f"{k} {times[k][-1]:.0f} ms" for k in keys),
            file=sys.stderr,
            flush=True,
        )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    parser.add_argument("--batch", type=int, default=2, help="images per step [2]")
    parser.add_argument("--size", type=int, default=512, help="side of the square input images [512]")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each implementation [5]")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each first [1]")
    parser.add_argument("--models", default="retinanet,fcos", help="comma-separated: retinanet, fcos [both]")
    parser.add_argument("--modes", default="train,infer", help="comma-separated: train, infer [both]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    parser.add_argument("--gts", type=int, default=10, help="random ground-truth boxes per image [10]")
    parser.add_argument("--score-thr", type=float, default=0.05, help="post-processing score threshold [0.05]")
    parser.add_argument("--frozen-bn", action="store_true", help="frozen BatchNorm in both backbones")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in models if m not in NMS] + [m for m in modes if m not in TARGETS]
    if bad:
        parser.error(f"unknown model or mode {bad}; models: {list(NMS)}, modes: {list(TARGETS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = False

    images, targets = make_inputs(args.batch, args.size, args.gts, args.device, args.seed)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(
        f"torch {torch.__version__}, device {args.device} ({dev}); batch {args.batch}, {args.size}x{args.size}, "
        f"{args.gts} gts/image, {NUM_CLASSES} classes, score_thr {args.score_thr}, "
        f"{'frozen' if args.frozen_bn else 'plain'} BatchNorm; warmup {args.warmup}, repeat {args.repeat}"
    )
    rows = []
    for arch in models:
        torch.manual_seed(args.seed)
        ours = build_ours(arch, args).to(args.device)
        tv = build_torchvision(arch, args).to(args.device)
        for mode in modes:
            if mode == "train":
                ours.train()
                tv.train()
                steps = {
                    "lossreg": train_step(ours, images, targets, True),
                    "torchvision": train_step(tv, images, targets, False),
                }
                note = ""
            else:
                ours.eval()
                tv.eval()
                a, b = infer_step(ours, images, True), infer_step(tv, images, False)
                steps = {"lossreg": a[:2], "torchvision": b[:2]}
            times = compare(f"{arch} {mode}", steps, args)
            if mode == "infer":
                note = f"dets/batch {a[2][-1]} vs {b[2][-1]}"
            rows.append((arch, mode, times, note))
        del ours, tv
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()

    print()
    header = (
        f"{'model':<10} {'mode':<6} {'lossreg min':>12} {'median':>8} {'torchvision min':>16} {'median':>8} "
        f"{'ratio med':>10} {'ratio min':>10} {'paired':>7}  target"
    )
    print(header)
    print("-" * len(header))
    for arch, mode, times, note in rows:
        o, t = times["lossreg"], times["torchvision"]
        r_med = statistics.median(o) / statistics.median(t)
        r_min = min(o) / min(t)
        r_pair = statistics.median(a / b for a, b in zip(o, t))
        ok = "ok" if r_med <= TARGETS[mode] else "MISSED"
        print(
            f"{arch:<10} {mode:<6} {min(o):>10.1f}ms {statistics.median(o):>6.1f}ms {min(t):>14.1f}ms "
            f"{statistics.median(t):>6.1f}ms {r_med:>10.3f} {r_min:>10.3f} {r_pair:>7.3f}  <= {TARGETS[mode]} {ok}"
            + (f"  ({note})" if note else "")
        )


if __name__ == "__main__":
    main()
