"""The ``lossreg`` command line.

Subcommands: ``list`` (components, models, pretrained weights, recipes),
``info`` (one component's parameters, paper and documentation, or a recipe)
and ``check`` (validate a recipe with ``--set`` overrides and print it resolved).
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


_EPILOG = """examples:
  lossreg list                      every kind with its names
  lossreg list loss '*iou*' --describe
  lossreg info loss hcra_c          parameters, paper and documentation
  lossreg check atss_r50_hcral_eatss --set model.cls_loss=focal --set train.epochs=24
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
