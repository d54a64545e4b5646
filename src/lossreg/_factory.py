"""``create_model``: the one door to every detector (timm's ``_factory``).

It sits above the detectors, the recipes and the Hub and calls them directly:

- a registered model name (``atss_resnet50_fpn``) calls its entry point; with
  ``pretrained=True`` or a tag (``name.tag``) the published weights are loaded
  through :mod:`lossreg.hub` and define the detector, keyword arguments acting
  as overrides (fine-tuning ``num_classes``/``label_names``, a swapped loss, ...);
- a bare architecture (``atss``) builds that detector from the detector registry;
- a recipe name builds the recipe's detector (:func:`build_from_recipe`);
- ``hf-hub:owner/repo[@rev]`` and ``local-dir:PATH`` load a saved model.

The name grammar and the tables of names live in :mod:`lossreg._registry.models`.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from torch import nn

from ._registry import (
    ModelName,
    PretrainedCfg,
    UnknownComponentError,
    close_matches,
    get_pretrained_cfg,
    get_registry,
    is_model,
    list_pretrained,
    model_entrypoint,
    model_names,
    parse_model_name,
    register_model,
    register_pretrained,
)
from .hub.converted import load_converted_tag
from .hub.load import load_hf_hub, load_local_dir, load_pretrained_tag
from .recipe import list_recipes, load_recipe

__all__ = [
    "ModelName",
    "PretrainedCfg",
    "build_from_recipe",
    "create_detector",
    "create_model",
    "get_pretrained_cfg",
    "list_models",
    "list_pretrained",
    "load_pretrained",
    "parse_model_name",
    "register_model",
    "register_pretrained",
]


def list_models(pattern: str = "*", include_recipes: bool = False) -> list[str]:
    """Sorted model names matching the fnmatch ``pattern``; recipes too when asked."""
    names = set(model_names(pattern))
    if include_recipes:
        names |= {n for n in list_recipes() if fnmatch.fnmatchcase(n, pattern)}
    return sorted(names)


def load_pretrained(pretrained_cfg: PretrainedCfg | None, **kwargs: Any) -> nn.Module:
    """The detector of the published weights ``pretrained_cfg``, with ``kwargs`` overrides.

    ``hf_hub_id``: the Hub repository (:func:`~lossreg.hub.load.load_pretrained_tag`);
    else ``url`` + ``converter``: another library's original file, downloaded, hash-checked,
    converted and cached once (:func:`~lossreg.hub.converted.load_converted_tag`).
    """
    if pretrained_cfg is None:
        raise RuntimeError(
            "pretrained=True, but no published weights are registered for this model "
            "(looked in lossreg's pretrained registry; `lossreg list pretrained` shows what exists)"
        )
    if pretrained_cfg.hf_hub_id or not (pretrained_cfg.url and pretrained_cfg.converter):
        return load_pretrained_tag(pretrained_cfg, **kwargs)
    return load_converted_tag(pretrained_cfg, **kwargs)


def build_from_recipe(recipe: Any, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """The detector of a recipe (name, path, dict or ``Recipe``); keyword arguments override its fields.

    With ``model.weights`` set, training starts from those weights (a pretrained
    name, ``hf-hub:`` or ``local-dir:``) through the fine-tuning transfer, so a
    different ``num_classes`` re-initialises only the classification outputs.
    """
    from .detectors.finetune import transfer_state_dict  # here: `import lossreg` stays light

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


def _from_entrypoint(name: str, tag: str | None, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    entry = model_entrypoint(name)
    pretrained_cfg = None
    if tag is not None or pretrained:
        try:
            pretrained_cfg = get_pretrained_cfg(name, tag)
        except UnknownComponentError:
            if pretrained or tag:
                raise
    if pretrained and hasattr(entry, "arch"):
        # lossreg's own <arch>_<backbone>_fpn names: published weights define their detector
        # (config.json); the entry's choices (architecture, backbone) must be the published ones.
        defaults = dict(getattr(entry, "default_args", {}))
        return load_pretrained(pretrained_cfg, arch=getattr(entry, "arch"), **{**defaults, **kwargs})  # noqa: B009
    # any other entry point loads its weights itself (timm's contract)
    return entry(pretrained=pretrained, pretrained_cfg=pretrained_cfg, **kwargs)


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Create a detector by name (see the module docstring for the grammar).

    Keyword arguments whose value is ``None`` are dropped, so command-line
    defaults never override a model's own defaults. Component overrides
    (``cls_loss="hcra_c"``, ``assigner={"name": "eatss", "extra": 3}``),
    ``num_classes``, ``label_names`` and ``backbone`` are passed to the model.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    parsed = parse_model_name(name)
    if parsed.source == "hf-hub":
        return load_hf_hub(parsed, **kwargs)
    if parsed.source == "local-dir":
        return load_local_dir(parsed, **kwargs)
    arch, tag = parsed.arch, parsed.tag
    assert arch is not None
    if is_model(arch):
        return _from_entrypoint(arch, tag, pretrained, kwargs)
    detectors = get_registry("detector")
    if arch in detectors:
        if tag or pretrained:
            raise ValueError(
                f"{arch!r} is an architecture without published weights of its own; pretrained weights belong to "
                f"model names such as {arch}_resnet50_fpn (`lossreg list pretrained {arch}*`)"
            )
        return detectors.create(arch, **kwargs)
    recipes = list_recipes()
    if arch in recipes:
        if tag:
            raise ValueError(f"recipe name {arch!r} cannot take a pretrained tag ({tag!r})")
        return build_from_recipe(arch, pretrained=pretrained, **kwargs)
    raise UnknownComponentError(
        "model",
        name,
        [*model_names(), *detectors.names(), *recipes],
        hint="see `lossreg list model`; Hub models need the 'hf-hub:' prefix",
    )


def create_detector(name: str, /, **kwargs: Any) -> nn.Module:
    """Alias of :func:`create_model` (kept for the component-style API: ``create_detector("atss", num_classes=3)``)."""
    return create_model(name, **kwargs)


def _suggest(name: str, names: list[str]) -> list[str]:  # used by the CLI
    return close_matches(name, names)
