"""Where the wall time of a quick-start epoch goes: data, forward, backward, optimizer, EMA, logging, evaluation.

Runs ``lossreg``'s own :class:`~lossreg.engine.trainer.Trainer` on a recipe
(``recipes/quickstart.yaml`` by default) for ``--epochs`` epochs (5 by default: a third of
the quick start, with its one evaluation, numbered checkpoint and plots at epoch 5) in a
temporary run folder, with wall-clock timers around
the trainer's parts: waiting for the next batch from the data loader, the model's forward
with targets (and inside it the head's assignment, losses and balancer), the optimizer step,
the EMA update, logging (``metrics.jsonl`` and the progress report), and at the end of the
epoch the evaluation, the checkpoint and the plots. "backward and the rest of the step" is
the step's time minus its timed parts (mostly ``loss.backward()``). Nothing is changed in
the trainer; the timers shadow its methods on the instance.

    python benchmarks/profile_epoch.py                     # quick start, 5 epochs (250 iterations)
    python benchmarks/profile_epoch.py --epochs 1 --set eval.interval=1 --set data.num_workers=1
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import lossreg  # noqa: E402
from lossreg.engine import trainer as trainer_module  # noqa: E402


class Timers:
    """Wall-clock totals and call counts of wrapped callables."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def timed(self, fn, label: str):
        """``fn`` wrapped to add its wall time and calls to ``label`` (``functools.wraps`` keeps what
        others put on a method: the LR scheduler marks ``optimizer.step``)."""

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[label] += time.perf_counter() - t0
                self.calls[label] += 1

        return timed

    def wrap(self, owner: object, name: str, label: str) -> None:
        """Shadow ``owner.name`` with its timed version."""
        setattr(owner, name, self.timed(getattr(owner, name), label))


class TimedLoader:
    """Iterates ``loader``, timing every wait for the next batch as ``data``."""

    def __init__(self, loader, timers: Timers) -> None:
        self.loader, self.timers = loader, timers

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            finally:
                self.timers.total["data"] += time.perf_counter() - t0
            self.timers.calls["data"] += 1
            yield batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", default="quickstart", help="recipe name or YAML path [quickstart]")
    parser.add_argument("--epochs", type=int, default=5, help="epochs to profile [5]")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe overrides")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = lossreg.load_recipe(args.recipe).with_overrides(args.set)
    timers = Timers()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_module.Trainer(recipe, output_dir=tmp, progress=False)
        trainer.loader = TimedLoader(trainer.loader, timers)
        head = trainer.model.head
        timers.wrap(trainer, "train_step", "step")
        timers.wrap(trainer.model, "forward", "forward (with the losses)")
        for name in ("assign", "loss_terms", "balance"):
            timers.wrap(head, name, f"  of which {name}")
        timers.wrap(trainer.optimizer, "step", "optimizer step")
        if trainer.ema is not None:
            timers.wrap(trainer.ema, "update", "EMA update")
        timers.wrap(trainer, "_log", "logging")
        timers.wrap(trainer, "_report", "logging")
        timers.wrap(trainer, "run_evaluation", "evaluation")
        timers.wrap(trainer, "save_checkpoint", "checkpoint")
        original_plot = trainer_module.plot_metrics
        trainer_module.plot_metrics = timers.timed(original_plot, "plots")
        iters = trainer.iters_per_epoch * args.epochs
        t0 = time.perf_counter()
        try:
            trainer.train(max_iterations=iters)
        finally:
            trainer_module.plot_metrics = original_plot
        wall = time.perf_counter() - t0
        precision = trainer.precision

    t = timers.total
    inside_step = ("forward (with the losses)", "optimizer step", "EMA update", "logging")
    rows = [
        ("data (waiting for the next batch)", t["data"]),
        ("forward (with the losses)", t["forward (with the losses)"]),
        *((k, t[k]) for k in ("  of which assign", "  of which loss_terms", "  of which balance")),
        ("backward and the rest of the step", t["step"] - sum(t[k] for k in inside_step)),
        ("optimizer step", t["optimizer step"]),
        ("EMA update", t["EMA update"]),
        ("logging", t["logging"]),
        ("evaluation", t["evaluation"]),
        ("checkpoint", t["checkpoint"]),
        ("plots", t["plots"]),
    ]
    accounted = sum(v for k, v in rows if not k.startswith("  "))
    rows.append(("other (loop, progress, callbacks)", wall - accounted))
    print(
        f"torch {torch.__version__}, cpu ({torch.get_num_threads()} threads); recipe {recipe.name}: "
        f"{iters} iterations ({args.epochs} epoch(s)) of batch {recipe.train.batch_size}, "
        f"data.num_workers {recipe.data.num_workers}, precision {precision.name}, eval.interval {recipe.eval.interval}"
    )
    print(f"\n{'part':<36}{'seconds':>9}{'share':>8}{'ms/iter':>9}")
    for name, value in rows:
        print(f"{name:<36}{value:>9.2f}{value / wall:>8.1%}{value / iters * 1e3:>9.1f}")
    print(f"{'wall time':<36}{wall:>9.2f}{1:>8.1%}{wall / iters * 1e3:>9.1f}")


if __name__ == "__main__":
    main()
