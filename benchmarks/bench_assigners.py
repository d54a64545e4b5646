"""Benchmark the vectorised assigners against the straightforward per-gt loop implementations.

Setting (issue 4): a batch of 8 images of 640x640, 5 pyramid levels at strides 8-128
(8,525 anchors per image with one anchor per location, 76,725 with nine), 20 and 100
ground truths per image. For every assigner it prints the milliseconds of
``assign_batch`` (vectorised, all images at once), of per-image ``assign`` calls, and of
the reference loop (``_reference_assigners.py``), checks that all three agree, and
reports the speed-up over the loop (target >= 5x).

It also times a stand-in for an ATSS-ResNet-50 training step (timm ``resnet50``
features at strides 8/16/32, an FPN with P6/P7 and the ATSS head's two 4-conv towers,
forward + backward) and reports assignment as a share of it (target < 10%). On a small
CPU that step is measured on ``--step-batch`` images (default 2) and scaled linearly
to the batch of 8; the output says so.

    python benchmarks/bench_assigners.py                 # everything
    python benchmarks/bench_assigners.py --no-step       # assigners only
    python benchmarks/bench_assigners.py --quick         # 20 gts, one anchor per location, no step
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _reference_assigners import REFERENCES, grid_anchors  # noqa: E402

import lossreg  # noqa: E402

STRIDES = (8, 16, 32, 64, 128)
IMAGE = 640


def make_anchors(anchors_per_location: int) -> tuple[torch.Tensor, list[int]]:
    return grid_anchors(IMAGE, STRIDES, anchors_per_location)


def make_targets(batch: int, num_gts: int, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Random boxes with log-uniform sides in [12, 480] px, some crossing the image border."""
    gen = torch.Generator().manual_seed(seed)
    boxes, labels = [], []
    for _ in range(batch):
        side = torch.exp(torch.empty(num_gts, 2).uniform_(math.log(12), math.log(480), generator=gen))
        center = torch.rand(num_gts, 2, generator=gen) * IMAGE
        boxes.append(torch.cat([center - side / 2, center + side / 2], 1))
        labels.append(torch.randint(0, 80, (num_gts,), generator=gen))
    return boxes, labels


def timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time in ms over ``repeat`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class StandInATSS(nn.Module):
    """ResNet-50 C3-C5 + FPN (P3-P7) + ATSS head towers: the compute of an ATSS-R50 training step."""

    def __init__(self, num_classes: int = 80, channels: int = 256) -> None:
        super().__init__()
        import timm

        self.backbone = timm.create_model("resnet50", features_only=True, out_indices=(2, 3, 4), pretrained=False)
        in_ch = self.backbone.feature_info.channels()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_ch)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_ch)
        self.p6 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

        def tower() -> nn.Sequential:
            layers: list[nn.Module] = []
            for _ in range(4):
                layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(32, channels), nn.ReLU()]
            return nn.Sequential(*layers)

        self.cls_tower, self.reg_tower = tower(), tower()
        self.cls_out = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.reg_out = nn.Conv2d(channels, 4, 3, padding=1)
        self.ctr_out = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        c3, c4, c5 = self.backbone(images)
        p5 = self.lateral[2](c5)
        p4 = self.lateral[1](c4) + nn.functional.interpolate(p5, size=c4.shape[-2:], mode="nearest")
        p3 = self.lateral[0](c3) + nn.functional.interpolate(p4, size=c3.shape[-2:], mode="nearest")
        feats = [self.output[0](p3), self.output[1](p4), self.output[2](p5)]
        feats.append(self.p6(feats[-1]))
        feats.append(self.p7(torch.relu(feats[-1])))
        loss = images.new_zeros(())
        for f in feats:
            c, r = self.cls_tower(f), self.reg_tower(f)
            loss = loss + self.cls_out(c).sigmoid().mean() + self.reg_out(r).abs().mean() + self.ctr_out(r).mean()
        return loss


def time_training_step(batch: int, repeat: int) -> float:
    torch.manual_seed(0)
    model = StandInATSS().train()
    images = torch.randn(batch, 3, IMAGE, IMAGE)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(images).backward()

    return timeit(step, repeat)


def bench_one(
    name: str,
    apl: int,
    anchors: torch.Tensor,
    sizes: list[int],
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
    preds: dict[str, list[torch.Tensor]],
    args: argparse.Namespace,
) -> tuple[float, float, float]:
    """(assign_batch ms, per-image assign ms, reference loop ms) after checking that all three agree."""
    kw = {"anchors_per_location": apl} if name in ("atss", "eatss") else {}
    assigner = lossreg.create_assigner(name, **kw)
    per_image = [tuple(p[i] for p in preds.values()) for i in range(len(boxes))]

    def run_batch() -> list:
        return assigner.assign_batch(anchors, sizes, boxes, labels, **preds)

    def run_single() -> list:
        return [assigner.assign(anchors, sizes, b, lab, *p) for b, lab, p in zip(boxes, labels, per_image)]

    def run_ref() -> list:
        return [REFERENCES[name](anchors, sizes, b, lab, *p, **kw) for b, lab, p in zip(boxes, labels, per_image)]

    for res, one, (ref_inds, ref_iou) in zip(run_batch(), run_single(), run_ref()):
        if not (res.equal(one) and torch.equal(res.gt_inds, ref_inds) and torch.equal(res.max_iou, ref_iou)):
            raise SystemExit(f"{name}: assign_batch, assign and the loop reference disagree")
    return timeit(run_batch, args.repeat), timeit(run_single, args.repeat), timeit(run_ref, args.ref_repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--gts", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--anchors-per-location", type=int, nargs="+", default=[1, 9])
    parser.add_argument("--assigners", nargs="+", default=list(REFERENCES))
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of the vectorised assigners (median)")
    parser.add_argument("--ref-repeat", type=int, default=1, help="timed runs of the loop references (median)")
    parser.add_argument("--no-step", action="store_true", help="skip the training-step stand-in")
    parser.add_argument("--step-batch", type=int, default=2, help="images in the measured training step")
    parser.add_argument("--step-repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.gts, args.anchors_per_location, args.no_step, args.repeat = [20], [1], True, 3

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    print(f"batch {args.batch} x {IMAGE}x{IMAGE}, strides {STRIDES}")
    header = f"{'assigner':<8} {'apl':>3} {'A/img':>6} {'G/img':>5} {'batch ms':>9} {'per-img ms':>10} {'loop ms':>9} {'vs loop':>8}"
    print(header)
    print("-" * len(header))
    batch_ms: dict[tuple[str, int, int], float] = {}
    for apl in args.anchors_per_location:
        anchors, sizes = make_anchors(apl)
        for num_gts in args.gts:
            boxes, labels = make_targets(args.batch, num_gts, seed=num_gts)
            gen = torch.Generator().manual_seed(1)
            pred_boxes = [anchors + torch.randn(anchors.shape, generator=gen) * 4 for _ in boxes]
            pred_boxes = [torch.cat([p[:, :2].minimum(p[:, 2:]), p[:, :2].maximum(p[:, 2:])], 1) for p in pred_boxes]
            pred_scores = [torch.rand(anchors.shape[0], 80, generator=gen) for _ in boxes]
            for name in args.assigners:
                if name == "fcos" and apl != 1:
                    continue  # anchor-free: one point per location
                preds = {"pred_boxes": pred_boxes, "pred_scores": pred_scores} if name == "eatss" else {}
                ms_batch, ms_single, ms_ref = bench_one(name, apl, anchors, sizes, boxes, labels, preds, args)
                batch_ms[(name, apl, num_gts)] = ms_batch
                print(
                    f"{name:<8} {apl:>3} {anchors.shape[0]:>6} {num_gts:>5} {ms_batch:>9.1f} {ms_single:>10.1f} "
                    f"{ms_ref:>9.1f} {ms_ref / ms_batch:>7.1f}x",
                    flush=True,
                )

    if args.no_step:
        return
    step_ms = time_training_step(args.step_batch, args.step_repeat)
    scaled = step_ms * args.batch / args.step_batch
    print()
    print(
        f"ATSS-R50 stand-in step (forward + backward, timm resnet50 C3-C5 + FPN P3-P7 + 2x4-conv GN towers): "
        f"{step_ms:.0f} ms measured at batch {args.step_batch}, scaled x{args.batch / args.step_batch:g} "
        f"to batch {args.batch}: {scaled:.0f} ms"
    )
    for (name, apl, num_gts), ms in batch_ms.items():
        print(
            f"  {name:<8} assign_batch, {apl} anchor(s)/location, {num_gts:>3} gts/img: "
            f"{ms:7.1f} ms = {100 * ms / scaled:.2f}% of the step"
        )


if __name__ == "__main__":
    main()
