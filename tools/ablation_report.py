#!/usr/bin/env python
"""docs/results.md's ablation tables, in the papers' layout, from the archives in docs/results/ (issue 21).

    python tools/ablation_report.py            # rewrite the generated block of docs/results.md and its plots
    python tools/ablation_report.py --check    # exit 1 if the block is stale (a test runs this)

Each table of ``docs/protocol-ablations.md`` has an archive folder written by ``lossreg
ablate --results`` (``<variant>/seed<N>/`` with ``recipe.yaml``, ``metrics.json`` and an
``eval-<split>/metrics.json``). For every row of :data:`TABLES` this reads the evaluation AP of
each archived seed and prints AP / AP50 / AP75 (mean ± sd over seeds), the mean paired
difference to the baseline over the seeds both have, with its 95% Student-t interval, the
verdict (helped / hurt / no effect resolvable; "pending" until the row has all its paired
seeds, as the protocol says), and what the
paper claims for the same swap, with its table. Rows whose runs are not archived yet say so.
The block between ``<!-- ablation_report:start -->`` and ``<!-- ablation_report:end -->`` is
replaced; one forest plot per table (``docs/images/ablation2_<table>.png``: paired ΔAP with its
interval, the paper's claimed Δ as a hollow marker) is redrawn unless ``--no-plots``.

The papers' claims are on COCO (HCRAL: val2017, AP) or PASCAL VOC 2007 (ALWA: test, mAP), with
R50 detectors trained 12+ epochs: the comparison is of direction and rough size, not of values.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossreg.engine.ablate.summary import format_paired, paired_difference, verdict

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"
IMAGES = ROOT / "docs" / "images"
START, END = "<!-- ablation_report:start -->", "<!-- ablation_report:end -->"
_HASH = re.compile(r"-[0-9a-f]{6}$")
_KEYS = ("AP", "AP50", "AP75")


@dataclass(frozen=True)
class Row:
    """One line of a table: its label, the archived variant folder (name without the hash) and the paper's claim."""

    group: str
    label: str
    variant: str
    claim: str = "not in the papers"
    claim_delta: float | None = None  # the claimed difference in AP points, for the plot


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    archive: str  # relative to the repository root
    runs_per_variant: int
    rows: tuple[Row, ...] = field(default_factory=tuple)


_T8, _T9, _T5, _T6 = "HCRAL Table 8", "HCRAL Table 9", "HCRAL Table 5", "HCRAL Table 6"
_A2, _A4 = "ALWA Table 2", "ALWA Table 4"


def _atss_rows(interval: int) -> tuple[Row, ...]:
    """Table 1 and 2's rows: the ATSS base with each swap; ``interval`` is ALWA's / DWA's window C."""
    return (
        Row("baseline", "focal + GIoU, ATSS, static weights", "baseline", f"ATSS R50 40.0 AP ({_T8})"),
        Row("HCRAL together", "HCRA-C + HCRA-R + EATSS",
            "cls_loss+reg_loss+assigner=hcra_c-hcra_r-loss_weight-2.0-eatss",
            f"+0.9 on FCOS+ATSS with auxiliary modules, 41.2 -> 42.1 ({_T5})", 0.9),
        Row("classification loss", "HCRA-C", "cls_loss=hcra_c", f"+0.4, 40.0 -> 40.4 ({_T8})", 0.4),
        Row("classification loss", "QFL", "cls_loss=qfl", f"+0.2 ({_T8})", 0.2),
        Row("classification loss", "VFL", "cls_loss=vfl", f"-0.2 ({_T8})", -0.2),
        Row("classification loss", "DR", "cls_loss=dr", f"+0.9 on RetinaNet; no ATSS figure ({_T8})"),
        Row("regression loss", "HCRA-R (alpha -0.1, gamma 1.2)", "reg_loss=hcra_r-loss_weight-2.0",
            f"+0.2, 40.0 -> 40.2 ({_T9})", 0.2),
        Row("assigner", "EATSS extra 1", "assigner=eatss-extra-1", f"not reported ({_T6} starts at 2)"),
        Row("assigner", "EATSS extra 2", "assigner=eatss-extra-2", f"-0.4 against extra 3, with HCRA-C + HCRA-R ({_T6})"),
        Row("assigner", "EATSS extra 3", "assigner=eatss-extra-3", f"+0.1 against ATSS, focal + GIoU ({_T5})", 0.1),
        Row("assigner", "EATSS extra 4", "assigner=eatss-extra-4", f"-0.2 against extra 3, with HCRA-C + HCRA-R ({_T6})"),
        Row("assigner", "EATSS extra 3, ranked by IoU", "assigner=eatss-extra-3-rank_by-iou"),
        Row("balancer", "ALWA-1", f"balancer=alwa1-interval-{interval}",
            f"+0.82 mAP, RetinaNet R50 + L1 on VOC ({_A2}, {_A4})", 0.82),
        Row("balancer", "ALWA-2", f"balancer=alwa2-interval-{interval}",
            f"+0.96 mAP, RetinaNet R50 + L1 on VOC ({_A2})", 0.96),
        Row("balancer", "ALWA-2, raw statistics", f"balancer=alwa2-interval-{interval}-statistics-raw"),
        Row("balancer", "DWA", f"balancer=dwa-interval-{interval}", f"-2.70 mAP, RetinaNet on VOC ({_A4})", -2.70),
        Row("balancer", "DTP", "balancer=dtp", f"-0.17 mAP, RetinaNet on VOC ({_A4})", -0.17),
        Row("balancer", "guided loss", "balancer=guided", f"-6.44 mAP, RetinaNet on VOC ({_A4})", -6.44),
        Row("balancer", "uncertainty weighting", "balancer=uncertainty"),
    )


TABLES: tuple[Table, ...] = (
    Table("synthetic", "Table 1: ATSS R18 on the synthetic set (scored on `test`)",
          "docs/results/ablate2-synthetic", 5, _atss_rows(50)),
    Table("retinanet", "Table 3a: RetinaNet on the synthetic set, HCRAL's RetinaNet setting",
          "docs/results/ablate2-retinanet", 5, (
              Row("baseline", "focal + L1, max-IoU", "baseline", f"RetinaNet R50 36.5 AP ({_T8}, {_T9})"),
              Row("HCRAL", "HCRA-C + HCRA-R (weight 2.5)", "cls_loss+reg_loss=hcra_c-hcra_r-loss_weight-2.5",
                  f"+1.1 for HCRA-C alone ({_T8}), +0.9 for HCRA-R alone ({_T9}); together not reported"),
          )),
    Table("fcos", "Table 3b: FCOS+ATSS on the synthetic set, HCRAL's FCOS+ATSS setting",
          "docs/results/ablate2-fcos", 5, (
              Row("baseline", "focal + GIoU, ATSS", "baseline", f"FCOS+ATSS R50 41.2 AP, auxiliary modules ({_T5})"),
              Row("HCRAL", "HCRA-C + HCRA-R (gamma 1.5) + EATSS",
                  "cls_loss+reg_loss+assigner=hcra_c-hcra_r-gamma-1.5-loss_weight-2.0-eatss",
                  f"+0.9, 41.2 -> 42.1 ({_T5})", 0.9),
          )),
    Table("bccd", "Table 2: ATSS R18 fine-tuned on BCCD from the quick-start weights (scored on `val`)",
          "docs/results/ablate2-bccd", 5, _atss_rows(26)),
)


def read_archive(folder: Path) -> dict[str, dict[str, Any]]:
    """``{variant name without its hash: {"runs": [{"seed", "finished", "metrics"}]}}`` of an archive folder."""
    out: dict[str, dict[str, Any]] = {}
    if not folder.is_dir():
        return out
    for variant in sorted(p for p in folder.iterdir() if p.is_dir()):
        runs = []
        for seed_dir in sorted(variant.glob("seed*")):
            evals = sorted(seed_dir.glob("eval-*/metrics.json"))
            if not evals or not seed_dir.name[4:].isdigit():
                continue
            metrics = json.loads(evals[0].read_text())
            runs.append({"seed": int(seed_dir.name[4:]), "finished": True,
                         "metrics": {k: metrics.get(k) for k in _KEYS}})
        out[_HASH.sub("", variant.name)] = {"runs": runs}
    return out


def _mean_sd(runs: Sequence[dict[str, Any]], key: str) -> str:
    values = [100 * r["metrics"][key] for r in runs if r["metrics"][key] is not None]
    if not values:
        return "–"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def table_rows(table: Table, archive: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row: its cells and the paired difference (None for the baseline and rows not run)."""
    baseline = archive.get("baseline")
    out = []
    for row in table.rows:
        variant = archive.get(row.variant)
        runs = variant["runs"] if variant else []
        paired = None
        if variant and baseline and row.variant != "baseline":
            paired = paired_difference(variant, baseline)
        out.append({"row": row, "seeds": sorted(r["seed"] for r in runs), "runs": runs, "paired": paired})
    return out


def render_table(table: Table, archive: dict[str, dict[str, Any]]) -> str:
    rows = table_rows(table, archive)
    done = sum(len(r["runs"]) for r in rows)
    total = table.runs_per_variant * len(table.rows)
    lines = [f"### {table.title}", "",
             f"`{table.archive}`: {done} of {total} runs archived."
             + (f" A verdict is drawn once a row has its {table.runs_per_variant} paired seeds (the protocol)."
                if done < total else ""), "",
             "| group | variant | seeds | AP | AP50 | AP75 | paired ΔAP (95% CI) | verdict | the paper's claim |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        row = r["row"]
        if not r["runs"]:
            cells = ["not run yet", "", "", "", "", ""]
        else:
            seeds = ",".join(str(s) for s in r["seeds"])
            paired = r["paired"]
            n = len(paired["seeds"]) if paired else 0
            cells = [seeds, *(_mean_sd(r["runs"], k) for k in _KEYS),
                     "–" if row.variant == "baseline" else format_paired(paired),
                     "–" if row.variant == "baseline"
                     else verdict(paired) if n >= table.runs_per_variant
                     else f"pending ({n} of {table.runs_per_variant} paired seeds)"]
        lines.append("| " + " | ".join([row.group, row.label, *cells, row.claim]) + " |")
    same = identical_rows(rows)
    if same:
        lines += ["", "Identical to the last digit, seed for seed (the swap changed nothing in these runs): "
                  + "; ".join(f"{a} = {b} (seeds {seeds})" for a, b, seeds in same) + "."]
    return "\n".join(lines)


def identical_rows(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """``(label, earlier label, seeds)`` of rows whose every archived AP equals an earlier row's of the same seed."""
    out = []
    seen: list[tuple[str, dict[int, float]]] = []
    for r in rows:
        aps = {run["seed"]: run["metrics"]["AP"] for run in r["runs"]}
        if not aps:
            continue
        match = next((label for label, other in seen if all(other.get(k) == v for k, v in aps.items())), None)
        if match is not None:
            out.append((r["row"].label, match, ",".join(str(s) for s in sorted(aps))))
        else:
            seen.append((r["row"].label, aps))
    return out


def render(root: Path = ROOT) -> str:
    """The generated block's text (without the markers)."""
    parts = ["AP in % of COCO-style AP on this repository's data; mean ± sd over the archived seeds; "
             "paired ΔAP: the variant minus the baseline of the same seed, mean and 95% t-interval. "
             "Regenerated by `python tools/ablation_report.py` from the archives."]
    for table in TABLES:
        parts.append(render_table(table, read_archive(root / table.archive)))
    return "\n\n".join(parts) + "\n"


def plot(table: Table, archive: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """Forest plot of the paired differences against the papers' claims; None before a row has two paired seeds."""
    rows = [r for r in table_rows(table, archive) if r["paired"] and r["paired"]["ci95"] is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.4 * len(rows) + 1.4))
    for y, r in enumerate(reversed(rows)):
        paired = r["paired"]
        mean, half = 100 * paired["mean"], paired["ci95"]
        ax.errorbar(mean, y, xerr=[[100 * half], [100 * half]], fmt="o", color="C0", capsize=3, label="lossreg (95% CI)" if y == 0 else None)
        if r["row"].claim_delta is not None:
            claimed = "paper's claim (HCRAL: COCO AP, ALWA: VOC mAP)"
            first = claimed not in ax.get_legend_handles_labels()[1]
            ax.plot(r["row"].claim_delta, y, "o", mfc="none", color="C3", label=claimed if first else None)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(range(len(rows)), [r["row"].label for r in reversed(rows)])
    ax.set_xlabel("AP difference to the baseline (points)")
    fig.suptitle(table.title, fontsize=9)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def update(results: Path = RESULTS, check: bool = False, plots: bool = True, root: Path = ROOT) -> bool:
    """Rewrite (or, with ``check``, compare) the block; True when it was current."""
    text = results.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{results}: no {START} ... {END} block to fill; add the two markers where the tables go")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render(root)}{END}{tail}"
    current = new == text
    if not check:
        if not current:
            results.write_text(new, encoding="utf-8")
        if plots:
            for table in TABLES:
                plot(table, read_archive(root / table.archive), IMAGES / f"ablation2_{table.key}.png")
    return current


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/results.md's block is stale")
    parser.add_argument("--no-plots", action="store_true", help="do not redraw the forest plots")
    parser.add_argument("--results", type=Path, default=RESULTS, help="[docs/results.md]")
    args = parser.parse_args(argv)
    current = update(args.results, check=args.check, plots=not args.no_plots)
    if args.check and not current:
        print(f"{args.results}'s ablation tables are stale: run `python tools/ablation_report.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
