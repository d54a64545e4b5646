"""Ablations: train every combination of swapped recipe settings, several seeds each, and tabulate them.

>>> plan = plan_ablation("quickstart", ["model.cls_loss=focal,qfl,vfl,hcra_c",
...                                     "model.reg_loss=giou,hcra_r"], seeds=[0, 1, 2])   # doctest: +SKIP
>>> summary = run_ablation(plan, jobs=2)                                                   # doctest: +SKIP
>>> print(summary["table"])                                                                # doctest: +SKIP

``lossreg ablate`` is this module. A *swap* ``KEY=V1,V2,...`` lists values of one recipe
field; each value is read as YAML exactly as ``--set KEY=V`` reads it, so a value may be
a flow mapping (``model.cls_loss={name: hcra_c, rci_mode: paper},focal``: commas split
values only outside braces, brackets and quotes), and repeating a KEY adds values.
The variants are the grid of all combinations or, ``one_at_a_time``, the recipe as it
is (``baseline``) plus each single swapped value. Every variant is validated with
:func:`~lossreg.recipe.load_recipe` before anything trains, so an unknown component
fails at once with the recipe's own error naming its YAML path.

The output folder (``runs/ablate-<recipe>`` by default) holds::

    ablation_plan.json                  the variants, seeds, baseline and each variant's recipe
    <variant>/seed<N>/                  one run folder of lossreg train per variant and seed,
                                        e.g. cls_loss=qfl__reg_loss=giou/seed0
    <variant>/seed<N>/eval-<split>/     lossreg eval's folder of the final model on the validation
                                        split, plus score_iou_pairs.npz (each detection's score, IoU)
    ablation.md                         the table (AP, AP50, AP75, APs/m/l in %, mean ± std over
                                        seeds, ΔAP to the baseline, score-IoU Pearson r, time per run)
    ablation.json                       every number behind it, per run and per variant
    ablation_ap.png                     AP per variant with the seeds' standard deviation
    score_iou_grid.png                  the score-IoU plot of each variant (first seed), same axes

Re-running the same command skips finished runs (``metrics.json`` and the evaluation
written), resumes half-finished ones from their last checkpoint (:class:`Trainer`'s
``resume``) and re-evaluates runs whose evaluation is missing; a run folder trained with
a different recipe is refused. ``jobs > 1`` trains that many runs at once as
subprocesses (``python -m lossreg.engine.ablate --worker``, the same code as in process),
each with an equal share of the CPU threads (``OMP_NUM_THREADS``) and, with several GPUs,
its own GPU; their output goes to ``<run>/ablate.log``. Under ``torchrun`` every process
runs the same list of runs one after the other with DistributedDataParallel and rank 0
evaluates and writes the summary. :func:`summarize` rebuilds the summary from the run
folders at any time.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .._io import atomic_write_bytes, atomic_write_text
from ..recipe import Recipe, RecipeError, load_recipe
from . import distributed as dist_utils
from .checkpoint import checkpoint_paths
from .evaluate import METRIC_KEYS
from .trainer import Trainer, resolve_device

__all__ = [
    "AblationError",
    "AblationPlan",
    "PLAN_NAME",
    "Run",
    "Swap",
    "Variant",
    "enumerate_variants",
    "evaluate_run",
    "format_table",
    "parse_swaps",
    "plan_ablation",
    "run_ablation",
    "run_status",
    "split_values",
    "summarize",
]

logger = logging.getLogger(__name__)

PLAN_NAME = "ablation_plan.json"
PAIRS_NAME = "score_iou_pairs.npz"
LOG_NAME = "ablate.log"
BASELINE = "baseline"
#: detections scoring below this are left out of the score-IoU correlation (``lossreg eval``'s default)
SCORE_THR = 0.05

_SLUG_OK = re.compile(r"^[A-Za-z0-9_.+-]+$")
_MAX_SLUG = 40
_MAX_NAME = 160


class AblationError(ValueError):
    """A bad swap, seed list or output folder, or failed runs (one line, for the command line)."""


# --------------------------------------------------------------------------- swaps


def split_values(text: str) -> list[str]:
    """Split ``text`` at the commas outside ``{}``/``[]`` and quotes; the parts are stripped.

    ``"focal,{name: hcra_c, rci_mode: paper},'a,b'"`` -> ``["focal", "{name: hcra_c, rci_mode: paper}", "'a,b'"]``.
    Raises :class:`AblationError` for unbalanced brackets or quotes and for an empty part.
    """
    parts: list[str] = []
    depth: list[str] = []
    quote: str | None = None
    start, i = 0, 0
    closing = {"{": "}", "[": "]"}
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if quote == '"' and ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"" and (text[start:i].strip() == "" or (depth and text[start:i].rstrip()[-1:] in "{[,:")):
            quote = ch  # a quoted scalar starts a value (an apostrophe inside a word is no quote)
        elif ch in closing:
            depth.append(closing[ch])
        elif ch in "}]":
            if not depth or depth.pop() != ch:
                raise AblationError(f"unbalanced {ch!r} at character {i + 1} of {text!r}")
        elif ch == "," and not depth:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quote is not None:
        raise AblationError(f"unclosed {quote} quote in {text!r}")
    if depth:
        raise AblationError(f"unclosed {'{' if depth[-1] == '}' else '['} in {text!r}")
    parts.append(text[start:])
    parts = [p.strip() for p in parts]
    if any(not p for p in parts):
        raise AblationError(f"empty value in {text!r} (two commas in a row, or one at the start or end)")
    return parts


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class Swap:
    """One swapped recipe field: its dotted ``key`` and the ``values`` tried (``texts``: as written)."""

    key: str
    values: tuple[Any, ...]
    texts: tuple[str, ...]


def parse_swaps(items: Sequence[str]) -> list[Swap]:
    """``["model.cls_loss=focal,qfl", "model.reg_loss=giou", "model.cls_loss=vfl"]`` -> one :class:`Swap` per key.

    Values are YAML (as ``--set`` reads them); a repeated key adds its values to the
    first occurrence's, in order. Raises :class:`AblationError` naming the bad item:
    no ``=``, an empty key or value, unbalanced brackets or quotes, malformed YAML, a
    value listed twice for one key.
    """
    keys: list[str] = []
    values: dict[str, list[tuple[Any, str]]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AblationError(f"bad swap {item!r}: expected KEY=V1,V2,..., e.g. model.cls_loss=focal,qfl")
        if not all(part.strip() for part in key.split(".")) or any(c.isspace() for c in key):
            raise AblationError(f"bad swap key {key!r}: expected dotted field names like model.cls_loss")
        if not raw.strip():
            raise AblationError(f"swap {item!r} lists no values: expected KEY=V1,V2,...")
        try:
            texts = split_values(raw)
        except AblationError as exc:
            raise AblationError(f"bad swap {item!r}: {exc}") from None
        if key not in values:
            keys.append(key)
            values[key] = []
        for text in texts:
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                raise AblationError(f"bad value {text!r} in swap {item!r}: malformed YAML ({problem})") from None
            if any(_canonical(value) == _canonical(v) for v, _ in values[key]):
                raise AblationError(f"swap {key}: value {text!r} is listed twice")
            values[key].append((value, text))
    return [Swap(k, tuple(v for v, _ in values[k]), tuple(t for _, t in values[k])) for k in keys]


# --------------------------------------------------------------------------- variants


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Column and folder labels of swap keys: without the section (``model.cls_loss`` -> ``cls_loss``,
    ``train.optimizer.lr`` -> ``optimizer.lr``); the full key where two would read the same."""
    short = {k: (k.split(".", 1)[1] if "." in k else k) for k in keys}
    counts: dict[str, int] = {}
    for s in short.values():
        counts[s] = counts.get(s, 0) + 1
    return {k: (s if counts[s] == 1 else k) for k, s in short.items()}


def display_value(value: Any) -> str:
    """A short readable text of a swapped value: ``focal``, ``hcra_c(rci_mode=paper)``, ``0.01``, ``[8, 11]``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        params = ", ".join(f"{k}={display_value(v)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({params})" if params else value["name"]
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def slug(value: Any) -> str:
    """A folder-safe form of :func:`display_value`; lossy ones (and long ones) end in a hash of the value."""
    text = display_value(value)
    if _SLUG_OK.match(text) and len(text) <= _MAX_SLUG:
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-.")[:_MAX_SLUG].rstrip("-.")
    digest = hashlib.sha1(_canonical(value).encode("utf-8")).hexdigest()[:6]
    return f"{cleaned}-{digest}" if cleaned else digest


@dataclass(frozen=True)
class Variant:
    """One combination of swapped values.

    ``name`` is its folder (``cls_loss=qfl__reg_loss=giou``, or ``baseline``), ``label``
    its readable form, ``settings`` the ``(key, value)`` pairs it sets and ``overrides``
    them as ``--set`` strings.
    """

    name: str
    label: str
    settings: tuple[tuple[str, Any], ...]
    overrides: tuple[str, ...]

    def value_of(self, key: str) -> tuple[bool, Any]:
        for k, v in self.settings:
            if k == key:
                return True, v
        return False, None


def _variant(picks: Sequence[tuple[Swap, int]], labels: Mapping[str, str]) -> Variant:
    parts = [f"{labels[s.key]}={slug(s.values[i])}" for s, i in picks]
    name = "__".join(parts)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
        name = f"{name[: _MAX_NAME - 9].rstrip('_.-')}-{digest}"
    label = ", ".join(f"{labels[s.key]}={display_value(s.values[i])}" for s, i in picks)
    return Variant(
        name=name,
        label=label,
        settings=tuple((s.key, s.values[i]) for s, i in picks),
        overrides=tuple(f"{s.key}={s.texts[i]}" for s, i in picks),
    )


def enumerate_variants(swaps: Sequence[Swap], one_at_a_time: bool = False) -> list[Variant]:
    """The variants of ``swaps``: the grid (cartesian product, the first swap varying slowest) or,
    ``one_at_a_time``, ``baseline`` (no override) followed by one variant per swapped value."""
    if not swaps:
        raise AblationError("nothing to ablate: give at least one --swap KEY=V1,V2,...")
    labels = short_keys([s.key for s in swaps])
    if one_at_a_time:
        out = [Variant(BASELINE, BASELINE, (), ())]
        out += [_variant([(s, i)], labels) for s in swaps for i in range(len(s.values))]
    else:
        out = [_variant(list(zip(swaps, idx)), labels) for idx in itertools.product(*(range(len(s.values)) for s in swaps))]
    seen: dict[str, Variant] = {}
    for v in out:
        if v.name in seen:
            raise AblationError(f"variants {seen[v.name].label!r} and {v.label!r} get the same folder name {v.name!r}")
        seen[v.name] = v
    return out


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Run:
    """One training run: a variant at a seed, in ``output_dir / dir``."""

    variant: str
    seed: int
    dir: str


@dataclass
class AblationPlan:
    """Everything an ablation runs, validated (see :func:`plan_ablation`); ``to_dict`` is ``ablation_plan.json``."""

    recipe: str
    base: Recipe
    sets: tuple[str, ...]
    swaps: list[Swap]
    one_at_a_time: bool
    seeds: list[int]
    variants: list[Variant]
    recipes: dict[str, Recipe]
    baseline: str
    baseline_note: str
    output_dir: Path
    skipped: list[str] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        return [Run(v.name, s, f"{v.name}/seed{s}") for v in self.variants for s in self.seeds]

    def run_dir(self, run: Run) -> Path:
        return self.output_dir / run.dir

    def recipe_of(self, run: Run) -> Recipe:
        return self.recipes[run.variant].with_overrides([f"train.seed={run.seed}"])

    @property
    def mode(self) -> str:
        return "one-at-a-time" if self.one_at_a_time else "grid"

    def command(self) -> str:
        """The ``lossreg ablate`` command line that makes this plan."""
        words = ["lossreg", "ablate", self.recipe]
        for s in self.swaps:
            words += ["--swap", f"{s.key}={','.join(s.texts)}"]
        if self.one_at_a_time:
            words.append("--one-at-a-time")
        words += ["--seed-list", ",".join(str(s) for s in self.seeds)]
        for item in self.sets:
            words += ["--set", item]
        words += ["--output", str(self.output_dir)]
        return shlex.join(words)

    def to_dict(self) -> dict[str, Any]:
        labels = short_keys([s.key for s in self.swaps])
        base = self.base.to_dict()
        return {
            "format": "lossreg-ablation-1",
            "recipe": self.recipe,
            "recipe_name": self.base.name,
            "command": self.command(),
            "mode": self.mode,
            "sets": list(self.sets),
            "swaps": [{"key": s.key, "label": labels[s.key], "values": list(s.values), "texts": list(s.texts)} for s in self.swaps],
            "base_values": {s.key: _get_path(base, s.key) for s in self.swaps},
            "seeds": list(self.seeds),
            "baseline": self.baseline,
            "baseline_note": self.baseline_note,
            "skipped": list(self.skipped),
            "variants": [
                {
                    "name": v.name,
                    "label": v.label,
                    "settings": [[k, val] for k, val in v.settings],
                    "overrides": list(v.overrides),
                    "is_baseline": v.name == self.baseline,
                    "eval_dir": eval_dir_name(self.recipes[v.name]),
                    "recipe": self.recipes[v.name].to_dict(),
                }
                for v in self.variants
            ],
            "runs": [dataclasses.asdict(r) for r in self.runs],
        }


def _get_path(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _seed_list(seeds: int | Sequence[int] | None, base: Recipe) -> list[int]:
    if seeds is None:
        return [base.train.seed]
    if isinstance(seeds, int):
        if seeds < 1:
            raise AblationError(f"--seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out:
        raise AblationError("the seed list is empty")
    if len(set(out)) != len(out):
        raise AblationError(f"the seed list {out} repeats a seed")
    if any(s < 0 for s in out):
        raise AblationError(f"seeds must be >= 0, got {out}")
    return out


def parse_seed_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (:class:`AblationError` otherwise)."""
    try:
        return [int(p) for p in split_values(text)]
    except (AblationError, ValueError):
        raise AblationError(f"bad seed list {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def plan_ablation(
    recipe: str | os.PathLike[str] | Mapping[str, Any] | Recipe,
    swaps: Sequence[str] | Sequence[Swap],
    one_at_a_time: bool = False,
    seeds: int | Sequence[int] | None = None,
    sets: Sequence[str] = (),
    output_dir: str | os.PathLike[str] | None = None,
) -> AblationPlan:
    """Parse the swaps, enumerate the variants and validate every variant's recipe.

    Args:
        recipe: the recipe (name, path, dict or :class:`Recipe`) every variant starts from.
        swaps: ``KEY=V1,V2`` strings (see :func:`parse_swaps`) or parsed :class:`Swap` s.
        one_at_a_time: the recipe itself plus each single swapped value, instead of the grid.
        seeds: a number N (seeds ``0 .. N-1``) or a list of seeds [the recipe's ``train.seed``].
        sets: ``--set`` overrides applied to every variant (before the swaps).
        output_dir: the ablation folder [``runs/ablate-<recipe name>``].

    The baseline is the variant whose recipe equals the recipe with ``sets`` applied
    (always ``baseline`` with ``one_at_a_time``, where a swapped value equal to the
    recipe's own is left out as a duplicate of it), else the first variant.
    Raises :class:`~lossreg.recipe.RecipeError` naming the variant and the YAML path of
    the first invalid recipe, and :class:`AblationError` for bad swaps or seeds.
    """
    if all(isinstance(s, Swap) for s in swaps):
        parsed = list(swaps)
    elif all(isinstance(s, str) for s in swaps):
        parsed = parse_swaps(swaps)
    else:
        raise AblationError("give swaps either as KEY=V1,V2 strings or as Swap objects, not both")
    source = recipe.to_dict() if isinstance(recipe, Recipe) else recipe
    base = load_recipe(source, overrides=list(sets))
    seed_list = _seed_list(seeds, base)
    variants = enumerate_variants(parsed, one_at_a_time)
    base_dict = base.to_dict()
    recipes: dict[str, Recipe] = {}
    kept: list[Variant] = []
    skipped: list[str] = []
    for v in variants:
        try:
            r = load_recipe(source, overrides=[*sets, *v.overrides])
        except RecipeError as exc:
            raise RecipeError(f"variant {v.label}: {exc}") from None
        if one_at_a_time and v.name != BASELINE and r.to_dict() == base_dict:
            skipped.append(f"{v.label}: the recipe's own setting, i.e. the baseline")
            continue
        recipes[v.name] = r
        kept.append(v)
    if one_at_a_time:
        baseline, note = BASELINE, "the recipe as it is (`baseline`)"
    else:
        own = [v for v in kept if recipes[v.name].to_dict() == base_dict]
        if own:
            baseline, note = own[0].name, f"the recipe's own setting ({own[0].label})"
        else:
            labels = short_keys([s.key for s in parsed])
            mine = ", ".join(f"{labels[s.key]}={_base_display(_get_path(base_dict, s.key))}" for s in parsed)
            baseline = kept[0].name
            note = f"the first variant ({kept[0].label}); the recipe's own setting ({mine}) is not among the variants"
    name = base.name if isinstance(base.name, str) and base.name else "recipe"
    out = Path(output_dir) if output_dir is not None else Path("runs") / f"ablate-{name}"
    text = os.fspath(recipe) if isinstance(recipe, (str, os.PathLike)) else name
    return AblationPlan(
        recipe=text, base=base, sets=tuple(sets), swaps=parsed, one_at_a_time=one_at_a_time, seeds=seed_list,
        variants=kept, recipes=recipes, baseline=baseline, baseline_note=note, output_dir=out, skipped=skipped,
    )


def _base_display(value: Any) -> str:
    return "(default)" if value is None else display_value(value)


# --------------------------------------------------------------------------- run folders


def eval_dir_name(recipe: Recipe) -> str | None:
    """``eval-<split>``, the folder ``lossreg eval RUN`` writes for the recipe's validation split (None without one)."""
    from .evaluate import _safe_name

    val = recipe.data.val
    if val is None:
        return None
    return "eval-" + _safe_name(str(val.split or dict(val.params).get("split") or "val"))


def _has_checkpoint(run_dir: Path) -> bool:
    weights, _ = checkpoint_paths(run_dir / "checkpoints" / "last")
    return weights.is_file() or Path(str(weights) + ".pending").is_file()


def _comparable(recipe: Mapping[str, Any], planned: Recipe) -> dict[str, Any]:
    from .trainer import _flatten

    flat = _flatten(recipe)
    flat.pop("train.device", None)  # --device may differ between invocations
    if planned.model.num_classes is None:
        flat.pop("model.num_classes", None)  # the trainer fills it in from the dataset
    return flat


def _check_same_recipe(run_dir: Path, planned: Recipe) -> None:
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        return
    try:
        saved = load_recipe(path, validate=False).to_dict()
    except RecipeError:
        return  # unreadable: the trainer rewrites it
    a, b = _comparable(saved, planned), _comparable(planned.to_dict(), planned)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if changed:
        first = ", ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in changed[:3])
        raise AblationError(
            f"{run_dir} was trained with a different recipe ({first}{', ...' if len(changed) > 3 else ''}); "
            "choose another --output or delete that run folder"
        )


def run_status(run_dir: str | os.PathLike[str], eval_dir: str | None) -> str:
    """``done`` (metrics.json and the evaluation), ``evaluate`` (trained, evaluation missing),
    ``resume`` (a checkpoint, no metrics.json) or ``new``."""
    p = Path(run_dir)
    if (p / "metrics.json").is_file():
        if eval_dir is None or ((p / eval_dir / "metrics.json").is_file() and (p / eval_dir / PAIRS_NAME).is_file()):
            return "done"
        return "evaluate"
    return "resume" if _has_checkpoint(p) else "new"


def evaluate_run(run_dir: str | os.PathLike[str], device: str | None = None, score_thr: float = SCORE_THR) -> dict[str, Any]:
    """Evaluate a finished run's ``model/`` on its recipe's validation split as ``lossreg eval RUN`` does.

    Writes ``<run>/eval-<split>/`` (``metrics.json`` with ``score_iou_correlation``,
    ``detections.json``, ``pr_curve.png``, ``score_iou.png``) and ``score_iou_pairs.npz``
    there (``scores`` and ``ious``, float32, for :func:`summarize`'s side-by-side figure).
    Returns the metrics.
    """
    from ..data import DetectionDataset, build_transforms
    from ..hub.load import load_model
    from .consistency import score_iou_pairs
    from .evaluate import evaluate_to_folder, match_labels, model_image_size, open_eval_data

    run = Path(run_dir)
    model = load_model(run)
    recipe = model.recipe
    found = open_eval_data(recipe=recipe, class_names=getattr(model, "label_names", None))
    label_map = match_labels(getattr(model, "label_names", None), model.num_classes, found.data.class_names)
    image_size = model_image_size(model)
    dev = resolve_device(device or recipe.train.device)
    dataset = DetectionDataset(found.data, build_transforms((), image_size, train=False))
    out = run / f"eval-{found.name}"
    metrics = evaluate_to_folder(
        model.to(dev), dataset, out, batch_size=recipe.eval.batch_size, device=dev, ann_file=found.ann_file,
        label_map=label_map, max_dets=recipe.eval.max_dets, score_thr=score_thr, num_workers=recipe.data.num_workers,
        extra={"model": str(run), "data": found.name,
               "image_size": image_size if isinstance(image_size, int) else list(image_size)},
    )
    detections = json.loads((out / "detections.json").read_text(encoding="utf-8"))
    scores, ious = score_iou_pairs(detections, found.data, score_thr)
    buf = io.BytesIO()
    np.savez_compressed(buf, scores=scores.astype(np.float32), ious=ious.astype(np.float32))
    atomic_write_bytes(out / PAIRS_NAME, buf.getvalue())
    return metrics


def train_run(
    recipe: Recipe, run_dir: Path, device: str | None = None, progress: bool | None = False, status: str | None = None
) -> None:
    """Train one run (resuming its last checkpoint if there is one) and evaluate it (rank 0).

    ``status`` is the run's :func:`run_status` [looked up]; under ``torchrun`` every
    process must be given rank 0's.
    """
    status = status or run_status(run_dir, eval_dir_name(recipe))
    if status in ("new", "resume"):
        trainer = Trainer(recipe, output_dir=run_dir, resume=True if status == "resume" else None,
                          device=device, progress=progress)
        trainer.train()
        del trainer
        gc.collect()
        _empty_cuda_cache()
    if dist_utils.is_main_process() and eval_dir_name(recipe) is not None:
        evaluate_run(run_dir, device=device)
    dist_utils.barrier()


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- running


def write_plan(plan: AblationPlan) -> Path:
    """Write ``ablation_plan.json`` into the output folder."""
    return atomic_write_text(plan.output_dir / PLAN_NAME, json.dumps(plan.to_dict(), indent=2, default=str) + "\n")


def statuses(plan: AblationPlan) -> dict[str, str]:
    """:func:`run_status` of every run; refuses run folders trained with another recipe."""
    out = {}
    for run in plan.runs:
        run_dir = plan.run_dir(run)
        recipe = plan.recipe_of(run)
        _check_same_recipe(run_dir, recipe)
        out[run.dir] = run_status(run_dir, eval_dir_name(recipe))
    return out


def describe_plan(plan: AblationPlan, status: Mapping[str, str] | None = None) -> str:
    """The text ``--dry-run`` prints: variants, baseline, and every run with its status and overrides."""
    n = len(plan.variants)
    grid = " x ".join(str(len(s.values)) for s in plan.swaps)
    shape = f"grid {grid} = {n} variants" if not plan.one_at_a_time else f"one at a time: {n} variants"
    lines = [
        f"ablation of {plan.base.name!r} ({plan.recipe}): {shape} x {len(plan.seeds)} seed(s) "
        f"{plan.seeds} = {len(plan.runs)} runs -> {plan.output_dir}",
        f"baseline: {plan.baseline_note}",
    ]
    if plan.sets:
        lines.append(f"every variant: --set {' --set '.join(plan.sets)}")
    for note in plan.skipped:
        lines.append(f"left out: {note}")
    width = max(len(r.dir) for r in plan.runs)
    for run in plan.runs:
        v = next(x for x in plan.variants if x.name == run.variant)
        state = f"{status[run.dir]:<8} " if status is not None else ""
        sets = " ".join(v.overrides) or "(the recipe as it is)"
        lines.append(f"  {run.dir:<{width}}  {state}{sets} train.seed={run.seed}")
    return "\n".join(lines)


def _threads_per_job(jobs: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, cores // jobs)


def _gpu_slots(device: str | None, plan: AblationPlan) -> list[str] | None:
    """Visible GPU ids to share among parallel jobs (None: leave CUDA_VISIBLE_DEVICES alone)."""
    name = device or plan.base.train.device
    if name not in ("auto", "cuda"):
        return None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x.strip() for x in visible.split(",") if x.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count]


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _run_parallel(
    plan: AblationPlan, todo: list[Run], jobs: int, device: str | None, say: Callable[[str], None]
) -> list[str]:
    plan_path = plan.output_dir / PLAN_NAME
    threads = _threads_per_job(jobs)
    gpus = _gpu_slots(device, plan)
    pending = deque(todo)
    active: dict[int, tuple[subprocess.Popen, Run, Any, float]] = {}
    failed: list[str] = []
    done = 0
    say(f"{len(todo)} runs, {jobs} at a time, {threads} CPU thread(s) each"
        + (f", GPUs {','.join(gpus)} in turn" if gpus else ""))
    try:
        while pending or active:
            while pending and len(active) < jobs:
                slot = min(set(range(jobs)) - set(active))
                run = pending.popleft()
                run_dir = plan.run_dir(run)
                run_dir.mkdir(parents=True, exist_ok=True)
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
                if gpus:
                    env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
                cmd = [sys.executable, "-m", "lossreg.engine.ablate", "--worker", str(plan_path), run.dir,
                       "--threads", str(threads)]
                if device:
                    cmd += ["--device", device]
                log = open(run_dir / LOG_NAME, "ab")  # closed when the process ends
                log.write(f"$ {shlex.join(cmd)}\n".encode())
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
                active[slot] = (proc, run, log, time.perf_counter())
                say(f"started  {run.dir} (log: {run_dir / LOG_NAME})")
            time.sleep(0.2)
            for slot, (proc, run, log, start) in list(active.items()):
                code = proc.poll()
                if code is None:
                    continue
                log.close()
                del active[slot]
                done += 1
                took = time.perf_counter() - start
                if code == 0:
                    say(f"finished {run.dir} [{done}/{len(todo)}] in {took:.0f} s{_ap_note(plan.run_dir(run))}")
                else:
                    failed.append(run.dir)
                    tail = _log_tail(plan.run_dir(run) / LOG_NAME)
                    say(f"FAILED   {run.dir} [{done}/{len(todo)}] (exit code {code}): {tail}")
    finally:
        for proc, _run, _log, _start in active.values():  # interrupted: stop the children we started
            proc.terminate()
        for proc, _run, log, _start in active.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
            log.close()
    return failed


def _ap_note(run_dir: Path) -> str:
    try:
        ap = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get("AP")
    except (OSError, ValueError):
        return ""
    return f": AP {100 * ap:.1f}" if isinstance(ap, (int, float)) else ""


def run_ablation(
    plan: AblationPlan,
    jobs: int = 1,
    device: str | None = None,
    progress: bool | None = False,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate every run of ``plan`` that is not finished, then :func:`summarize`.

    ``jobs`` runs train at once as subprocesses (1: one after the other in this process);
    under ``torchrun`` (``WORLD_SIZE`` > 1) ``jobs`` must be 1 and every process runs the
    same list with DDP. ``device`` overrides ``train.device``. ``say`` receives progress
    lines [logged]. Returns the summary (rank 0; ``None`` on the other ranks); its
    ``failed`` lists the runs that raised or exited non-zero (the others still ran).
    """
    say = say or logger.info
    world = dist_utils._env_int("WORLD_SIZE", 1)
    if jobs < 1:
        raise AblationError(f"--jobs must be >= 1, got {jobs}")
    if world > 1 and jobs != 1:
        raise AblationError(
            f"under torchrun ({world} processes) the runs go one after the other, each on all processes "
            f"with DDP: --jobs must be 1, got {jobs}"
        )
    if world > 1:
        dist_utils.init_distributed(resolve_device(device or plan.base.train.device).type)
    main = dist_utils.is_main_process()
    status = statuses(plan) if main else None
    status = dist_utils.broadcast_object(status)
    if main:
        write_plan(plan)
    todo = [r for r in plan.runs if status[r.dir] != "done"]
    skipped = len(plan.runs) - len(todo)
    if main:
        say(f"{len(plan.runs)} runs in {plan.output_dir}: {skipped} finished already, {len(todo)} to do")
    failed: list[str] = []
    if jobs > 1 and todo:
        failed = _run_parallel(plan, todo, jobs, device, say)
    else:
        for k, run in enumerate(todo, 1):
            run_dir = plan.run_dir(run)
            if main:
                say(f"[{k}/{len(todo)}] {status[run.dir]} {run.dir}")
            start = time.perf_counter()
            try:
                train_run(plan.recipe_of(run), run_dir, device=device, progress=progress, status=status[run.dir])
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                if world > 1:
                    raise  # the other processes would wait for this one forever
                failed.append(run.dir)
                run_dir.mkdir(parents=True, exist_ok=True)
                with open(run_dir / LOG_NAME, "a", encoding="utf-8") as fh:
                    fh.write(traceback.format_exc())
                say(f"FAILED   {run.dir}: {type(exc).__name__}: {exc} (traceback in {run_dir / LOG_NAME})")
                continue
            if main:
                say(f"finished {run.dir} in {time.perf_counter() - start:.0f} s{_ap_note(run_dir)}")
    if not main:
        return None  # type: ignore[return-value]
    summary = summarize(plan.output_dir)
    summary["failed"] = failed
    return summary


# --------------------------------------------------------------------------- the summary


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals)}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pct(stats: Mapping[str, Any]) -> str:
    if stats["mean"] is None:
        return "–"
    text = f"{100 * stats['mean']:.1f}"
    return text if stats["std"] is None else f"{text} ± {100 * stats['std']:.1f}"


def _corr(stats: Mapping[str, Any]) -> str:
    if stats["mean"] is None:
        return "–"
    text = f"{stats['mean']:.3f}"
    return text if stats["std"] is None else f"{text} ± {stats['std']:.3f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def format_table(summary: Mapping[str, Any]) -> str:
    """The Markdown table of :func:`summarize`'s result: one row per variant, the papers' columns.

    AP columns are COCO's in %, ``mean ± std`` over the seeds (sample standard deviation;
    a single seed shows the mean alone); ``ΔAP`` is the difference of the mean AP to the
    baseline row's in points; ``score-IoU r`` the Pearson correlation (mean ± std).
    """
    swaps = summary["swaps"]
    header = [s["label"] for s in swaps] + list(METRIC_KEYS) + ["ΔAP", "score-IoU r", "time/run", "runs"]
    align = ["---"] * len(swaps) + ["---:"] * (len(header) - len(swaps))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for v in summary["variants"]:
        cells = [_cell(v["values"][s["key"]]) for s in swaps]
        cells += [_pct(v["stats"][k]) for k in METRIC_KEYS]
        if v["is_baseline"]:
            cells.append("baseline")
        else:
            cells.append("–" if v["delta_AP"] is None else f"{100 * v['delta_AP']:+.1f}")
        cells.append(_corr(v["stats"]["score_iou_r"]))
        cells.append(_duration(v["stats"]["train_seconds"]["mean"]))
        cells.append(f"{v['finished']}/{len(v['runs'])}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _load_pairs(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path) as data:
            return np.asarray(data["scores"], dtype=np.float64), np.asarray(data["ious"], dtype=np.float64)
    except (OSError, KeyError, ValueError):
        return None


def summarize(output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Rebuild the summary of an ablation folder from its plan and run folders.

    Writes ``ablation.md``, ``ablation.json``, ``ablation_ap.png`` and ``score_iou_grid.png``
    (see the module docstring) and returns the summary: ``variants`` (per variant its
    ``runs`` with their raw ``metrics`` and ``score_iou`` as found, and ``stats``:
    mean/std/n of each metric on metrics.json's 0-1 scale, ``score_iou_r`` and
    ``train_seconds``), ``baseline``, ``table`` (the Markdown table) and ``markdown``.
    Runs not finished yet are counted as missing. Raises :class:`AblationError` when the
    folder has no ``ablation_plan.json``.
    """
    out = Path(output_dir)
    plan = _read_json(out / PLAN_NAME)
    if plan is None:
        raise AblationError(f"{out} has no {PLAN_NAME}: it is not the output folder of lossreg ablate")
    base_values = plan.get("base_values", {})
    variants = []
    for v in plan["variants"]:
        settings = {k: val for k, val in v["settings"]}
        values = {
            s["key"]: display_value(settings[s["key"]]) if s["key"] in settings else _base_display(base_values.get(s["key"]))
            for s in plan["swaps"]
        }
        runs = []
        for r in (r for r in plan["runs"] if r["variant"] == v["name"]):
            run_dir = out / r["dir"]
            metrics = _read_json(run_dir / "metrics.json")
            ev = _read_json(run_dir / v["eval_dir"] / "metrics.json") if v.get("eval_dir") and metrics else None
            runs.append({
                "seed": r["seed"],
                "dir": r["dir"],
                "finished": metrics is not None,
                "metrics": None if metrics is None else {
                    **{k: metrics.get(k) for k in METRIC_KEYS},
                    "per_class": metrics.get("per_class"),
                    "train_seconds": metrics.get("train_seconds"),
                    "iterations": metrics.get("iterations"),
                },
                "score_iou": None if ev is None else {
                    "pearson": ev.get("score_iou_correlation"),
                    "spearman": ev.get("score_iou_spearman"),
                    "num_pairs": ev.get("score_iou_pairs"),
                },
            })
        done = [r for r in runs if r["finished"]]
        stats = {k: _stats([r["metrics"][k] for r in done]) for k in METRIC_KEYS}
        stats["score_iou_r"] = _stats([r["score_iou"]["pearson"] for r in done if r["score_iou"]])
        stats["train_seconds"] = _stats([r["metrics"]["train_seconds"] for r in done])
        variants.append({
            "name": v["name"], "label": v["label"], "settings": v["settings"], "values": values,
            "is_baseline": bool(v["is_baseline"]), "eval_dir": v.get("eval_dir"),
            "runs": runs, "finished": len(done), "stats": stats,
        })
    base = next((v for v in variants if v["is_baseline"]), None)
    for v in variants:
        a, b = v["stats"]["AP"]["mean"], base["stats"]["AP"]["mean"] if base else None
        v["delta_AP"] = None if v["is_baseline"] or a is None or b is None else a - b
    summary: dict[str, Any] = {
        "format": "lossreg-ablation-summary-1",
        "recipe": plan["recipe"], "recipe_name": plan.get("recipe_name"), "command": plan.get("command"),
        "mode": plan["mode"], "sets": plan.get("sets", []), "seeds": plan["seeds"], "swaps": plan["swaps"],
        "baseline": plan["baseline"], "baseline_note": plan.get("baseline_note", ""), "skipped": plan.get("skipped", []),
        "variants": variants,
    }
    summary["table"] = format_table(summary)
    _plot_ap(summary, out / "ablation_ap.png")
    _plot_score_iou_grid(summary, out, out / "score_iou_grid.png")
    summary["markdown"] = _markdown(summary)
    atomic_write_text(out / "ablation.json", json.dumps({k: v for k, v in summary.items() if k != "markdown"},
                                                      indent=2, default=str) + "\n")
    atomic_write_text(out / "ablation.md", summary["markdown"])
    return summary


def _markdown(summary: Mapping[str, Any]) -> str:
    variants = summary["variants"]
    runs = sum(len(v["runs"]) for v in variants)
    finished = sum(v["finished"] for v in variants)
    seeds = summary["seeds"]
    shape = "the baseline and one swapped setting each" if summary["mode"] == "one-at-a-time" else "grid: every combination"
    bullets = []
    if summary.get("command"):
        bullets.append(f"Command: `{summary['command']}`")
    if summary["sets"]:
        bullets.append(f"Every variant also sets: {', '.join(f'`{s}`' for s in summary['sets'])}")
    bullets.append(f"Baseline: {summary['baseline_note']}.")
    bullets += [f"Left out: {note}." for note in summary["skipped"]]
    bullets.append(
        "AP, AP50, AP75, APs, APm, APl: COCO box AP of the final model on the validation split, in %, "
        "mean ± sample standard deviation over the seeds (no ± with one seed). ΔAP: mean AP minus the "
        "baseline's, in points. score-IoU r: Pearson correlation of each detection's score with its IoU "
        f"to the best ground truth of its class (HCRAL figure 3a; score ≥ {SCORE_THR:g}). time/run: mean "
        "training time. runs: finished / planned."
    )
    lines = [
        f"# Ablation of `{summary['recipe_name'] or summary['recipe']}`",
        "",
        f"{len(variants)} variants ({shape}) × {len(seeds)} seed(s) ({', '.join(str(s) for s in seeds)}): "
        f"{finished} of {runs} runs finished.",
        "",
        *(f"- {b}" for b in bullets),
        "",
        summary["table"],
        "",
        "![AP per variant](ablation_ap.png)",
        "",
        "![score against IoU per variant](score_iou_grid.png)",
    ]
    missing = [r["dir"] for v in variants for r in v["runs"] if not r["finished"]]
    if missing:
        lines += ["", f"Not finished: {', '.join(f'`{m}`' for m in missing)}."]
    return "\n".join(lines) + "\n"


def _bar_label(v: Mapping[str, Any], swaps: Sequence[Mapping[str, Any]]) -> str:
    if v["name"] == BASELINE:
        return BASELINE
    return "\n".join(v["values"][s["key"]] for s in swaps)


def _plot_ap(summary: Mapping[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    from .plots import _save

    variants = summary["variants"]
    labels = [_bar_label(v, summary["swaps"]) for v in variants]
    means = [v["stats"]["AP"]["mean"] for v in variants]
    stds = [v["stats"]["AP"]["std"] or 0.0 for v in variants]
    heights = [100 * m if m is not None else 0.0 for m in means]
    colors = ["tab:orange" if v["is_baseline"] else "tab:blue" for v in variants]
    fig = Figure(figsize=(max(5.0, 0.9 * len(variants) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(variants))
    ax.bar(x, heights, yerr=[100 * s for s in stds], capsize=4, color=colors, edgecolor="black", linewidth=0.6)
    for xi, m, h, sd in zip(x, means, heights, stds):
        ax.text(xi, h + 100 * sd, "n/a" if m is None else f"{h:.1f}", ha="center", va="bottom", fontsize="small")
    base = next((v for v in variants if v["is_baseline"]), None)
    if base is not None and base["stats"]["AP"]["mean"] is not None:
        ax.axhline(100 * base["stats"]["AP"]["mean"], color="tab:orange", linestyle="--", linewidth=1,
                   label="baseline")
        ax.legend(loc="best", fontsize="small")
    ax.set_xticks(x)
    tilt = len(variants) > 6 or any(len(line) > 14 for label in labels for line in label.splitlines())
    ax.set_xticklabels(labels, fontsize="small", rotation=30 if tilt else 0, ha="right" if tilt else "center",
                       rotation_mode="anchor")
    top = max([h + 100 * s for h, s in zip(heights, stds)] + [1.0])
    ax.set_ylim(0, top * 1.15)
    ax.set_ylabel("AP (%), mean ± std over seeds")
    ax.set_xlabel(" / ".join(s["label"] for s in summary["swaps"]))
    ax.set_title(f"AP per variant ({len(summary['seeds'])} seed(s))")
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)
    return path


def _plot_score_iou_grid(summary: Mapping[str, Any], out: Path, path: Path) -> Path:
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    from .plots import HIST2D_MIN_POINTS, _save

    variants = summary["variants"]
    cols = min(len(variants), 4)
    rows = math.ceil(len(variants) / cols)
    fig = Figure(figsize=(3.6 * cols, 3.8 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).reshape(-1)
    for ax, v in zip(axes, variants):
        run = v["runs"][0] if v["runs"] else None
        pairs = _load_pairs(out / run["dir"] / v["eval_dir"] / PAIRS_NAME) if run and v["eval_dir"] else None
        if pairs is None:
            ax.text(0.5, 0.5, "not evaluated yet", ha="center", va="center", transform=ax.transAxes)
        elif len(pairs[0]) > HIST2D_MIN_POINTS:
            ax.hist2d(pairs[1], pairs[0], bins=40, range=[[0, 1], [0, 1]], norm=LogNorm(), cmap="viridis")
        elif len(pairs[0]):
            ax.scatter(pairs[1], pairs[0], s=6, alpha=0.5, edgecolors="none")
        else:
            ax.text(0.5, 0.5, f"no detections with score >= {SCORE_THR:g}", ha="center", va="center",
                    transform=ax.transAxes, fontsize="small")
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.4", linewidth=1)
        r = (run or {}).get("score_iou") or {}
        corr = "n/a" if r.get("pearson") is None else f"{r['pearson']:.3f}"
        title = v["label"].replace(", ", "\n") + (" (baseline)" if v["is_baseline"] and v["name"] != BASELINE else "")
        seed = f"seed {run['seed']}" if run else ""
        ax.set_title(f"{title}\nr = {corr}, n = {r.get('num_pairs', 0) or 0}, {seed}", fontsize="small")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
    for ax in axes[len(variants):]:
        ax.set_visible(False)
    for ax in axes.reshape(rows, cols)[-1]:
        ax.set_xlabel("IoU with best ground truth")
    for ax in axes.reshape(rows, cols)[:, 0]:
        ax.set_ylabel("score")
    fig.suptitle("classification score against IoU, per variant (HCRAL fig. 3a)")
    _save(fig, path)
    return path


# --------------------------------------------------------------------------- worker


def _worker_main(argv: Sequence[str] | None = None) -> int:
    """``python -m lossreg.engine.ablate --worker PLAN RUN``: train and evaluate one run of a plan (for ``jobs > 1``)."""
    parser = argparse.ArgumentParser(prog="python -m lossreg.engine.ablate",
                                     description="Train and evaluate one run of an ablation plan (lossreg ablate --jobs N).")
    parser.add_argument("--worker", required=True, metavar="PLAN", help="the ablation_plan.json")
    parser.add_argument("run", help="the run's folder relative to the plan's, e.g. cls_loss=qfl/seed0")
    parser.add_argument("--device", help="overrides train.device")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    plan_path = Path(args.worker)
    plan = json.loads(plan_path.read_text(encoding="utf-8"))
    run = next((r for r in plan["runs"] if r["dir"] == args.run), None)
    if run is None:
        print(f"error: {args.run!r} is not a run of {plan_path}", file=sys.stderr)
        return 2
    variant = next(v for v in plan["variants"] if v["name"] == run["variant"])
    recipe = load_recipe(variant["recipe"], overrides=[f"train.seed={run['seed']}"])
    logger.info("worker %s: %d torch threads, device %s", args.run, torch.get_num_threads(), args.device or recipe.train.device)
    train_run(recipe, plan_path.parent / run["dir"], device=args.device, progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
