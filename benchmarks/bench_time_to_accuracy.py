"""Time to accuracy: the quick start (``lossreg train recipes/quickstart.yaml``) against torchvision's FCOS.

For every seed, one after the other in this process, each with the whole machine:

* **torchvision**: its FCOS at the quick start's size (``_torchvision_twins.py``: ResNet-18
  body, 64-channel FPN, ``FCOSHead`` with 2 convs, strides 8-32, its own random init),
  trained by ``bench_parity.py``'s loop at the quick start's settings (data, 750 AdamW
  iterations of batch 8, lr 1e-3, cosine, EMA 0.99) in float32, torchvision's default;
* **lossreg**: the quick start itself, run by lossreg's ``Trainer`` from
  ``recipes/quickstart.yaml`` with ``train.seed`` set to the seed and every default (on a
  CPU with native bf16: bf16 autocast), its checkpoints and plots included; only the
  in-run evaluations are moved off the clock (``eval.interval`` past the schedule).

Both see the same images in the same order with the same flips (the trainer's sampler and
``SeededItems``, seeded alike). At the end of every epoch a copy of the EMA weights is kept
with the training seconds so far (copying off the clock); after training every copy is
scored on the synthetic ``val`` split with lossreg's COCO evaluation. From the curves:

* torchvision's best AP and the training seconds at which it first reached it;
* the seconds the quick start took to first reach that AP (per seed: the same seed's
  torchvision best), and the ratio to torchvision's seconds. Target (issue 18): <= 0.7x,
  and a quick start that ends clearly above torchvision's best.

The per-epoch curves go to a JSON file under ``benchmarks/results/``; ``--plot`` draws them.

    python benchmarks/bench_time_to_accuracy.py --seeds 0,1
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _torchvision_twins import Config, build_torchvision  # noqa: E402
from bench_parity import load_data, train_and_evaluate  # noqa: E402

import lossreg  # noqa: E402
from lossreg.engine.ablate.stats import mean_interval as paired  # noqa: E402
from lossreg.engine.evaluate import evaluate  # noqa: E402
from lossreg.engine.trainer import Trainer  # noqa: E402

Snapshot = tuple[int, float, dict[str, torch.Tensor]]


def score(model: torch.nn.Module, snapshots: list[Snapshot], val_set) -> list[dict[str, float]]:
    """``[{"iter", "seconds", "AP", "AP50"}]``: every snapshot's weights loaded into ``model`` and scored."""
    curve = []
    for it, seconds, state in snapshots:
        model.load_state_dict(state)
        metrics = evaluate(model, val_set, batch_size=8, max_dets=100)
        curve.append({"iter": it, "seconds": round(seconds, 2), "AP": metrics["AP"], "AP50": metrics["AP50"]})
    return curve


def run_torchvision(seed: int, args: argparse.Namespace, data) -> list[dict[str, float]]:
    train_set, val_set = data
    torch.manual_seed(seed)
    model = build_torchvision("fcos", Config(num_classes=train_set.num_classes))
    snaps: list[Snapshot] = []
    train_and_evaluate(model, train_set, val_set, seed, args, True, snapshots=snaps)
    return score(model, snaps, val_set)


def run_quickstart(seed: int, recipe: str, data) -> tuple[list[dict[str, float]], str]:
    """The quick start through lossreg's Trainer; returns its curve and the precision it ran in."""
    _, val_set = data
    base = lossreg.load_recipe(recipe)
    epochs = base.train.epochs
    overrides = [f"train.seed={seed}", f"eval.interval={epochs + 1}"]
    snaps: list[Snapshot] = []
    clock = {"start": 0.0}

    def keep(trainer: Trainer) -> None:
        if trainer.iteration % trainer.iters_per_epoch == 0:
            pause = time.perf_counter()
            state = {k: v.detach().clone() for k, v in trainer.ema.module.state_dict().items()}
            snaps.append((trainer.iteration, pause - clock["start"], state))
            clock["start"] += time.perf_counter() - pause

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(base.with_overrides(overrides), output_dir=Path(tmp) / "run", progress=False)
        if trainer.ema is None:
            raise SystemExit(f"{recipe}: the recipe trains without EMA; this benchmark scores the EMA weights")
        clock["start"] = time.perf_counter()
        trainer.train(callbacks=[keep])
        model, precision = trainer.ema.module, trainer.precision.name
        return score(model, snaps, val_set), precision


def first_reaching(curve: list[dict[str, float]], ap: float) -> float | None:
    """Training seconds of the first snapshot with ``AP >= ap`` (None: never)."""
    return next((c["seconds"] for c in curve if c["AP"] >= ap - 1e-12), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds [0,1]")
    parser.add_argument("--recipe", default="quickstart",
                        help="lossreg's side: a recipe with the quick start's data section [quickstart]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    parser.add_argument("--output", default=None, help="JSON path [benchmarks/results/time-to-accuracy-<time>.json]")
    parser.add_argument("--plot", default=None, help="also draw AP against training seconds to this PNG")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    recipe = lossreg.load_recipe(args.recipe)
    opt = recipe.train.optimizer
    if recipe.data != lossreg.load_recipe("quickstart").data:
        raise SystemExit(f"--recipe {args.recipe}: its data section differs from the quick start's, on which "
                         "torchvision's side trains (bench_parity.load_data); give a recipe with the same data")
    data = load_data()  # the quick start's train and val splits, as lossreg's trainer builds them
    # torchvision's loop takes the recipe's settings
    loop = argparse.Namespace(
        batch=recipe.train.batch_size, lr=opt.lr, weight_decay=opt.weight_decay, ema_decay=recipe.train.ema_decay,
        iters=recipe.train.epochs * math.ceil(len(data[0]) / recipe.train.batch_size), log_interval=250,
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
          f"{loop.iters} iterations x batch {loop.batch}, lr {loop.lr}; seeds {seeds}", flush=True)
    out = Path(args.output) if args.output else HERE / "results" / (
        f"time-to-accuracy-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []

    def write(complete: bool) -> None:
        out.write_text(json.dumps({"command": " ".join(sys.argv), "torch": torch.__version__,
                                   "threads": torch.get_num_threads(), "machine": platform.platform(),
                                   "complete": complete, "runs": runs}, indent=1) + "\n")

    for seed in seeds:
        print(f"  seed {seed}: torchvision FCOS (fp32) ...", file=sys.stderr, flush=True)
        tv = run_torchvision(seed, loop, data)
        runs.append({"seed": seed, "side": "torchvision", "precision": "fp32", "curve": tv})
        write(False)
        print(f"  seed {seed}: lossreg quick start ...", file=sys.stderr, flush=True)
        ours, precision = run_quickstart(seed, args.recipe, data)
        runs.append({"seed": seed, "side": "lossreg", "precision": precision, "curve": ours})
        write(False)

    print(f"\n{'seed':<5} {'torchvision best AP':>20} {'at s':>8} {'total s':>8}   {'lossreg final AP':>17} "
          f"{'reaches tv best at s':>21} {'total s':>8} {'time ratio':>11}")
    ratios, finals = [], []
    for seed in seeds:
        tv = next(r for r in runs if r["seed"] == seed and r["side"] == "torchvision")["curve"]
        ours = next(r for r in runs if r["seed"] == seed and r["side"] == "lossreg")["curve"]
        best = max(c["AP"] for c in tv)
        t_tv = first_reaching(tv, best)
        t_ours = first_reaching(ours, best)
        ratio = t_ours / t_tv if t_ours is not None and t_tv else None
        ratios.append(ratio)
        finals.append(ours[-1]["AP"] - best)
        print(f"{seed:<5} {best:>20.3f} {t_tv:>8.0f} {tv[-1]['seconds']:>8.0f}   {ours[-1]['AP']:>17.3f} "
              f"{(f'{t_ours:.0f}' if t_ours is not None else 'never'):>21} {ours[-1]['seconds']:>8.0f} "
              f"{(f'{ratio:.2f}x' if ratio is not None else '-'):>11}")
    reached = [r for r in ratios if r is not None]
    if reached:
        print(f"\ntime to torchvision's best AP, lossreg / torchvision: mean {statistics.mean(reached):.2f}x "
              f"over {len(reached)} of {len(seeds)} seeds; target <= 0.7x: "
              f"{'ok' if len(reached) == len(seeds) and statistics.mean(reached) <= 0.7 else 'MISSED'}")
    else:
        print("\nthe quick start never reached torchvision's best AP: target MISSED")
    mean, half = paired(finals)
    print(f"final AP of the quick start - torchvision's best AP: {mean:+.3f}"
          + (f" +- {half:.3f} (95% t)" if half is not None else "") + " per seed " + " ".join(f"{d:+.3f}" for d in finals))
    write(True)
    print(f"\nwritten {out}")
    if args.plot:
        plot_curves(runs, Path(args.plot))
        print(f"plot {args.plot}")


def plot_curves(runs: list[dict[str, Any]], path: Path) -> None:
    """Validation AP of the EMA weights against training seconds, one line per run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for r in runs:
        c = r["curve"]
        style = "-" if r["side"] == "lossreg" else "--"
        ax.plot([p["seconds"] for p in c], [p["AP"] for p in c], style, marker=".",
                label=f"{r['side']} ({r['precision']}) seed {r['seed']}")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("val AP (EMA weights)")
    ax.set_title("quick start vs torchvision FCOS at the same settings")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    main()
