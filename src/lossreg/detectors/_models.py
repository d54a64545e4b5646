"""Model names ``<arch>_<backbone>_fpn`` for the registered architectures (timm-style entry points)."""

from __future__ import annotations

from typing import Any

from .._factory import PretrainedCfg, register_model, register_source
from .._registry import get_registry

#: Backbones that get a registered model name per architecture; any timm model works through ``backbone=``.
NAMED_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


def build_detector(arch: str, pretrained: bool = False, pretrained_cfg: PretrainedCfg | None = None, **kwargs: Any):
    """Instantiate ``arch``; with ``pretrained=True`` the detector of its published weights.

    Published weights define their detector (``config.json`` on the Hub), so with
    ``pretrained=True`` the model is rebuilt from there and ``kwargs`` act as
    overrides (``num_classes``/``label_names`` for fine-tuning, a swapped loss, ...).
    """
    if pretrained:
        from .._factory import load_pretrained

        return load_pretrained(pretrained_cfg, arch=arch, **kwargs)
    return get_registry("detector").create(arch, **kwargs)


def register_arch_models(arch: str, backbones: tuple[str, ...] = NAMED_BACKBONES) -> None:
    """Register ``<arch>_<backbone>_fpn`` for each backbone; ``backbone=`` still overrides it."""
    for bb in backbones:

        def entry(pretrained: bool = False, pretrained_cfg: PretrainedCfg | None = None, _bb: str = bb, **kwargs: Any):
            kwargs.setdefault("backbone", _bb)
            return build_detector(arch, pretrained, pretrained_cfg, **kwargs)

        entry.__doc__ = f"{arch} detector with a {bb} backbone and FPN."
        register_model(f"{arch}_{bb}_fpn")(entry)


def build_from_recipe(recipe: Any, pretrained: bool = False, **overrides: Any):
    """The detector of a recipe (name, path, dict or ``Recipe``); keyword arguments override its fields.

    With ``model.weights`` set, training starts from those weights (a pretrained
    name, ``hf-hub:`` or ``local-dir:``) through the fine-tuning transfer, so a
    different ``num_classes`` re-initialises only the classification outputs.
    """
    from .._factory import create_model
    from ..recipe import load_recipe
    from .finetune import transfer_state_dict

    if pretrained:
        raise ValueError("a recipe name takes no pretrained=True; set model.weights in the recipe instead")
    recipe = load_recipe(recipe)
    ev = recipe.eval
    kwargs: dict[str, Any] = {
        **recipe.model.component_kwargs(),
        "score_thr": ev.score_thr,
        "nms_thr": ev.nms_thr,
        "pre_nms_topk": ev.pre_nms_topk,
        "max_dets": ev.max_dets,
    }
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    model = get_registry("detector").create(recipe.model.arch, **kwargs)
    if recipe.model.weights:
        source = create_model(recipe.model.weights, pretrained=True)
        transfer_state_dict(model, source.state_dict(), getattr(source, "label_names", None))
    model.recipe = recipe  # published with the weights (lossreg.save_pretrained)
    return model


register_source("recipe", build_from_recipe)
