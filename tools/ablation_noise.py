"""Seed-to-seed noise of a finished ``lossreg ablate`` folder (the numbers quoted in docs/results.md).

    python tools/ablation_noise.py runs/ablate-bccd [runs/ablate-synthetic-short ...]

Prints the pooled sample standard deviation of AP over seeds (variants whose every run
scored AP 0 are left out), the standard error of a difference of two n-seed means, and
each variant's ΔAP to the baseline divided by that standard error (|z| < 2: within noise).
Runs of the same seed share the initial weights and the data order, so the per-seed
differences to the baseline are printed too (paired: mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path


def noise(folder: Path) -> list[str]:
    summary = json.loads((folder / "ablation.json").read_text())
    variants = summary["variants"]
    by_seed = {v["name"]: {r["seed"]: 100 * r["metrics"]["AP"] for r in v["runs"] if r["finished"]} for v in variants}
    aps = {name: list(seeds.values()) for name, seeds in by_seed.items()}
    spread = [statistics.variance(a) for a in aps.values() if len(a) > 1 and any(a)]
    pooled = math.sqrt(statistics.mean(spread))
    n = min(len(a) for a in aps.values())
    se = pooled * math.sqrt(2 / n)
    base = statistics.mean(aps[summary["baseline"]])
    lines = [f"{folder}: pooled AP std over seeds {pooled:.2f} points ({len(spread)} variants, n={n}); "
             f"standard error of a difference of two means {se:.2f}"]
    for v in variants:
        if v["is_baseline"] or not aps[v["name"]]:
            continue
        delta = statistics.mean(aps[v["name"]]) - base
        mine, theirs = by_seed[v["name"]], by_seed[summary["baseline"]]
        paired = [mine[s] - theirs[s] for s in mine if s in theirs]
        paired_sd = f" ± {statistics.stdev(paired):.2f}" if len(paired) > 1 else ""
        lines.append(f"  {v['label']:<50} ΔAP {delta:+6.2f}  z {delta / se:+5.1f}  "
                     f"per-seed Δ {', '.join(f'{d:+.1f}' for d in paired)} (mean {statistics.mean(paired):+.2f}{paired_sd})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="output folders of lossreg ablate")
    for folder in parser.parse_args().folders:
        print("\n".join(noise(folder)))


if __name__ == "__main__":
    main()
