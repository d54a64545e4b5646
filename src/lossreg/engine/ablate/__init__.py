"""Ablations: train every combination of swapped recipe settings, several seeds each, and tabulate them.

>>> plan = plan_ablation("quickstart", ["model.cls_loss=focal,qfl,vfl,hcra_c",
...                                     "model.reg_loss=giou,hcra_r"], seeds=[0, 1, 2])   # doctest: +SKIP
>>> summary = run_ablation(plan, jobs=2)                                                   # doctest: +SKIP
>>> print(summary["table"])                                                                # doctest: +SKIP

``lossreg ablate`` is this package (:mod:`.swaps`, :mod:`.plan`, :mod:`.run`, :mod:`.summary`).
A *swap* ``KEY=V1,V2,...`` lists values of one recipe field; each value is read as YAML
exactly as ``--set KEY=V`` reads it, so a value may be a flow mapping
(``model.cls_loss={name: hcra_c, rci_mode: paper},focal``: commas split values only
outside braces, brackets and quotes), and repeating a KEY adds values.
The variants are the grid of all combinations or, ``one_at_a_time``, the recipe as it
is (``baseline``) plus each single swapped value. Every variant is validated with
:func:`~lossreg.recipe.load_recipe` before anything trains, so an unknown component
fails at once with the recipe's own error naming its YAML path.

The output folder (``runs/ablate-<recipe>`` by default) holds::

    ablation_plan.json                  the variants, seeds, baseline and each variant's recipe
    <variant>/seed<N>/                  one run folder of lossreg train per variant and seed,
                                        e.g. cls_loss=qfl__reg_loss=giou/seed0
    <variant>/seed<N>/eval-<split>/     lossreg eval's folder of the final model on the validation
                                        split, plus score_iou_pairs.npz (each detection's score, IoU)
    ablation.md                         the table (AP, AP50, AP75, APs/m/l in %, mean ± std over
                                        seeds, ΔAP to the baseline, score-IoU Pearson r, time per run)
    ablation.json                       every number behind it, per run and per variant
    ablation_ap.png                     AP per variant with the seeds' standard deviation
    score_iou_grid.png                  the score-IoU plot of each variant (first seed), same axes

Re-running the same command skips finished runs (``metrics.json`` and the evaluation
written), resumes half-finished ones from their last checkpoint (:class:`Trainer`'s
``resume``) and re-evaluates runs whose evaluation is missing; a run folder trained with
a different recipe is refused. ``jobs > 1`` trains that many runs at once as
subprocesses (``python -m lossreg.engine.ablate --worker``, the same code as in process),
each with an equal share of the CPU threads (``OMP_NUM_THREADS``) and, with several GPUs,
its own GPU; their output goes to ``<run>/ablate.log``. Under ``torchrun`` every process
runs the same list of runs one after the other with DistributedDataParallel and rank 0
evaluates and writes the summary. :func:`summarize` rebuilds the summary from the run
folders at any time.
"""

from __future__ import annotations

from .plan import (
    PLAN_NAME,
    AblationPlan,
    Run,
    describe_plan,
    enumerate_variants,
    parse_seed_list,
    plan_ablation,
    run_status,
    statuses,
    write_plan,
)
from .run import evaluate_run, run_ablation
from .summary import format_table, summarize
from .swaps import AblationError, Swap, Variant, parse_swaps, short_keys, split_values

__all__ = [
    "AblationError",
    "AblationPlan",
    "PLAN_NAME",
    "Run",
    "Swap",
    "Variant",
    "describe_plan",
    "enumerate_variants",
    "evaluate_run",
    "format_table",
    "parse_seed_list",
    "parse_swaps",
    "plan_ablation",
    "run_ablation",
    "run_status",
    "short_keys",
    "split_values",
    "statuses",
    "summarize",
    "write_plan",
]
