"""The model card (``README.md``) of a published model, rendered from ``config.json``.

The card is ``hub/model_card_template.md`` (shipped in the wheel as
``lossreg/hub/model_card_template.md``) filled with ``string.Template``. Its YAML
front matter is what the Hub indexes: ``library_name: lossreg``,
``pipeline_tag: object-detection``, ``license``, ``tags`` (architecture, backbone,
assigner, losses, balancer), ``datasets`` and a ``model-index`` block whose
metrics the Hub shows on the model page. The front matter is built with
``huggingface_hub.ModelCardData`` and ``EvalResult`` (which check its fields and
write the ``model-index`` layout the Hub expects):

- ``datasets`` lists the dataset's Hub id where one exists (:data:`HUB_DATASETS`:
  COCO is ``detection-datasets/coco``; an ``owner/name`` dataset is taken as a Hub id),
  and is left out for data that has none (the synthetic shapes, a local VOC folder);
- the ``model-index`` result names the dataset (its Hub id as ``type``, else lossreg's
  name for it) and the split that was evaluated (``config.json``'s
  ``lossreg.dataset_split``: the recipe's ``data.val`` split, COCO's ``val`` for
  ``instances_val2017.json``);
- metric values are COCO box AP **in percent** (``config.json`` keeps them in 0-1), and
  each metric's name says so: ``AP (IoU 0.50:0.95), %``.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from .._registry import component_info, declared_slots
from .config import component_kind

__all__ = ["HUB_DATASETS", "card_template", "dataset_entry", "render_model_card"]

#: Detection datasets with an id on the Hugging Face Hub, by the name lossreg gives them
#: (``config.json``'s ``lossreg.dataset``): Hub id, display name and the split a ``val`` evaluation means.
HUB_DATASETS: dict[str, dict[str, str]] = {
    "coco": {"id": "detection-datasets/coco", "name": "COCO 2017", "split": "val"},
}

_METRIC_NAMES = {
    "AP": "AP (IoU 0.50:0.95)",
    "AP50": "AP50",
    "AP75": "AP75",
    "APs": "AP small",
    "APm": "AP medium",
    "APl": "AP large",
}


def card_template() -> str:
    """The template text: the installed package's copy, else the source checkout's ``hub/``."""
    packaged = resources.files("lossreg") / "hub" / "model_card_template.md"
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[3] / "hub" / "model_card_template.md"
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    raise FileNotFoundError("lossreg's model card template is missing from this installation (hub/model_card_template.md)")


def _component(config: Mapping[str, Any], slot: str) -> str | None:
    comps = config["lossreg"].get("components", {})
    for key in (f"head.{slot}", f"roi_head.{slot}", f"rpn_head.{slot}"):
        if key in comps and comps[key].get("name"):
            return str(comps[key]["name"])
    return None


def _papers(config: Mapping[str, Any]) -> list[str]:
    papers: list[str] = []
    for key, entry in config["lossreg"].get("components", {}).items():
        kind = component_kind(key)
        if not kind or not entry.get("name"):
            continue
        try:
            paper = component_info(kind, entry["name"]).get("paper")
        except KeyError:
            continue
        if paper and paper not in papers and not paper.startswith("none"):
            papers.append(paper)
    return papers


def _metrics(config: Mapping[str, Any]) -> dict[str, float]:
    found = config["lossreg"].get("metrics") or {}
    return {k: float(found[k]) for k in _METRIC_NAMES if isinstance(found.get(k), (int, float))}


def dataset_entry(dataset: str | None, split: str | None = None) -> dict[str, str | None]:
    """``{"id": Hub id or None, "name": display name, "split": evaluated split}`` of lossreg's dataset name."""
    if not dataset:
        return {"id": None, "name": "custom", "split": split}
    known = HUB_DATASETS.get(dataset.lower())
    if known is not None:
        return {"id": known["id"], "name": known["name"], "split": split or known["split"]}
    if dataset.count("/") == 1 and " " not in dataset:  # already a Hub dataset id
        return {"id": dataset, "name": dataset.split("/")[1], "split": split}
    return {"id": None, "name": dataset, "split": split}


def _card_data(config: Mapping[str, Any], name: str, license: str | None, dataset: str | None) -> Any:
    """The front matter as ``huggingface_hub.ModelCardData`` (its ``EvalResult`` entries checked on construction)."""
    from huggingface_hub import EvalResult, ModelCardData

    block = config["lossreg"]
    tags = ["lossreg", "object-detection", str(config["architecture"]), str(block["backbone"].get("name"))]
    for slot in declared_slots("head"):
        comp = _component(config, slot)
        if comp and comp not in tags:
            tags.append(comp)
    entry = dataset_entry(dataset, block.get("dataset_split"))
    results = [
        EvalResult(
            task_type="object-detection",
            task_name="Object Detection",
            dataset_type=str(entry["id"] or entry["name"]),
            dataset_name=str(entry["name"]),
            dataset_split=entry["split"],
            metric_type="mAP" if key == "AP" else key,
            metric_name=f"{_METRIC_NAMES[key]}, %",
            metric_value=round(100.0 * value, 2),
        )
        for key, value in _metrics(config).items()
    ]
    return ModelCardData(
        library_name="lossreg",
        pipeline_tag="object-detection",
        license=license or "apache-2.0",
        tags=tags,
        datasets=[entry["id"]] if entry["id"] else None,
        model_name=name if results else None,
        eval_results=results or None,
    )


def front_matter(config: Mapping[str, Any], name: str, license: str | None, dataset: str | None) -> dict[str, Any]:
    """The card's YAML metadata (what the Hub indexes and shows), as built by ``ModelCardData``."""
    return dict(_card_data(config, name, license, dataset).to_dict())


def _title(model_ref: str) -> str:
    """``owner/repo`` of a Hub reference, the folder name of a local one."""
    if model_ref.startswith("local-dir:"):
        return Path(model_ref.removeprefix("local-dir:")).name or model_ref
    return model_ref.removeprefix("hf-hub:")


def _table_row(slot: str, entry: Mapping[str, Any]) -> str:
    params = ", ".join(f"{k}={json.dumps(v)}" for k, v in entry.get("params", {}).items())
    return f"| {slot} | `{entry.get('name')}` | {params or '-'} |"


def render_model_card(
    config: Mapping[str, Any],
    recipe_yaml: str,
    model_ref: str,
    *,
    license: str | None = None,
    description: str | None = None,
) -> str:
    """The ``README.md`` text of a published model.

    ``model_ref`` is how users load it (``hf-hub:owner/repo`` or a ``model.tag``);
    it appears in the usage snippets and as the model-index name.
    """
    block = config["lossreg"]
    dataset = block.get("dataset")
    input_size = (config.get("pretrained_cfg") or {}).get("input_size")
    height, width = (int(input_size[1]), int(input_size[2])) if input_size else (512, 512)
    metrics = _metrics(config)
    if metrics:
        header = "| " + " | ".join(_METRIC_NAMES[k] for k in metrics) + " |"
        values = "| " + " | ".join(f"{100 * v:.1f}" for v in metrics.values()) + " |"
        per_class = block.get("per_class") or {}
        entry = dataset_entry(dataset, block.get("dataset_split"))
        where = f"the `{entry['split']}` split of {entry['name']}" if entry["split"] else str(entry["name"])
        if entry["id"]:
            where += f" ([`{entry['id']}`](https://huggingface.co/datasets/{entry['id']}) on the Hub)"
        metrics_section = (
            f"COCO-style box AP (pycocotools `COCOeval`, IoU 0.50:0.95 unless named, maxDets 100) on {where}, "
            f"**in %** (the `model-index` values too; `config.json` keeps them in 0-1):\n\n"
            f"{header}\n|{'---|' * len(metrics)}\n{values}"
        )
        if per_class:
            rows = "\n".join(
                f"| {name} | {'-' if ap is None else f'{100 * ap:.1f}'} |" for name, ap in per_class.items()
            )
            metrics_section += f"\n\nPer class:\n\n| class | AP |\n|---|---|\n{rows}"
    else:
        metrics_section = "No evaluation was recorded with these weights."
    papers = _papers(config)
    fields = {
        "front_matter": _card_data(config, _title(model_ref), license, dataset).to_yaml().strip(),
        "title": _title(model_ref),
        "description": description or f"Object detector published with lossreg {block.get('version')}.",
        "arch": config["architecture"],
        "backbone": block["backbone"].get("name"),
        "cls_loss": _component(config, "cls_loss") or "-",
        "reg_loss": _component(config, "reg_loss") or "-",
        "assigner": _component(config, "assigner") or "-",
        "balancer": _component(config, "balancer") or "-",
        "num_classes": config.get("num_classes"),
        "label_names": ", ".join(f"`{n}`" for n in (config.get("label_names") or [])) or "unnamed",
        "input_size": f"{height}x{width} in training" if input_size else "any size",
        "postprocess": ", ".join(f"{k}={v}" for k, v in block.get("postprocess", {}).items()),
        "sha256": (block.get("files", {}).get("model.safetensors") or {}).get("sha256", "-"),
        "version": block.get("version"),
        "components_table": "\n".join(_table_row(k, v) for k, v in block.get("components", {}).items()),
        "model_ref": model_ref,
        "height": height,
        "width": width,
        "metrics_section": metrics_section,
        "recipe": recipe_yaml.strip(),
        "citations": "\n".join(f"- {p}" for p in papers) or "-",
    }
    return string.Template(card_template()).substitute(fields)
