"""Training-step and inference time of lossreg's detectors against torchvision's, side by side.

Models: ``retinanet_resnet50_fpn`` and ``fcos_resnet50_fpn`` of lossreg against
``torchvision.models.detection.retinanet_resnet50_fpn`` / ``fcos_resnet50_fpn``, in one
process, on the same input tensor, batch, number of classes (80) and ground truths
(``--gts`` random boxes per image), with random weights (``weights=None,
weights_backbone=None``). Targets (issue 18): training step <= 0.9x torchvision at R50
(<= 0.85x at the quick-start size), inference <= 1.0x.

Fairness:
  * Same weights: torchvision's detector is built with random weights and lossreg's gets a
    copy of them (``copy_torchvision_weights``; the timm and torchvision ResNet-50 and the
    torchvision FPN have the same parameters, the heads are renamed), so both compute the
    same features and logits and post-processing sees the same candidates. The first
    training loss of each is printed as a cross-check (they differ only as far as the
    differences listed below make them). ``--own-init`` keeps lossreg's
    own initialisation instead (another random draw of the same kind of init, so
    the two then score different candidates).
  * torchvision resizes inside the model (``GeneralizedRCNNTransform``): it gets
    ``min_size = max_size = --size`` so that square ``--size`` inputs keep their size
    (its bilinear resize at scale 1 and its batching copy stay in its time). Both models
    take float images in 0-1 and normalise them inside with the ImageNet mean/std.
  * Backbone normalisation: torchvision's builders use plain ``BatchNorm2d`` with every
    layer trainable when no weights are given, and so does lossreg with
    ``freeze_bn=False`` (the default without pretrained weights). ``--frozen-bn`` gives
    both frozen BatchNorm (torchvision's backbone built as its builder does with
    pretrained weights, but with all five stages trainable as lossreg has them).
  * Post-processing: score threshold ``--score-thr`` (0.05), per-level pre-NMS top-k
    1000, class-wise NMS (0.5 for RetinaNet, 0.6 for FCOS: torchvision's defaults, set
    on both), 100 detections per image. torchvision's FCOS scores are
    ``sqrt(cls * centerness)`` where lossreg's are ``cls * centerness``, so torchvision's
    FCOS gets ``sqrt(--score-thr)``: the same candidates pass in both. With random
    weights (and BatchNorm statistics updated by the training steps, which run first)
    hardly any score passes 0.05; ``--score-thr 0`` makes every candidate pass and times
    top-k and NMS on full candidate sets (the "detections" column says how many came out).
  * Training step = forward + loss + backward (gradients cleared beforehand, outside the
    timing; no optimizer step for either). Inference = eval forward under
    ``torch.inference_mode()``, post-processing included.
  * Timed runs alternate between the two implementations (the order flips every
    round), after ``--warmup`` untimed runs of each. Reported: min and median in ms, and
    the ratio lossreg / torchvision of the medians and of the mins, and the median of the
    per-round ratios ("paired": each round's two runs are adjacent in time, so it is the
    figure least disturbed by other load on a shared machine). The target check uses the
    ratio of the medians.

Differences that remain between the implementations:
  * lossreg normalises the losses by the positives of the whole batch; torchvision's
    RetinaNet normalises per image and averages the images (its FCOS, like lossreg, over
    the batch); torchvision rounds its anchor coordinates to integers; lossreg's FCOS
    weights the GIoU loss of each positive by its centerness target (FCOS paper practice,
    ``reg_weighting="quality"``) where torchvision's does not, and has a learnable scale
    per level; FCOS scoring as above.
  * lossreg's backbone is timm's ``resnet50`` (``features_only``), torchvision's its own;
    both run the same convolutions.

Results: ``benchmarks/RESULTS.md`` (``run_all.py`` runs this script at ``r50`` and at
``quickstart``). In short, on a 2-core CPU with native bf16: like for like (both fp32, or
both bf16) the two run within a few percent of each other, since more than 95% of either
step is the same convolutions; with each library's defaults (lossreg's bf16 autocast,
torchvision's fp32) lossreg's step takes 0.5-0.65x torchvision's.

Configurations (``--config``):
  * ``r50`` [default]: the two ResNet-50 detectors above.
  * ``quickstart``: ``recipes/quickstart.yaml``'s detector (ATSS R18, 64-channel FPN and
    head with 2 convs, strides 8-32) against torchvision's FCOS of the same size
    (``_torchvision_twins.py``: torchvision's ResNet-18 body, FPN and ``FCOSHead`` cut to 2
    convs), each with its own random init, on the quick start's first training batch from
    lossreg's data pipeline (8 synthetic images of 128 px). ``--batch``, ``--size``,
    ``--gts`` and ``--models`` do not apply. Targets (issue 18): training step <= 0.85x
    torchvision's here, <= 0.9x at ``r50``.

Precisions (``--precisions``, comma-separated, each measured in turn):
  * ``fp32`` [default]: both in float32;
  * ``bf16`` / ``fp16``: both under that autocast;
  * ``defaults``: each as its trainer runs it: lossreg with ``train.amp: auto`` and
    ``train.channels_last: auto`` resolved for the device (bf16 autocast on a CPU with
    native bf16 or a bf16 CUDA device), torchvision in float32 (its reference scripts
    train in fp32 unless ``--amp`` is given).

    python benchmarks/bench_detectors.py                       # CPU, batch 2, 512x512
    python benchmarks/bench_detectors.py --device cuda --batch 8 --size 800 --repeat 20
    python benchmarks/bench_detectors.py --models fcos --score-thr 0
    python benchmarks/bench_detectors.py --config quickstart --precisions defaults,fp32 --repeat 20
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import lossreg  # noqa: E402
from lossreg.engine.precision import Precision, resolve_precision  # noqa: E402

NUM_CLASSES = 80
NMS = {"retinanet": 0.5, "fcos": 0.6}
TARGETS = {"r50": {"train": 0.9, "infer": 1.0}, "quickstart": {"train": 0.85, "infer": 1.0}}
PRECISIONS = ("fp32", "bf16", "fp16", "defaults")


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


def quickstart_batch() -> tuple[nn.Module, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """The quick start's detector and its first training batch from lossreg's data pipeline."""
    from lossreg._factory import build_from_recipe
    from lossreg.data import build_dataset, collate

    recipe = lossreg.load_recipe("quickstart")
    train = build_dataset(recipe.data.train, recipe.data, train=True)
    recipe = recipe.with_overrides([f"model.num_classes={train.num_classes}"])
    model = build_from_recipe(recipe, label_names=list(train.class_names))
    images, targets, _ = collate([train[i] for i in range(recipe.train.batch_size)])
    return model, images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]


def quickstart_torchvision(num_classes: int) -> nn.Module:
    """torchvision's FCOS at the quick start's size (ResNet-18, 64 channels, 2 convs, strides 8-32)."""
    from _torchvision_twins import Config, build_torchvision

    return build_torchvision("fcos", Config(num_classes=num_classes))


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
        # torchvision's FCOS scores are sqrt(cls * centerness), lossreg's cls * centerness: sqrt(thr) keeps the same set
        "score_thresh": math.sqrt(args.score_thr) if arch == "fcos" else args.score_thr,
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


_HEAD_NAMES = {"cls_logits": "cls_out", "bbox_reg": "reg_out", "bbox_ctrness": "quality_out"}


def _lossreg_key(key: str) -> str:
    """The lossreg state-dict key of a torchvision RetinaNet/FCOS key (ResNet names are the same in timm)."""
    key = re.sub(r"^backbone\.fpn\.", "neck.fpn.", key)
    m = re.match(r"^head\.(classification|regression)_head\.(.*)$", key)
    if not m:
        return key
    tower, rest = ("cls" if m[1] == "classification" else "reg"), m[2]
    # RetinaNet: conv.{i}.0 (Conv2dNormActivation of conv + ReLU) -> tower.{2i}; FCOS: conv.{j} -> tower.{j}
    rest = re.sub(r"^conv\.(\d+)\.0\.", lambda c: f"conv.{2 * int(c[1])}.", rest)
    rest = re.sub(r"^conv\.", f"{tower}_tower.", rest)
    name, _, param = rest.partition(".")
    return f"head.{_HEAD_NAMES.get(name, name)}.{param}"


def copy_torchvision_weights(ours: nn.Module, tv: nn.Module) -> None:
    """Give lossreg's detector torchvision's (random) weights and BatchNorm statistics.

    Same weights make the two detectors score the same candidates, so post-processing has the
    same work in both. torchvision's FCOS tower convs carry a bias (initialised to 0) where
    lossreg's GroupNorm towers have none; lossreg's FCOS scales (1.0) have no torchvision twin.
    """
    own = ours.state_dict()
    mapped, dropped = {}, []
    for key, value in tv.state_dict().items():
        target = _lossreg_key(key)
        if target in own and own[target].shape == value.shape:
            mapped[target] = value
        elif key.endswith(".bias") and not value.any():
            dropped.append(key)
        else:
            raise RuntimeError(f"no lossreg twin for torchvision's {key} {tuple(value.shape)} (tried {target})")
    missing = [k for k in own if k not in mapped and not re.match(r"head\.(balancer|scales)\.", k)]
    if missing:
        raise RuntimeError(f"torchvision has no weights for lossreg's {missing[:5]}")
    ours.load_state_dict(mapped, strict=False)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def resolve(side: str, precision: str, device: str) -> Precision:
    """What ``precision`` means for ``side`` ("lossreg" or "torchvision"); see the module docstring."""
    if precision == "defaults":
        return resolve_precision("auto", device, "auto") if side == "lossreg" else resolve_precision("fp32", device, False)
    return resolve_precision(precision, device, False)


def autocast(device: str, precision: Precision):
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=precision.dtype or torch.float32, enabled=precision.dtype is not None)


def train_step(
    model: nn.Module, images, targets, ours: bool, device: str = "cpu", precision: Precision | None = None
) -> tuple[Callable[[], None], Callable[[], None], list[torch.Tensor]]:
    """(prepare, run, values): clear the gradients (untimed); forward with targets, sum of the losses, backward.

    The forward runs under ``precision``'s autocast (None: float32), the backward outside it,
    as the trainers do. ``values`` collects each step's total loss (detached, read after the timing)."""
    values: list[torch.Tensor] = []
    precision = precision or resolve_precision("fp32", device, False)

    def prepare() -> None:
        model.zero_grad(set_to_none=True)

    def run() -> None:
        with autocast(device, precision):
            losses = model(images if ours else list(images), targets)
            loss = sum(losses.values())  # both follow torchvision's contract: the parts sum to the total
        loss.backward()
        values.append(loss.detach())

    return prepare, run, values


def infer_step(
    model: nn.Module, images, ours: bool, device: str = "cpu", precision: Precision | None = None
) -> tuple[Callable[[], None], Callable[[], None], list[int]]:
    """(prepare, run, counts): eval forward under inference_mode (and ``precision``'s autocast); counts
    collects the detections per batch."""
    counts: list[int] = []
    precision = precision or resolve_precision("fp32", device, False)

    def run() -> None:
        with torch.inference_mode(), autocast(device, precision):
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


def build_pair(arch: str, args: argparse.Namespace, images_targets):
    """(lossreg model, torchvision model) of one row, seeded by ``--seed``."""
    torch.manual_seed(args.seed)
    if arch == "quickstart":
        ours, _, _ = quickstart_batch()
        tv = quickstart_torchvision(ours.num_classes)
    else:
        ours, tv = build_ours(arch, args), build_torchvision(arch, args)
        if not args.own_init:
            copy_torchvision_weights(ours, tv)
    return ours.to(args.device), tv.to(args.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=tuple(TARGETS), default="r50", help="r50 or quickstart [r50]")
    parser.add_argument("--precisions", default="fp32", help=f"comma-separated, of {', '.join(PRECISIONS)} [fp32]")
    parser.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    parser.add_argument("--batch", type=int, default=2, help="images per step (r50) [2]")
    parser.add_argument("--size", type=int, default=512, help="side of the square input images (r50) [512]")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each implementation [5]")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each first [1]")
    parser.add_argument("--models", default="retinanet,fcos", help="comma-separated (r50): retinanet, fcos [both]")
    parser.add_argument("--modes", default="train,infer", help="comma-separated: train, infer [both]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    parser.add_argument("--gts", type=int, default=10, help="random ground-truth boxes per image (r50) [10]")
    parser.add_argument("--score-thr", type=float, default=0.05, help="post-processing score threshold (r50) [0.05]")
    parser.add_argument("--frozen-bn", action="store_true", help="frozen BatchNorm in both backbones (r50)")
    parser.add_argument(
        "--own-init", action="store_true", help="keep lossreg's own random init instead of copying torchvision's (r50)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    models = ["quickstart"] if args.config == "quickstart" else [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    precisions = [m.strip() for m in args.precisions.split(",") if m.strip()]
    bad = [m for m in models if m not in (*NMS, "quickstart")] + [m for m in modes if m not in ("train", "infer")]
    bad += [p for p in precisions if p not in PRECISIONS]
    if bad:
        parser.error(
            f"unknown model, mode or precision {bad}; models: {list(NMS)}, modes: train, infer, precisions: {PRECISIONS}"
        )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = False

    if args.config == "quickstart":
        _, images, targets = quickstart_batch()
        images = images.to(args.device)
        targets = [{k: v.to(args.device) for k, v in t.items()} for t in targets]
        what = "quick start (ATSS R18 / torchvision FCOS R18, own inits), its first training batch"
    else:
        images, targets = make_inputs(args.batch, args.size, args.gts, args.device, args.seed)
        what = f"{args.gts} gts/image, {NUM_CLASSES} classes, {'frozen' if args.frozen_bn else 'plain'} BatchNorm"
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(
        f"torch {torch.__version__}, device {args.device} ({dev}); batch {images.shape[0]}, "
        f"{images.shape[-2]}x{images.shape[-1]}, {what}, score_thr {args.score_thr}; "
        f"warmup {args.warmup}, repeat {args.repeat}"
    )
    rows = []
    for arch in models:
        ours, tv = build_pair(arch, args, (images, targets))
        for prec in precisions:
            mine, theirs = resolve("lossreg", prec, args.device), resolve("torchvision", prec, args.device)
            layout = torch.channels_last if mine.channels_last else torch.contiguous_format
            ours.to(memory_format=layout)
            own_images = images.contiguous(memory_format=layout)
            for mode in modes:
                ours.train(mode == "train")
                tv.train(mode == "train")
                if mode == "train":
                    a = train_step(ours, own_images, targets, True, args.device, mine)
                    b = train_step(tv, images, targets, False, args.device, theirs)
                else:
                    a = infer_step(ours, own_images, True, args.device, mine)
                    b = infer_step(tv, images, False, args.device, theirs)
                times = compare(f"{arch} {mode} {prec}", {"lossreg": a[:2], "torchvision": b[:2]}, args)
                if mode == "infer":
                    note = f"detections {a[2][-1]} vs {b[2][-1]}"
                else:
                    note = f"first loss {float(a[2][0]):.3f} vs {float(b[2][0]):.3f}"
                rows.append((arch, mode, f"{prec} ({mine.name} / {theirs.name})" if prec == "defaults" else prec, times, note))
        del ours, tv
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()

    print()
    header = (
        f"{'model':<10} {'mode':<6} {'precision':<22} {'lossreg min':>12} {'median':>8} {'torchvision min':>16} "
        f"{'median':>8} {'ratio med':>10} {'ratio min':>10} {'paired':>7}  target"
    )
    print(header)
    print("-" * len(header))
    for arch, mode, prec, times, note in rows:
        o, t = times["lossreg"], times["torchvision"]
        r_med = statistics.median(o) / statistics.median(t)
        r_min = min(o) / min(t)
        r_pair = statistics.median(a / b for a, b in zip(o, t))
        target = TARGETS[args.config][mode]
        ok = "ok" if r_med <= target else "MISSED"
        print(
            f"{arch:<10} {mode:<6} {prec:<22} {min(o):>10.1f}ms {statistics.median(o):>6.1f}ms {min(t):>14.1f}ms "
            f"{statistics.median(t):>6.1f}ms {r_med:>10.3f} {r_min:>10.3f} {r_pair:>7.3f}  <= {target} {ok}"
            + (f"  ({note})" if note else "")
        )


if __name__ == "__main__":
    main()
