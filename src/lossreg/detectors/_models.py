"""Model names ``<arch>_<backbone>_fpn`` for the registered architectures (timm-style entry points)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .._registry import PretrainedCfg, get_registry, register_model

#: Backbones that get a registered model name per architecture; any timm model works through ``backbone=``.
NAMED_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


def register_arch_models(arch: str, backbones: tuple[str, ...] = NAMED_BACKBONES) -> None:
    """Register ``<arch>_<backbone>_fpn`` for each backbone; ``backbone=`` still overrides it.

    An entry point builds a fresh detector. ``pretrained=True`` never reaches it: the
    entry's ``arch`` attribute tells ``create_model`` to load the published weights,
    which define their own detector, checked against ``arch`` and ``default_args``.
    """
    for bb in backbones:

        def entry(pretrained: bool = False, pretrained_cfg: PretrainedCfg | None = None, _bb: str = bb,
                  **kwargs: Any) -> nn.Module:
            if pretrained:
                raise ValueError("pretrained weights are loaded by lossreg.create_model(name, pretrained=True)")
            kwargs.setdefault("backbone", _bb)
            return get_registry("detector").create(arch, **kwargs)

        entry.__doc__ = f"{arch} detector with a {bb} backbone and FPN."
        entry.arch = arch  # type: ignore[attr-defined]
        entry.default_args = {"backbone": bb}  # type: ignore[attr-defined]
        register_model(f"{arch}_{bb}_fpn")(entry)
