"""The summary of an ablation folder: ``ablation.md`` (the table), ``ablation.json`` and the two figures."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import atomic_write_text
from ..evaluate import METRIC_KEYS
from ..runs import RunFolder
from .plan import BASELINE, PAIRS_NAME, PLAN_NAME
from .stats import mean_interval
from .swaps import AblationError, _base_display, display_value

#: detections scoring below this are left out of the score-IoU correlation (``lossreg eval``'s default)
SCORE_THR = 0.05


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
    """The Markdown table(s) of :func:`summarize`'s result: one row per variant, the papers' columns.

    AP columns are COCO's in %, ``mean ± std`` over the seeds (sample standard deviation;
    a single seed shows the mean alone); ``ΔAP`` is the difference of the mean AP to the
    baseline row's in points; ``score-IoU r`` the Pearson correlation (mean ± std).
    A one-at-a-time ablation of several keys gets one table per key, as the papers print
    them: the baseline row, then the variants that change that key.
    """
    swaps = summary["swaps"]
    variants = summary["variants"]
    if summary["mode"] != "one-at-a-time" or len(swaps) < 2:
        return _table(swaps, variants)
    base = [v for v in variants if v["is_baseline"]]
    return "\n\n".join(
        _table([s], base + [v for v in variants if not v["is_baseline"] and s["key"] in _changed(v)])
        for s in swaps
    )


def _changed(variant: Mapping[str, Any]) -> set[str]:
    return {key for key, _value in variant["settings"]}


def _table(swaps: Sequence[Mapping[str, Any]], variants: Sequence[Mapping[str, Any]]) -> str:
    header = [s["label"] for s in swaps] + list(METRIC_KEYS) + ["ΔAP", "paired ΔAP (95% CI)", "verdict",
                                                               "score-IoU r", "time/run", "runs"]
    align = ["---"] * len(swaps) + ["---:"] * (len(header) - len(swaps))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for v in variants:
        cells = [_cell(v["values"][s["key"]]) for s in swaps]
        cells += [_pct(v["stats"][k]) for k in METRIC_KEYS]
        if v["is_baseline"]:
            cells += ["baseline", "", ""]
        else:
            cells.append("–" if v["delta_AP"] is None else f"{100 * v['delta_AP']:+.1f}")
            cells.append(format_paired(v["paired_AP"]))
            cells.append(verdict(v["paired_AP"]))
        cells.append(_corr(v["stats"]["score_iou_r"]))
        cells.append(_duration(v["stats"]["train_seconds"]["mean"]))
        cells.append(f"{v['finished']}/{len(v['runs'])}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_paired(paired: Mapping[str, Any] | None) -> str:
    if not paired:
        return "–"
    mean, half = 100 * paired["mean"], paired["ci95"]
    if half is None:
        return f"{mean:+.1f} (1 seed)"
    half *= 100
    return f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]"


def verdict(paired: Mapping[str, Any] | None) -> str:
    """``helped`` / ``hurt`` when the 95% interval of the paired difference excludes 0, else ``no effect
    resolvable``; ``–`` without an interval (fewer than two paired seeds)."""
    if not paired or paired["ci95"] is None:
        return "–"
    lo, hi = paired["mean"] - paired["ci95"], paired["mean"] + paired["ci95"]
    return "helped" if lo > 0 else "hurt" if hi < 0 else "no effect resolvable"


def paired_difference(variant: Mapping[str, Any], baseline: Mapping[str, Any], key: str = "AP") -> dict[str, Any] | None:
    """``variant``'s ``key`` minus ``baseline``'s, seed by seed over the seeds both finished: ``{"seeds",
    "diffs", "mean", "ci95"}`` (``ci95``: half-width of the 95% t-interval, None for one seed), or None."""
    base = {r["seed"]: r["metrics"][key] for r in baseline["runs"] if r["finished"] and r["metrics"][key] is not None}
    pairs = [(r["seed"], r["metrics"][key] - base[r["seed"]]) for r in variant["runs"]
             if r["finished"] and r["metrics"][key] is not None and r["seed"] in base]
    if not pairs:
        return None
    mean, half = mean_interval([d for _, d in pairs])
    return {"seeds": [s for s, _ in pairs], "diffs": [d for _, d in pairs], "mean": mean, "ci95": half}


def _load_pairs(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path) as data:
            return np.asarray(data["scores"], dtype=np.float64), np.asarray(data["ious"], dtype=np.float64)
    except (OSError, KeyError, ValueError):
        return None


def summarize(output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Rebuild the summary of an ablation folder from its plan and run folders.

    Writes ``ablation.md``, ``ablation.json``, ``ablation_ap.png`` and ``score_iou_grid.png``
    (see :mod:`lossreg.engine.ablate`) and returns the summary: ``variants`` (per variant its
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
            metrics = _read_json(RunFolder(run_dir).metrics)
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
        v["paired_AP"] = None if v["is_baseline"] or base is None else paired_difference(v, base)
        v["verdict"] = None if v["is_baseline"] else verdict(v["paired_AP"])
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
        "baseline's, in points. paired ΔAP: the mean over seeds of (variant AP - baseline AP of the same "
        "seed: same initial weights and data order), with its two-sided 95% Student-t interval; verdict: "
        "helped or hurt when that interval excludes 0, else no effect resolvable (no correction for the "
        "number of variants). score-IoU r: Pearson correlation of each detection's score with its IoU "
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


def _bar_label(v: Mapping[str, Any], swaps: Sequence[Mapping[str, Any]], one_at_a_time: bool) -> str:
    if v["name"] == BASELINE:
        return BASELINE
    if one_at_a_time and len(swaps) > 1:  # the one setting it changes, named
        return "\n".join(f"{s['label']}={v['values'][s['key']]}" for s in swaps if s["key"] in _changed(v))
    return "\n".join(v["values"][s["key"]] for s in swaps)


def _plot_ap(summary: Mapping[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    from ..plots import _save

    variants = summary["variants"]
    labels = [_bar_label(v, summary["swaps"], summary["mode"] == "one-at-a-time") for v in variants]
    means = [v["stats"]["AP"]["mean"] for v in variants]
    stds = [v["stats"]["AP"]["std"] or 0.0 for v in variants]
    heights = [100 * m if m is not None else 0.0 for m in means]
    keys = [s["key"] for s in summary["swaps"]]
    group_colors = ["tab:blue", "tab:green", "tab:purple", "tab:gray", "tab:cyan", "tab:olive", "tab:brown"]

    def color(v: Mapping[str, Any]) -> str:  # one colour per swapped key in a one-at-a-time ablation
        if v["is_baseline"]:
            return "tab:orange"
        first = next((i for i, k in enumerate(keys) if k in _changed(v)), 0)
        return group_colors[first % len(group_colors)] if summary["mode"] == "one-at-a-time" else "tab:blue"

    colors = [color(v) for v in variants]
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

    from ..plots import HIST2D_MIN_POINTS, _save

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
