"""Typed recipes: one detector and its training schedule per YAML file.

A recipe is loaded by name (the file stem of a YAML file in ``recipes/``, which
ships inside the wheel as ``lossreg/recipes``), by path, or from a dict::

    recipe = lossreg.load_recipe("atss_r50_hcral_eatss", overrides=["model.cls_loss=focal"])
    lossreg.load_recipe(recipe.to_dict()) == recipe

Every field is checked on load and a bad one is reported with its YAML path,
e.g. ``model.cls_loss.name: unknown loss 'hcra_x'; did you mean 'hcra_c'?``.
A recipe may start from another one with ``base: <name or path>``; its
mappings are merged key by key (a component given with a different ``name``
replaces the base's component whole).
"""

from .convert import ComponentSpec, RecipeError
from .files import RECIPE_PATH_ENV, find_recipe, list_recipes, load_recipe, recipe_dirs, save_recipe
from .overrides import apply_overrides
from .schema import DataCfg, DatasetCfg, EvalCfg, ModelCfg, OptimizerCfg, Recipe, TrainCfg, validate

__all__ = [
    "RECIPE_PATH_ENV",
    "ComponentSpec",
    "DataCfg",
    "DatasetCfg",
    "EvalCfg",
    "ModelCfg",
    "OptimizerCfg",
    "Recipe",
    "RecipeError",
    "TrainCfg",
    "apply_overrides",
    "find_recipe",
    "list_recipes",
    "load_recipe",
    "recipe_dirs",
    "save_recipe",
    "validate",
]
