"""``python -m lossreg.engine.ablate --worker PLAN RUN``: one run of a plan, for ``lossreg ablate --jobs N``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ...recipe import load_recipe
from .run import train_run

logger = logging.getLogger(__name__)


def _worker_main(argv: Sequence[str] | None = None) -> int:
    """``python -m lossreg.engine.ablate --worker PLAN RUN``: train and evaluate one run of a plan (for ``jobs > 1``)."""
    parser = argparse.ArgumentParser(prog="python -m lossreg.engine.ablate",
                                     description="Train and evaluate one run of an ablation plan (lossreg ablate --jobs N).")
    parser.add_argument("--worker", required=True, metavar="PLAN", help="the ablation_plan.json")
    parser.add_argument("run", help="the run's folder relative to the plan's, e.g. cls_loss=qfl/seed0")
    parser.add_argument("--device", help="overrides train.device")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    plan_path = Path(args.worker)
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    run = next((r for r in plan["runs"] if r["dir"] == args.run), None)
    if run is None:
        print(f"error: {args.run!r} is not a run of {plan_path}", file=sys.stderr)
        return 2
    variant = next(v for v in plan["variants"] if v["name"] == run["variant"])
    recipe = load_recipe(variant["recipe"], overrides=[f"train.seed={run['seed']}"])
    logger.info("worker %s: %d torch threads, device %s", args.run, torch.get_num_threads(), args.device or recipe.train.device)
    train_run(recipe, plan_path.parent / run["dir"], device=args.device, progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
