"""Model names ``<arch>_<backbone>_fpn`` for the registered architectures (timm-style entry points)."""

from __future__ import annotations

from typing import Any

from .._factory import PretrainedCfg, register_model
from .._registry import get_registry

#: Backbones that get a registered model name per architecture; any timm model works through ``backbone=``.
NAMED_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


def build_detector(arch: str, pretrained: bool = False, pretrained_cfg: PretrainedCfg | None = None, **kwargs: Any):
    """Instantiate ``arch`` and, with ``pretrained=True``, load its published weights."""
    model = get_registry("detector").create(arch, **kwargs)
    if pretrained:
        from .._factory import load_pretrained

        load_pretrained(model, pretrained_cfg, **kwargs)
    return model


def register_arch_models(arch: str, backbones: tuple[str, ...] = NAMED_BACKBONES) -> None:
    """Register ``<arch>_<backbone>_fpn`` for each backbone; ``backbone=`` still overrides it."""
    for bb in backbones:

        def entry(pretrained: bool = False, pretrained_cfg: PretrainedCfg | None = None, _bb: str = bb, **kwargs: Any):
            kwargs.setdefault("backbone", _bb)
            return build_detector(arch, pretrained, pretrained_cfg, **kwargs)

        entry.__doc__ = f"{arch} detector with a {bb} backbone and FPN."
        register_model(f"{arch}_{bb}_fpn")(entry)
