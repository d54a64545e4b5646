"""lossreg: interchangeable detection losses, assigners, balancers and heads.

The public API (see README.md and the design contract):

>>> import lossreg
>>> lossreg.list_components("loss", "*iou*")          # doctest: +SKIP
>>> loss = lossreg.create_loss("hcra_c", theta=5.0)    # doctest: +SKIP
"""

from __future__ import annotations

from ._factory import (
    PretrainedCfg,
    create_model,
    get_pretrained_cfg,
    list_models,
    list_pretrained,
    parse_model_name,
    register_model,
    register_pretrained,
)
from ._registry import (
    KINDS,
    ComponentInfo,
    UnknownComponentError,
    build_component,
    component_info,
    create_assigner,
    create_balancer,
    create_component,
    create_detector,
    create_head,
    create_loss,
    create_neck,
    get_registry,
    list_components,
    register_assigner,
    register_balancer,
    register_detector,
    register_head,
    register_loss,
    register_neck,
)
from .recipe import Recipe, RecipeError, list_recipes, load_recipe

__version__ = "0.1.0"

# after __version__: the hub package records it, and importing it installs the
# hf-hub:, local-dir: and pretrained-tag loaders of create_model
from .hub import HubError, push_to_hub, save_pretrained  # noqa: E402

__all__ = [
    "KINDS",
    "ComponentInfo",
    "HubError",
    "PretrainedCfg",
    "Recipe",
    "RecipeError",
    "UnknownComponentError",
    "__version__",
    "build_component",
    "component_info",
    "create_assigner",
    "create_balancer",
    "create_component",
    "create_detector",
    "create_head",
    "create_loss",
    "create_model",
    "create_neck",
    "get_pretrained_cfg",
    "get_registry",
    "list_components",
    "list_models",
    "list_pretrained",
    "list_recipes",
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
