"""Training plots from a run's ``metrics.jsonl``: task losses, balancer weights, learning rate.

``plot_metrics(run_dir / "metrics.jsonl", run_dir / "plots")`` writes ``losses.png``,
``balancer_weights.png``, ``lr.png`` and, when evaluations were logged, ``val_ap.png``
(matplotlib ``Figure`` objects rendered by Agg, without pyplot: no display needed and
no global backend changed; each file written atomically).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes

__all__ = ["plot_metrics", "read_metrics"]

logger = logging.getLogger(__name__)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a torn last line, from a killed run, is skipped)."""
    records = []
    p = Path(path)
    if not p.is_file():
        return records
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.debug("skipping a malformed line of %s", p)
    return records


def _series(records: list[dict[str, Any]], field: str) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for rec in records:
        for key, value in (rec.get(field) or {}).items():
            if value is None:
                continue
            xs, ys = out[key]
            xs.append(int(rec["iter"]))
            ys.append(float(value))
    return dict(out)


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _line_plot(series: dict[str, tuple[list[int], list[float]]], title: str, ylabel: str, path: Path, log: bool = False) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for name, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, label=name, linewidth=1)
    ax.set_title(title)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    if log and all(y > 0 for _, ys in series.values() for y in ys):
        ax.set_yscale("log")
    if series:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def plot_metrics(metrics_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw the plots of ``metrics_path`` into ``out_dir``; returns the files written."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    losses = _series(train, "losses")
    if train:
        losses["total"] = ([int(r["iter"]) for r in train], [float(r["loss"]) for r in train])
    _line_plot(losses, "training losses (as weighted by the balancer)", "loss", out / "losses.png", log=True)
    written.append(out / "losses.png")
    _line_plot(_series(train, "weights"), "balancer weights per task", "weight", out / "balancer_weights.png")
    written.append(out / "balancer_weights.png")
    lr = {"lr": ([int(r["iter"]) for r in train], [float(r["lr"]) for r in train])} if train else {}
    _line_plot(lr, "learning rate", "lr", out / "lr.png")
    written.append(out / "lr.png")
    if evals:
        ap = {
            key: ([int(r["iter"]) for r in evals if r.get(key) is not None], [float(r[key]) for r in evals if r.get(key) is not None])
            for key in ("AP", "AP50", "AP75")
        }
        _line_plot(ap, "validation AP", "AP", out / "val_ap.png")
        written.append(out / "val_ap.png")
    return written
