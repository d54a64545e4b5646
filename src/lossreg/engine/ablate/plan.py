"""The plan of an ablation: its variants and seeds with validated recipes, ``ablation_plan.json``, and
the status of each run folder."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._io import atomic_write_text
from ...recipe import Recipe, RecipeError, load_recipe
from ..runs import RunFolder
from .swaps import (
    AblationError,
    Swap,
    Variant,
    _base_display,
    _variant,
    joined_keys,
    parse_swaps,
    short_keys,
    split_values,
)

PLAN_NAME = "ablation_plan.json"
PAIRS_NAME = "score_iou_pairs.npz"
BASELINE = "baseline"


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
        """Every run, seed by seed: an ablation stopped half-way has each variant at the same seed count."""
        return [Run(v.name, s, f"{v.name}/seed{s}") for s in self.seeds for v in self.variants]

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
    """The value at ``dotted`` (None if absent); a list of each field's for a joined key ``a.b+c.d``."""
    if "+" in dotted:
        return [_get_path(data, part) for part in joined_keys(dotted)]
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


def write_plan(plan: AblationPlan) -> Path:
    """Write ``ablation_plan.json`` into the output folder."""
    return atomic_write_text(plan.output_dir / PLAN_NAME, json.dumps(plan.to_dict(), indent=2, default=str) + "\n")


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


# --------------------------------------------------------------------------- run folders


def eval_dir_name(recipe: Recipe) -> str | None:
    """``eval-<split>``, the folder ``lossreg eval RUN`` writes for the recipe's validation split (None without one)."""
    from ..eval_folder import _safe_name

    val = recipe.data.val
    if val is None:
        return None
    return "eval-" + _safe_name(str(val.split or dict(val.params).get("split") or "val"))


def _comparable(recipe: Mapping[str, Any], planned: Recipe) -> dict[str, Any]:
    from ..trainer import _flatten

    flat = _flatten(recipe)
    flat.pop("train.device", None)  # --device may differ between invocations
    if planned.model.num_classes is None:
        flat.pop("model.num_classes", None)  # the trainer fills it in from the dataset
    return flat


def check_same_recipe(run_dir: Path, planned: Recipe) -> None:
    path = RunFolder(run_dir).recipe
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
    run = RunFolder(run_dir)
    if run.is_finished():
        ev = run.root / eval_dir if eval_dir is not None else None
        if ev is None or ((ev / "metrics.json").is_file() and (ev / PAIRS_NAME).is_file()):
            return "done"
        return "evaluate"
    return "resume" if run.has_checkpoint() else "new"


def statuses(plan: AblationPlan) -> dict[str, str]:
    """:func:`run_status` of every run; refuses run folders trained with another recipe."""
    out = {}
    for run in plan.runs:
        run_dir = plan.run_dir(run)
        recipe = plan.recipe_of(run)
        check_same_recipe(run_dir, recipe)
        out[run.dir] = run_status(run_dir, eval_dir_name(recipe))
    return out
