"""The model card (``README.md``) of a published model, rendered from ``config.json``.

The card is ``hub/model_card_template.md`` (shipped in the wheel as
``lossreg/hub/model_card_template.md``) filled with ``string.Template``. Its YAML
front matter is what the Hub indexes: ``library_name: lossreg``,
``pipeline_tag: object-detection``, ``license``, ``tags`` (architecture, backbone,
assigner, losses, balancer), ``datasets`` and a ``model-index`` block whose
metrics the Hub shows on the model page.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .._registry import component_info, declared_slots
from .config import component_kind

__all__ = ["card_template", "render_model_card"]

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


def front_matter(config: Mapping[str, Any], name: str, license: str | None, dataset: str | None) -> dict[str, Any]:
    """The card's YAML metadata (what the Hub indexes and shows)."""
    block = config["lossreg"]
    tags = ["lossreg", "object-detection", str(config["architecture"]), str(block["backbone"].get("name"))]
    for slot in declared_slots("head"):
        comp = _component(config, slot)
        if comp and comp not in tags:
            tags.append(comp)
    meta: dict[str, Any] = {
        "library_name": "lossreg",
        "pipeline_tag": "object-detection",
        "license": license or "apache-2.0",
        "tags": tags,
    }
    if dataset:
        meta["datasets"] = [dataset]
    metrics = _metrics(config)
    if metrics:
        meta["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "object-detection", "name": "Object Detection"},
                        "dataset": {"type": dataset or "custom", "name": dataset or "custom", "split": "validation"},
                        "metrics": [
                            {"type": "mAP" if key == "AP" else key, "name": _METRIC_NAMES[key], "value": round(value, 4)}
                            for key, value in metrics.items()
                        ],
                    }
                ],
            }
        ]
    return meta


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
        metrics_section = (
            f"COCO-style box AP (pycocotools `COCOeval`, in %) on {dataset or 'the validation split'}:\n\n"
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
        "front_matter": yaml.safe_dump(front_matter(config, _title(model_ref), license, dataset), sort_keys=False).strip(),
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
