"""lossreg: interchangeable detection losses, assigners, balancers and heads.

The public API (README.md; the components' call contract is docs/api.md):

>>> import lossreg
>>> lossreg.list_components("loss", "*iou*")          # doctest: +SKIP
>>> loss = lossreg.create_loss("hcra_c", theta=5.0)    # doctest: +SKIP
"""

from __future__ import annotations

from ._factory import create_detector, create_model, list_models
from ._registry import (
    KINDS,
    ComponentInfo,
    PretrainedCfg,
    Slot,
    UnknownComponentError,
    build_component,
    component_info,
    component_slots,
    create_assigner,
    create_balancer,
    create_component,
    create_head,
    create_loss,
    create_neck,
    get_pretrained_cfg,
    get_registry,
    list_components,
    list_pretrained,
    parse_model_name,
    register_assigner,
    register_balancer,
    register_detector,
    register_head,
    register_loss,
    register_model,
    register_neck,
    register_pretrained,
)
from ._version import __version__
from .export import export_model
from .hub import HubError, push_to_hub, save_pretrained
from .recipe import Recipe, RecipeError, list_recipes, load_recipe

__all__ = [
    "KINDS",
    "ComponentInfo",
    "HubError",
    "PretrainedCfg",
    "Recipe",
    "RecipeError",
    "Slot",
    "UnknownComponentError",
    "__version__",
    "build_component",
    "component_info",
    "component_slots",
    "create_assigner",
    "create_balancer",
    "create_component",
    "create_detector",
    "create_head",
    "create_loss",
    "create_model",
    "create_neck",
    "export_model",
    "get_pretrained_cfg",
    "get_registry",
    "list_components",
    "list_models",
    "list_pretrained",
    "list_recipes",
    "load_model",
    "load_recipe",
    "parse_model_name",
    "push_to_hub",
    "register_assigner",
    "register_balancer",
    "register_detector",
    "register_head",
    "register_loss",
    "register_model",
    "register_neck",
    "register_pretrained",
    "save_pretrained",
]


def __getattr__(name: str):  # PEP 562: the engine (data, training) is imported only when asked for
    if name == "load_model":
        from .engine.runs import load_model

        return load_model
    raise AttributeError(f"module 'lossreg' has no attribute {name!r}")
