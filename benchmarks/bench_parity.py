"""Accuracy parity: lossreg's FCOS and RetinaNet against torchvision's, trained side by side.

Each pair is trained on the quick start's data (the synthetic shapes set, 400 training
and 100 validation images of 128 px, ``recipes/quickstart.yaml``'s ``data`` section with its
horizontal flip) at the quick start's size (ResNet-18 from scratch, 64-channel FPN on
C3-C5 with no extra level, heads of 64 channels and 2 convs, strides 8-32) and the issue's
schedule: ``--iters`` (750) AdamW iterations of batch 8 at lr ``--lr`` (1e-3), weight decay
0.05, 30 warm-up iterations from 1%, cosine decay, EMA of the weights (decay 0.99, as the
trainer's ``ModelEMA``); the EMA model is evaluated with lossreg's COCO evaluation on the
validation split (score threshold 0.05, 100 detections, NMS 0.6 for FCOS and 0.5 for
RetinaNet, torchvision's defaults, set on both).

Paired by seed: for every seed both implementations start from the same weights
(torchvision's random init, copied into lossreg's twin by ``_torchvision_twins.copy_weights``;
``--own-init`` keeps lossreg's own init instead) and see the same images in the same order
with the same flips (lossreg's ``ResumableSampler`` + ``SeededItems``, seeded with the seed).
One training loop trains both; the only differences are the models themselves.

Variants (``--variants``, default ``lossreg``; ``torchvision`` always runs unless ``--no-torchvision``):

    lossreg       lossreg's detector as a user gets it (its defaults) at this configuration
    matched       lossreg with every option set to torchvision's behaviour
                  (_torchvision_twins.lossreg_kwargs(matched=True)); its losses equal
                  torchvision's (tests/detectors/test_loss_parity.py)
    <v>+<k>=<x>   variant <v> with the create_model keyword <k> (dotted: into a dict) set to
                  <x>, for ablations: lossreg+head.reg_weighting=none,
                  lossreg+backbone_args.zero_init_last=true (several: lossreg+a=1+b=2)
    <arch>:<v>    variant <v> for detector <arch> only (fcos:lossreg+head.center_offset=0.0)
    <v>@own       the variant with lossreg's own random init instead of the shared one
                  (lossreg@own: what `lossreg train` starts from)

Output: a table of AP / AP50 per seed and variant, then each variant's paired difference
to torchvision (mean over seeds and a 95% t-interval), and a JSON file under
``benchmarks/results/``. Results on the 2-core development machine are in
``benchmarks/RESULTS.md`` ("Accuracy parity").

    python benchmarks/bench_parity.py                                  # fcos and retinanet, seeds 0,1,2
    python benchmarks/bench_parity.py --detectors fcos --seeds 0 --iters 300
    python benchmarks/bench_parity.py --detectors fcos --variants matched,fcos:reg_weighting=none
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _torchvision_twins import Config, build_lossreg, build_torchvision, copy_weights  # noqa: E402

import lossreg  # noqa: E402
from lossreg.data import build_dataset, collate  # noqa: E402
from lossreg.engine.ablate.stats import mean_interval as paired  # noqa: E402
from lossreg.engine.ema import ModelEMA  # noqa: E402
from lossreg.engine.evaluate import evaluate  # noqa: E402
from lossreg.engine.sampler import ResumableSampler, SeededItems  # noqa: E402
from lossreg.engine.schedule import WarmupSchedule  # noqa: E402

DETECTORS = ("fcos", "retinanet")


def load_data():
    recipe = lossreg.load_recipe("quickstart")
    train = build_dataset(recipe.data.train, recipe.data, train=True)
    val = build_dataset(recipe.data.val, recipe.data, train=False, class_names=train.class_names)
    return train, val


def _parse_value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def variant_applies(variant: str, arch: str) -> bool:
    prefix, sep, _ = variant.partition(":")
    return not sep or prefix == arch


def build_variant(arch: str, variant: str, cfg: Config) -> nn.Module:
    name = variant.partition(":")[2] if ":" in variant else variant
    name = name.removesuffix("@own")
    if name == "torchvision":
        return build_torchvision(arch, cfg)
    base, *mods = name.split("+")
    if base not in ("lossreg", "matched"):
        raise ValueError(f"unknown variant {variant!r}: expected lossreg or matched, then +key=value changes")
    extra: dict[str, Any] = {}
    for mod in mods:
        key, eq, value = mod.partition("=")
        if not eq:
            raise ValueError(f"variant {variant!r}: {mod!r} is not key=value")
        *path, leaf = key.split(".")
        target = extra
        for part in path:
            target = target.setdefault(part, {})
        target[leaf] = _parse_value(value)
    return build_lossreg(arch, cfg, matched=base == "matched", extra=extra)


def train_and_evaluate(
    model: nn.Module, train_set, val_set, seed: int, args: argparse.Namespace, is_torchvision: bool,
    snapshots: list[tuple[int, float, dict[str, torch.Tensor]]] | None = None,
) -> dict[str, Any]:
    """Train ``model`` with the issue's schedule and score its EMA on ``val_set``.

    With ``snapshots``, a copy of the EMA weights is appended at the end of every epoch as
    ``(iteration, training seconds so far, state_dict)``; copying is off the clock.
    """
    sampler = ResumableSampler(len(train_set), shuffle=True, seed=seed)
    loader = torch.utils.data.DataLoader(SeededItems(train_set), batch_size=args.batch, sampler=sampler, collate_fn=collate)
    iters_per_epoch = math.ceil(len(train_set) / args.batch)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    factor = WarmupSchedule("cosine", args.iters, iters_per_epoch, warmup_iters=30, warmup_ratio=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    ema = ModelEMA(model, args.ema_decay)
    model.train()
    it, epoch, start = 0, 0, time.perf_counter()
    first, last = None, []
    while it < args.iters:
        sampler.set_epoch(epoch)
        for images, targets, sizes in loader:
            targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
            if is_torchvision:
                losses = model([images[i, :, :h, :w] for i, (h, w) in enumerate(sizes)], targets)
            else:
                losses = model(images, targets)
            loss = sum(losses.values())
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"loss {float(loss)} at iteration {it + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema.update(model)
            it += 1
            if snapshots is not None and it % iters_per_epoch == 0:
                pause = time.perf_counter()
                state = {k: v.detach().clone() for k, v in ema.module.state_dict().items()}
                snapshots.append((it, pause - start, state))
                start += time.perf_counter() - pause
            value = {k: float(v.detach()) for k, v in losses.items()}
            first = first or value
            last.append(float(loss.detach()))
            if it % args.log_interval == 0:
                print(f"    iter {it}/{args.iters} loss {statistics.mean(last[-args.log_interval:]):.4f}", file=sys.stderr, flush=True)
            if it >= args.iters:
                break
        epoch += 1
    train_s = time.perf_counter() - start
    metrics = evaluate(ema.module, val_set, batch_size=8, max_dets=100)
    return {
        "AP": metrics["AP"],
        "AP50": metrics["AP50"],
        "AP75": metrics["AP75"],
        "train_seconds": round(train_s, 1),
        "first_losses": first,
        "final_loss": statistics.mean(last[-50:]),
    }


def run_task(task: tuple[str, int, str], args: argparse.Namespace, data=None) -> dict[str, Any]:
    """Train and evaluate one (detector, seed, variant) from the seed's shared init."""
    arch, seed, variant = task
    if args.threads or args.jobs > 1:
        torch.set_num_threads(args.threads or 1)
    train_set, val_set = data if data is not None else load_data()
    cfg = Config()
    torch.manual_seed(seed)
    tv = build_torchvision(arch, cfg)  # the seed's init, whatever the variant
    torch.manual_seed(seed)
    model = tv if variant == "torchvision" else build_variant(arch, variant, cfg)
    if variant != "torchvision" and not (args.own_init or variant.endswith("@own")):
        copy_weights(model, tv)
    torch.manual_seed(seed)
    print(f"  {arch} seed {seed} {variant} ...", file=sys.stderr, flush=True)
    result = train_and_evaluate(model, train_set, val_set, seed, args, variant == "torchvision")
    return {"detector": arch, "seed": seed, "variant": variant, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", default="fcos,retinanet", help="comma-separated: fcos, retinanet [both]")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds [0,1,2]")
    parser.add_argument("--iters", type=int, default=750, help="training iterations [750]")
    parser.add_argument("--variants", default="lossreg", help="lossreg variants (see above), comma-separated [lossreg]")
    parser.add_argument("--no-torchvision", action="store_true", help="skip torchvision's runs (ablations only)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument("--own-init", action="store_true", help="lossreg keeps its own random init (timm + its heads)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    parser.add_argument("--log-interval", type=int, default=250)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process [1]")
    parser.add_argument("--output", default=None, help="JSON result path [benchmarks/results/parity-<time>.json]")
    args = parser.parse_args()
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    bad = [d for d in detectors if d not in DETECTORS]
    if bad:
        parser.error(f"unknown detector(s) {bad}; expected {DETECTORS}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    extra = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)

    train_set, val_set = load_data()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"{args.iters} iterations x batch {args.batch}, AdamW lr {args.lr}, EMA {args.ema_decay}; seeds {seeds}; "
        f"{'own' if args.own_init else 'shared'} init",
        flush=True,
    )
    out = Path(args.output) if args.output else HERE / "results" / (
        f"parity-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(runs: list[dict[str, Any]], summary: dict[str, Any] | None) -> None:
        record = {
            "command": " ".join(sys.argv),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.platform(),
            "args": vars(args),
            "complete": summary is not None,
            "runs": runs,
            "paired": summary or {},
        }
        out.write_text(json.dumps(record, indent=1) + "\n")

    tasks = []
    for arch in detectors:
        variants = [] if args.no_torchvision else ["torchvision"]
        variants += [v for v in extra if variant_applies(v, arch)]
        tasks += [(arch, seed, variant) for seed in seeds for variant in variants]
    runs: list[dict[str, Any]] = []

    def done(result: dict[str, Any]) -> None:
        runs.append(result)
        write(runs, None)  # after every run: a long benchmark stopped early keeps what it measured
        print(
            f"  {result['detector']:<9} seed {result['seed']} {result['variant']:<28} AP {result['AP']:.3f} "
            f"AP50 {result['AP50']:.3f} ({result['train_seconds']:.0f} s, final loss {result['final_loss']:.3f})",
            flush=True,
        )

    if args.jobs <= 1:
        data = (train_set, val_set)
        for task in tasks:
            done(run_task(task, args, data))
    else:  # each run in its own process (one torch thread each unless --threads says otherwise)
        import concurrent.futures
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            futures = [pool.submit(run_task, task, args) for task in tasks]
            for fut in concurrent.futures.as_completed(futures):
                done(fut.result())
    order = {task: i for i, task in enumerate(tasks)}
    runs.sort(key=lambda r: order[(r["detector"], r["seed"], r["variant"])])

    print()
    print(f"{'detector':<10} {'variant':<28} " + " ".join(f"{'seed ' + str(s):>13}" for s in seeds) + "   mean AP  AP50")
    summary: dict[str, Any] = {}
    for arch in detectors:
        by = {(r["variant"], r["seed"]): r for r in runs if r["detector"] == arch}
        variants = list(dict.fromkeys(r["variant"] for r in runs if r["detector"] == arch))
        for v in variants:
            cells = " ".join(f"{by[v, s]['AP']:.3f}/{by[v, s]['AP50']:.3f}".rjust(13) for s in seeds)
            ap = statistics.mean(by[v, s]["AP"] for s in seeds)
            ap50 = statistics.mean(by[v, s]["AP50"] for s in seeds)
            sd = f"  (seed sd {statistics.stdev(by[v, s]['AP'] for s in seeds):.3f})" if len(seeds) > 1 else ""
            print(f"{arch:<10} {v:<28} {cells}   {ap:.3f}  {ap50:.3f}{sd}")
        for v in variants:
            if v == "torchvision" or "torchvision" not in variants:
                continue
            for key in ("AP", "AP50"):
                diffs = [by[v, s][key] - by["torchvision", s][key] for s in seeds]
                mean, half = paired(diffs)
                summary[f"{arch}/{v}/{key}"] = {"diffs": diffs, "mean": mean, "ci95": half}
    print()
    print("paired difference lossreg - torchvision (mean over seeds, 95% t-interval)")
    for name, s in summary.items():
        ci = f" +- {s['ci95']:.3f}  [{s['mean'] - s['ci95']:+.3f}, {s['mean'] + s['ci95']:+.3f}]" if s["ci95"] is not None else ""
        print(f"  {name:<40} {s['mean']:+.3f}{ci}   per seed " + " ".join(f"{d:+.3f}" for d in s["diffs"]))

    write(runs, summary)
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
