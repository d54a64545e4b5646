"""Recipe files: where recipe names are found, reading YAML safely, ``base:`` chains, and loading/saving."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .._io import atomic_write_text
from .._limits import InputLimitError, safe_load_yaml
from .._registry import close_matches
from .convert import RecipeError, build
from .overrides import apply_overrides, merge
from .schema import Recipe
from .schema import validate as validate_recipe

__all__ = ["RECIPE_PATH_ENV", "find_recipe", "list_recipes", "load_recipe", "recipe_dirs", "save_recipe"]

RECIPE_PATH_ENV = "LOSSREG_RECIPE_PATH"


def recipe_dirs() -> list[Path]:
    """Folders searched for recipe names, first match wins.

    ``$LOSSREG_RECIPE_PATH`` (``os.pathsep``-separated), then the recipes inside
    the installed package, then ``recipes/`` of a source checkout.
    """
    dirs = [Path(p) for p in os.environ.get(RECIPE_PATH_ENV, "").split(os.pathsep) if p]
    try:
        packaged = resources.files("lossreg") / "recipes"
        if packaged.is_dir():
            dirs.append(Path(str(packaged)))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover
        pass
    checkout = Path(__file__).resolve().parents[3] / "recipes"
    if checkout.is_dir():
        dirs.append(checkout)
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def list_recipes(pattern: str = "*") -> list[str]:
    """Sorted names of the recipes found in :func:`recipe_dirs`."""
    names = {p.stem for d in recipe_dirs() for p in d.glob("*.yaml")}
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def find_recipe(name: str | os.PathLike[str]) -> Path:
    """The file of a recipe given by name or path; ``RecipeError`` naming close matches otherwise."""
    text = os.fspath(name)
    path = Path(text).expanduser()
    looks_like_path = path.suffix in (".yaml", ".yml") or os.sep in text or "/" in text
    if path.is_file():
        return path
    if path.is_dir():
        near = sorted(p.name for p in path.glob("*.y*ml"))[:3]
        hint = f" (it holds {', '.join(near)})" if near else ""
        raise RecipeError(f"{text!r} is a folder, not a recipe file; give a .yaml file{hint}")
    if looks_like_path:
        raise RecipeError(f"recipe file {text!r} does not exist")
    for d in recipe_dirs():
        for suffix in (".yaml", ".yml"):
            cand = d / f"{text}{suffix}"
            if cand.is_file():
                return cand
    near = close_matches(text, list_recipes())
    hint = f"did you mean {', '.join(repr(n) for n in near)}?" if near else "see `lossreg list recipe`"
    raise RecipeError(f"no recipe named {text!r}; {hint} (or give a path to a .yaml file)")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start})", source=str(path)) from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe file: {exc.strerror or exc}", source=str(path)) from None
    try:
        data = safe_load_yaml(text)  # bounded: nesting depth, alias expansion, size (lossreg._limits)
    except InputLimitError as exc:
        raise RecipeError(str(exc), source=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"malformed YAML{where}: {problem}", source=str(path)) from None
    if data is None:
        raise RecipeError("the recipe file is empty", source=str(path))
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe must be a YAML mapping, got {type(data).__name__}", source=str(path))
    return data


def resolve_raw(source: str | os.PathLike[str] | Mapping[str, Any], chain: tuple[str, ...] = ()) -> dict[str, Any]:
    if isinstance(source, Mapping):
        data = dict(source)
        path = None
    else:
        path = find_recipe(source)
        key = str(path.resolve())
        if key in chain:
            raise RecipeError(f"recipe bases form a cycle: {' -> '.join(chain + (key,))}")
        chain = chain + (key,)
        data = _read_yaml(path)
        data.setdefault("name", path.stem)
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise RecipeError(f"expected a recipe name or path, got {base!r}", "base")
        if path is not None and not Path(base).is_absolute() and base.endswith((".yaml", ".yml")):
            base = str(path.parent / base)
        parent = resolve_raw(base, chain)
        parent.pop("name", None)
        parent.pop("description", None)
        data = merge(parent, data)
    return data


def load_recipe(
    source: str | os.PathLike[str] | Mapping[str, Any] | Recipe,
    overrides: Sequence[str] = (),
    validate: bool = True,
) -> Recipe:
    """Load and validate a recipe from a name, a path, a dict or a ``Recipe``.

    ``overrides`` are ``a.b=value`` strings applied before validation (the
    command line's ``--set``). ``validate=False`` checks only the schema, not
    that the named components exist.
    """
    if isinstance(source, Recipe):
        source = source.to_dict()
    origin = None if isinstance(source, Mapping) else os.fspath(source)
    raw = resolve_raw(source)
    if overrides:
        raw = apply_overrides(raw, overrides)
    if "name" not in raw:
        raw["name"] = "recipe"
    try:
        recipe = build(Recipe, raw, "")
        if validate:
            validate_recipe(recipe)
    except RecipeError as exc:
        if origin and not exc.source:
            raise RecipeError(str(exc), source=origin) from None
        raise
    return recipe


def save_recipe(recipe: Recipe, path: str | os.PathLike[str]) -> Path:
    """Write ``recipe`` as YAML atomically (temporary file + rename)."""
    return atomic_write_text(Path(path), recipe.to_yaml())
