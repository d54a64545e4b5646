"""The ``lossreg`` command line.

Subcommands: ``list`` (components, models, pretrained weights, recipes),
``info`` (one component's parameters, paper and documentation, or a recipe),
``check`` (validate a recipe with ``--set`` overrides and print it resolved),
``train`` (train a recipe's detector into a run folder; see :mod:`lossreg.engine`)
and ``eval`` (COCO metrics of trained weights on a recipe's validation split).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from ._factory import list_models, list_pretrained
from ._registry import KINDS, REQUIRED, UnknownComponentError, component_info, list_components
from .recipe import RecipeError, find_recipe, list_recipes, load_recipe

_EXTRA_KINDS = ("model", "pretrained", "recipe")
_PLURALS = {"losses": "loss", "models": "model", "recipes": "recipe"}
_PLURALS.update({f"{k}s": k for k in KINDS})


class CliError(Exception):
    """A user error the command reports in one line, without a traceback."""


def _kind(text: str) -> str:
    kind = _PLURALS.get(text, text)
    if kind not in KINDS + _EXTRA_KINDS:
        raise UnknownComponentError("kind", text, KINDS + _EXTRA_KINDS, hint="`lossreg list` shows every kind")
    return kind


def _names(kind: str, pattern: str | None, describe: bool) -> list[Any]:
    if kind == "model":
        return list_models(pattern or "*")
    if kind == "pretrained":
        return list_pretrained(pattern or "*")
    if kind == "recipe":
        names = list_recipes(pattern or "*")
        if describe:
            return [(n, _recipe_description(n)) for n in names]
        return names
    return list_components(kind, pattern, with_description=describe)


def _recipe_description(name: str) -> str:
    try:
        return load_recipe(name, validate=False).description.strip().splitlines()[0]
    except (RecipeError, IndexError):
        return ""


def cmd_list(args: argparse.Namespace) -> int:
    if args.kind is None:
        for kind in KINDS + _EXTRA_KINDS:
            names = _names(kind, args.pattern, describe=False)
            print(f"{kind} ({len(names)}): {', '.join(names) if names else '-'}")
        return 0
    kind = _kind(args.kind)
    items = _names(kind, args.pattern, args.describe)
    if args.describe and kind not in ("model", "pretrained"):
        width = max((len(n) for n, _ in items), default=0)
        for name, desc in items:
            print(f"{name:<{width}}  {desc}")
    else:
        for name in items:
            print(name)
    if not items:
        print(f"no {kind} matches {args.pattern!r}" if args.pattern else f"no {kind} is registered", file=sys.stderr)
    return 0


def _format_info(info: dict[str, Any]) -> str:
    lines = [f"{info['kind']} {info['name']!r}"]
    if info.get("task"):
        lines.append(f"  task:  {info['task']}")
    if info.get("paper"):
        lines.append(f"  paper: {info['paper']}")
    extra = {k: v for k, v in info.items() if k not in ("name", "kind", "task", "params", "doc", "paper")}
    for key, value in extra.items():
        lines.append(f"  {key}: {value}")
    lines.append("  parameters:")
    for key, value in info["params"].items():
        lines.append(f"    {key} = {'(required)' if value is REQUIRED else repr(value)}")
    if info.get("doc"):
        lines.append("")
        lines.extend("  " + line if line else "" for line in info["doc"].splitlines())
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    if kind == "recipe":
        path = find_recipe(args.name)
        recipe = load_recipe(path, validate=False)
        print(f"# {path}")
        print(json.dumps(recipe.to_dict(), indent=2) if args.json else recipe.to_yaml(), end="")
        return 0
    if kind in ("model", "pretrained"):
        raise CliError(f"`lossreg info {kind}` is not available; use `lossreg list {kind}` to see the names")
    info = component_info(kind, args.name)
    if args.json:
        info = {**info, "params": {k: (None if v is REQUIRED else v) for k, v in info["params"].items()}}
        print(json.dumps(info, indent=2, default=repr))
    else:
        print(_format_info(info))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, overrides=args.set or (), validate=not args.schema_only)
    print(recipe.to_yaml(), end="")
    print(f"# recipe {recipe.name!r} is valid", file=sys.stderr)
    return 0


_TRAIN_DESCRIPTION = """Train the detector of a recipe and evaluate it on the recipe's validation split.

The run folder (--output, default runs/<recipe>-<time>) receives:
  recipe.yaml        the resolved recipe (seed and library versions in its header)
  metrics.jsonl      per iteration: each task loss, the balancer's weights, lr; per evaluation: COCO AP
  checkpoints/       last.safetensors + last.state.pt each epoch (epoch_NNNN.* every
                     train.checkpoint_interval epochs), written crash-safely
  plots/             losses.png, balancer_weights.png, lr.png (val_ap.png) after each epoch
  metrics.json       the final AP, AP50, AP75, APs, APm, APl (0-1), per_class and train_seconds
  model/             model.safetensors and config.json of the trained (EMA) model

A killed run continues exactly where its last checkpoint left it with --resume. Under
`torchrun --nproc_per_node=N -m lossreg train ...` it trains with DistributedDataParallel
(nccl on GPUs, gloo on CPUs); train.batch_size is the batch over all N processes."""

_TRAIN_EPILOG = """examples:
  lossreg train quickstart --output runs/quick
  lossreg train quickstart --set train.epochs=12 --set model.balancer=alwa1 --device cuda
  lossreg train quickstart --output runs/quick --resume
  torchrun --nproc_per_node=2 -m lossreg train quickstart --output runs/ddp
"""


def _run_folder_of(checkpoint: str) -> str | None:
    """The run folder a ``--resume PATH`` belongs to (``PATH`` itself, or ``<run>/checkpoints/<file>``'s run)."""
    from pathlib import Path

    path = Path(checkpoint)
    if path.is_dir():
        return str(path.parent) if path.name == "checkpoints" else str(path)
    if path.parent.name == "checkpoints":
        return str(path.parent.parent)
    return None


def cmd_train(args: argparse.Namespace) -> int:
    from .engine import distributed
    from .engine.trainer import Trainer

    recipe = load_recipe(args.recipe, overrides=args.set or ())
    output, resume = args.output, args.resume
    if resume is True and output is None:
        raise CliError("--resume without a PATH continues the run in --output DIR; give one of them")
    if isinstance(resume, str) and output is None:
        output = _run_folder_of(resume)
        if output is None:
            raise CliError(f"cannot tell the run folder of {resume!r}; give --output DIR")
    try:
        trainer = Trainer(recipe, output_dir=output, resume=resume, device=args.device, progress=args.progress)
        metrics = trainer.train()
    except FloatingPointError as exc:
        raise CliError(f"training diverged: {exc}") from None
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        where = output or "the run folder"
        print(f"lossreg train: interrupted; continue with --resume (and --output {where})", file=sys.stderr)
        return 130
    finally:
        distributed.cleanup_distributed()
    if metrics is not None:
        shown = " ".join(f"{k}={metrics[k]:.4f}" for k in ("AP", "AP50", "AP75") if metrics.get(k) is not None)
        print(f"{trainer.run_dir / 'metrics.json'}: {shown or 'no validation split'} "
              f"({metrics['train_seconds']:.0f} s of training)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ._io import atomic_write_text
    from .engine.evaluate import evaluate_recipe

    recipe = load_recipe(args.recipe, overrides=args.set or ())
    try:
        metrics = evaluate_recipe(recipe, args.weights, device=args.device, batch_size=args.batch_size,
                                  progress=sys.stderr.isatty())
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    text = json.dumps(metrics, indent=2)
    if args.output:
        atomic_write_text(args.output, text + "\n")
    print(text)
    return 0


_EPILOG = """examples:
  lossreg list                      every kind with its names
  lossreg list loss '*iou*' --describe
  lossreg info loss hcra_c          parameters, paper and documentation
  lossreg check atss_r50_hcral_eatss --set model.cls_loss=focal --set train.epochs=24
  lossreg train quickstart --output runs/quick       train, evaluate, write metrics.json
  lossreg eval quickstart --weights runs/quick       COCO metrics of trained weights
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossreg",
        description="Swap detection losses, assigners and loss balancers by name, assemble detectors from "
        "YAML recipes, and share them on the Hugging Face Hub.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lossreg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    kinds = ", ".join(KINDS + _EXTRA_KINDS)

    p = sub.add_parser(
        "list",
        help="list registered components, models, pretrained weights or recipes",
        description=f"List names of one kind ({kinds}), optionally filtered by a shell-style wildcard. "
        "Without a kind, print every kind with its names.",
    )
    p.add_argument("kind", nargs="?", help=f"one of: {kinds}")
    p.add_argument("pattern", nargs="?", help="fnmatch wildcard, e.g. '*iou*' (quote it in the shell)")
    p.add_argument("-d", "--describe", action="store_true", help="add each entry's one-line description")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "info",
        help="show a component's parameters, task, paper and documentation, or a recipe",
        description="Describe one component (its constructor parameters with defaults, its task, the paper it "
        "comes from and its documentation) or print a recipe file.",
    )
    p.add_argument("kind", help=f"one of: {', '.join(KINDS)}, recipe")
    p.add_argument("name", help="the component or recipe name")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "check",
        help="validate a recipe (with overrides) and print it fully resolved",
        description="Load a recipe by name or path, apply --set overrides, validate every field and component, "
        "and print the resolved recipe as YAML. Errors name the YAML path of the bad field.",
    )
    p.add_argument("recipe", help="recipe name (see `lossreg list recipe`) or path to a .yaml file")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. model.cls_loss.gamma=1.5 (repeatable)"
    )
    p.add_argument("--schema-only", action="store_true", help="check types only, not that the components exist")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "train",
        help="train a recipe's detector: checkpoints, metrics, plots and a final COCO evaluation",
        description=_TRAIN_DESCRIPTION,
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", help="recipe name (see `lossreg list recipe`) or path to a .yaml file")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a recipe field, e.g. train.epochs=24 (repeatable)"
    )
    p.add_argument("--output", "-o", metavar="DIR", help="the run folder [runs/<recipe>-<time>]")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="PATH",
        help="continue a run: without PATH from --output's last checkpoint; PATH is a run folder or a "
        "checkpoint (runs/x/checkpoints/last or one of its files), whose run folder is used unless --output is given",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto (overrides train.device)")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="show tqdm progress bars [when stderr is a terminal]",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="COCO metrics (AP, AP50, AP75, APs, APm, APl, per class) of trained weights",
        description="Evaluate trained weights of a recipe's detector on the recipe's data.val split with "
        "pycocotools and print the metrics as JSON (values in 0-1; null where COCO leaves them undefined).",
        epilog="examples:\n  lossreg eval quickstart --weights runs/quick\n"
        "  lossreg eval quickstart --weights runs/quick/checkpoints/epoch_0003 --output val.json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", help="recipe name or path to a .yaml file (a run's recipe.yaml works)")
    p.add_argument(
        "--weights", "-w", required=True, metavar="PATH",
        help="a run folder (its model/, else its last checkpoint), a checkpoint or a .safetensors file",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto [train.device]")
    p.add_argument("--batch-size", type=int, help="images per batch [eval.batch_size]")
    p.add_argument("--output", "-o", metavar="FILE", help="also write the metrics to this JSON file")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (CliError, RecipeError, UnknownComponentError, TypeError, ValueError) as exc:
        if args.debug:
            raise
        print(f"lossreg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lossreg list | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
