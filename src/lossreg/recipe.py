"""Typed recipes (being written)."""
from __future__ import annotations


class RecipeError(ValueError):
    pass


class Recipe:
    pass


def list_recipes() -> list[str]:
    return []


def load_recipe(name):
    raise RecipeError("not yet")
