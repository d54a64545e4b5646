"""``save_pretrained``: a detector as a Hub-ready folder.

>>> lossreg.save_pretrained(model, "out/atss_synthetic", metrics=metrics)   # doctest: +SKIP

The folder holds ``model.safetensors`` (weights only, safetensors), ``recipe.yaml``
(the full resolved training recipe), ``README.md`` (the model card) and
``config.json`` (see :mod:`.config`). Every file is written atomically, and
``config.json`` last: it records the weights' sha256, so a folder whose writing
was interrupted between files is detected at load time instead of loading
mismatched weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save
from torch import nn

from .._io import atomic_write_bytes, atomic_write_text, fsync_dir, tensors_for_safetensors
from .card import render_model_card
from .config import HubError, make_config

__all__ = ["CONFIG_NAME", "RECIPE_NAME", "WEIGHTS_NAME", "model_recipe", "save_pretrained"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
RECIPE_NAME = "recipe.yaml"
CARD_NAME = "README.md"


def model_recipe(model: nn.Module, recipe: Any = None) -> Any:
    """The :class:`~lossreg.Recipe` to publish with ``model``.

    ``recipe`` when given, else the one the model was built from (``model.recipe``,
    set by recipe builds and hub loads), else a recipe whose ``model`` section
    rebuilds the detector (the training sections then keep their defaults).
    """
    from ..recipe import load_recipe

    recipe = recipe if recipe is not None else getattr(model, "recipe", None)
    if recipe is not None:
        return load_recipe(recipe)
    args = dict(getattr(model, "model_args", {}))
    arch = getattr(model, "arch", "")
    section: dict[str, Any] = {"arch": arch}
    for key in ("backbone", "num_classes", "neck", "head"):
        if args.get(key) is not None:
            section[key] = args.pop(key)
    post = {k: args.pop(k) for k in ("score_thr", "nms_thr", "pre_nms_topk", "max_dets") if k in args}
    section["args"] = {k: v for k, v in args.items() if v is not None}
    return load_recipe(
        {"name": f"{arch}_model", "description": "The detector's configuration (not trained from a recipe).",
         "model": section, "eval": post},
        validate=False,
    )


def _dataset_name(recipe: Any) -> str | None:
    return _dataset_info(recipe)[0]


def _dataset_info(recipe: Any) -> tuple[str | None, str | None]:
    """``(dataset name, evaluated split)`` of a recipe: its ``data.val`` (else ``data.train``).

    COCO's own files (``instances_val2017.json``) give ``("coco", "val")``, the name the
    card maps to the Hub's ``detection-datasets/coco``; a VOC folder its folder name and
    split file; the synthetic set ``lossreg-synthetic-shapes`` and its ``params.split``.
    """
    import re

    data = recipe.data.val or recipe.data.train
    if data.format == "synthetic":
        return "lossreg-synthetic-shapes", str(data.params.get("split", "val" if recipe.data.val else "train"))
    if data.format == "coco" and data.ann_file:
        found = re.fullmatch(r"instances_(train|val|minival|test-dev)(2014|2017)\.json", Path(str(data.ann_file)).name)
        if found:
            return "coco", "val" if found.group(1) in ("val", "minival") else found.group(1)
        return (Path(str(data.root)).name or None) if data.root else None, Path(str(data.ann_file)).stem
    if data.root:
        return Path(str(data.root)).name or None, data.split or ("val" if data.format == "voc" else None)
    return None, None


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike[str],
    *,
    recipe: Any = None,
    metrics: Mapping[str, Any] | None = None,
    license: str | None = None,
    dataset: str | None = None,
    dataset_split: str | None = None,
    model_ref: str | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> Path:
    """Write ``model`` to ``save_directory`` in the Hub layout; returns the folder.

    Args:
        model: a lossreg detector (built by ``create_model`` or a recipe; components by name).
        recipe: the training recipe [the model's own, else one rebuilt from ``model_args``].
        metrics: evaluation results (``AP``, ``AP50``, ... in 0-1, ``per_class``) for
            ``config.json`` and the card's ``model-index``.
        license: the card's license [apache-2.0]. dataset: the card's dataset [from the recipe]:
            a name (``coco`` maps to its Hub id, see :data:`~.card.HUB_DATASETS`) or a Hub
            dataset id. dataset_split: the split the metrics were measured on [the recipe's
            ``data.val`` split; ``val`` for ``coco``].
        model_ref: how users load it, for the card's snippets [``local-dir:<folder>``;
            :func:`push_to_hub` passes ``hf-hub:<repo_id>``].
        pretrained_cfg: extra ``pretrained_cfg`` keys (``tag``, ``hf_hub_id``, ``license``, ...).
        description: the card's first paragraph.

    Raises :class:`HubError` when the model cannot be published faithfully (a
    component given as an instance rather than a registry name, non-finite weights).
    """
    folder = Path(save_directory)
    trained = recipe is not None or getattr(model, "recipe", None) is not None
    recipe = model_recipe(model, recipe)
    if dataset is None and trained:
        dataset, found_split = _dataset_info(recipe)
        dataset_split = dataset_split or found_split
    state = model.state_dict()
    tensors = tensors_for_safetensors(state)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise HubError(f"refusing to publish non-finite weights: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    image_size = recipe.data.image_size
    input_size = None
    if trained:
        input_size = (image_size, image_size) if isinstance(image_size, int) else (max(image_size),) * 2
    pcfg = {"license": license or "apache-2.0", **dict(pretrained_cfg or {})}
    # the config is built (and validated) before anything is written; the weights are
    # serialised once, in memory, so their sha256 needs no second read of the file
    config = make_config(model, metrics=metrics, pretrained_cfg=pcfg, input_size=input_size, dataset=dataset,
                         dataset_split=dataset_split)
    data = save(tensors, metadata={"format": "pt"})
    config["lossreg"]["files"] = {WEIGHTS_NAME: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / WEIGHTS_NAME, data)
    recipe_yaml = recipe.to_yaml()
    atomic_write_text(folder / RECIPE_NAME, recipe_yaml)
    ref = model_ref or f"local-dir:{folder}"
    card = render_model_card(config, recipe_yaml, ref, license=license, description=description or recipe.description)
    atomic_write_text(folder / CARD_NAME, card)
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    fsync_dir(folder)
    return folder
