"""Plots: training curves from a run's ``metrics.jsonl``, and ``lossreg eval``'s two figures.

``plot_metrics(run_dir / "metrics.jsonl", run_dir / "plots")`` writes ``losses.png``,
``balancer_weights.png``, ``lr.png`` and, when evaluations were logged, ``val_ap.png``.
:func:`plot_pr_curves` draws COCOeval's precision-recall curves (``pr_curve.png``) and
:func:`plot_score_iou` the score-against-IoU figure (``score_iou.png``, the HCRAL paper's
figure 3a; see :mod:`lossreg.engine.consistency`).

Everything is drawn on matplotlib ``Figure`` objects rendered by Agg, without pyplot:
no display needed and no global backend changed; each file is written atomically.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_bytes

__all__ = ["epoch_means", "plot_metrics", "plot_pr_curves", "plot_score_iou", "read_metrics"]

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


def epoch_means(records: list[dict[str, Any]], field: str = "weights", digits: int = 6) -> dict[str, list[float | None]]:
    """Per key of the training records' ``field`` (e.g. each task's balancer weight): its mean over the
    logged iterations of each epoch, epochs 0, 1, ... (None for an epoch without a logged value)."""
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    epochs = 0
    for rec in records:
        if rec.get("type") != "train":
            continue
        epochs = max(epochs, int(rec["epoch"]) + 1)
        for key, value in (rec.get(field) or {}).items():
            if value is not None:
                sums[key][int(rec["epoch"])].append(float(value))
    return {key: [round(sum(v) / len(v), digits) if (v := per_epoch.get(e)) else None for e in range(epochs)]
            for key, per_epoch in sums.items()}


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


#: Classes drawn with their own legend entry in ``pr_curve.png``; more share one grey style.
_MAX_LEGEND_CLASSES = 20


def plot_pr_curves(
    precision: np.ndarray,
    recall_thresholds: Sequence[float],
    iou_thresholds: Sequence[float],
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    at_iou: Sequence[float] = (0.5, 0.75),
) -> Path:
    """Precision-recall curves at each IoU of ``at_iou``, per class and over all classes.

    Args:
        precision: COCOeval's ``eval["precision"]`` ``[T, R, K, A, M]`` (IoU thresholds,
            recall thresholds, classes, area ranges, max detections; ``-1`` where a class
            has no ground truth); the "all" area range and the largest max-detections
            are drawn, exactly the numbers COCO's AP averages.
        recall_thresholds, iou_thresholds: ``params.recThrs`` and ``params.iouThrs``.
        class_names: one name per ``K`` entry, in ``params.catIds`` order.
        path: the PNG to write.
        at_iou: IoU thresholds to draw, one panel each (must be among ``iou_thresholds``).

    The "all classes" curve is, at each recall, the mean precision of the classes with
    ground truth; its mean over recall is COCO's AP50 (AP75) for that panel. Returns ``path``.
    """
    from matplotlib.figure import Figure

    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall_thresholds, dtype=np.float64)
    ious = np.asarray(iou_thresholds, dtype=np.float64)
    if precision.ndim != 5 or precision.shape[2] != len(class_names):
        raise ValueError(f"precision must be [T, R, K, A, M] with K = {len(class_names)} classes, got {precision.shape}")
    fig = Figure(figsize=(6 * len(at_iou), 5))
    axes = np.atleast_1d(fig.subplots(1, len(at_iou), squeeze=False)[0])
    many = len(class_names) > _MAX_LEGEND_CLASSES
    for ax, thr in zip(axes, at_iou):
        hits = np.flatnonzero(np.isclose(ious, thr))
        if not len(hits):
            raise ValueError(f"IoU {thr} is not among COCOeval's thresholds {ious.tolist()}")
        p = precision[hits[0], :, :, 0, -1]  # [R, K]
        valid = p > -1
        for k, name in enumerate(class_names):
            if not valid[:, k].any():
                continue  # no ground truth of this class: no curve
            curve = np.where(valid[:, k], p[:, k], np.nan)
            if many:
                ax.plot(recall, curve, color="0.7", linewidth=0.7)
            else:
                ax.plot(recall, curve, linewidth=1.2, label=f"{name} (AP {np.nanmean(curve):.3f})")
        counted = valid.sum(axis=1)
        if counted.any():
            mean = np.where(counted > 0, np.where(valid, p, 0.0).sum(axis=1) / np.maximum(counted, 1), np.nan)
            ax.plot(recall, mean, color="black", linewidth=2.2, label=f"all classes (AP {np.nanmean(mean):.3f})")
            ax.legend(loc="lower left", fontsize="small")
        else:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"precision-recall at IoU {thr:g}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)  # curves at precision 0 stay visible
        ax.grid(True, alpha=0.3)
    out = Path(path)
    _save(fig, out)
    return out


#: Above this many points ``score_iou.png`` is a 2-D histogram instead of a scatter plot.
HIST2D_MIN_POINTS = 3000


def plot_score_iou(
    scores: Sequence[float] | np.ndarray,
    ious: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
    stats: dict[str, Any] | None = None,
    score_thr: float | None = None,
) -> Path:
    """Classification score against IoU with the matching ground truth, one point per detection.

    The HCRAL paper's figure 3a: a detector whose scores agree with its localisation
    puts its points along the dashed diagonal. A scatter plot, or a 2-D histogram
    (log colour scale) above :data:`HIST2D_MIN_POINTS` points; the title gives the
    Pearson and Spearman correlations of ``stats``
    (:func:`~lossreg.engine.consistency.score_iou_correlation`, computed when ``None``).
    Returns ``path``.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    from .consistency import score_iou_correlation

    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    u = np.asarray(ious, dtype=np.float64).reshape(-1)
    stats = stats if stats is not None else score_iou_correlation(s, u)
    fig = Figure(figsize=(6, 5.5))
    ax = fig.subplots()
    if len(s) > HIST2D_MIN_POINTS:
        *_, image = ax.hist2d(u, s, bins=50, range=[[0, 1], [0, 1]], norm=LogNorm(), cmap="viridis")
        fig.colorbar(image, ax=ax, label="detections")
    elif len(s):
        ax.scatter(u, s, s=8, alpha=0.5, edgecolors="none")
    else:
        where = f" with score >= {score_thr:g}" if score_thr is not None else ""
        ax.text(0.5, 0.5, f"no detections{where}", ha="center", va="center", transform=ax.transAxes)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.4", linewidth=1)

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    ax.set_title(
        f"score vs IoU: Pearson r = {fmt(stats.get('pearson'))}, "
        f"Spearman \u03c1 = {fmt(stats.get('spearman'))} (n = {stats.get('num_pairs', len(s))})",
        fontsize="medium",
    )
    ax.set_xlabel("IoU with the best ground truth of the same class")
    ax.set_ylabel("classification score" + (f" (>= {score_thr:g})" if score_thr is not None else ""))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    out = Path(path)
    _save(fig, out)
    return out
