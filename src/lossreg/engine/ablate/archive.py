"""The small result files of an ablation's runs, kept where they survive a new machine (e.g. ``docs/results/``).

A run folder holds checkpoints and a model of ~100 MB; what the ablation's tables and
plots need is a few kB: ``recipe.yaml``, ``metrics.json`` and the evaluation folder's
``metrics.json`` and ``score_iou_pairs.npz``. ``lossreg ablate ... --results DIR`` copies
exactly those of every finished run to ``DIR/<variant>/seed<N>/`` (the run folder's own
relative layout), and a later ``lossreg ablate`` with the same ``--results`` on any machine
restores them into missing run folders first, so finished variants are not trained again
and the summary covers them. A restored run whose recipe differs from the planned one is
refused like any other run folder (``statuses``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..runs import RunFolder
from .plan import PAIRS_NAME, AblationPlan, check_same_recipe, eval_dir_name

__all__ = ["ARCHIVE_MAX_BYTES", "archive_run", "archived_files", "restore_run", "sync_archive"]

#: A file larger than this is never archived (the archive is meant to live in a git repository).
ARCHIVE_MAX_BYTES = 2 << 20


def archived_files(run_dir: str | os.PathLike[str], eval_dir: str | None) -> list[Path]:
    """The run folder's result files worth keeping, relative to it (only those that exist)."""
    run = RunFolder(run_dir)
    names = [run.recipe.name, run.metrics.name]
    if eval_dir is not None:
        names += [f"{eval_dir}/metrics.json", f"{eval_dir}/{PAIRS_NAME}"]
    return [Path(n) for n in names if (run.root / n).is_file()]


def _copy(src: Path, dst: Path) -> None:
    if src.stat().st_size > ARCHIVE_MAX_BYTES:
        raise ValueError(f"{src} is {src.stat().st_size} bytes, over the archive's {ARCHIVE_MAX_BYTES} per file")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)  # a reader never sees half a file


def archive_run(run_dir: str | os.PathLike[str], target: str | os.PathLike[str], eval_dir: str | None) -> list[Path]:
    """Copy a finished run's result files into ``target`` (same relative paths); returns what was copied.

    ``metrics.json`` is copied last, so an archive entry with it is complete.
    """
    run = RunFolder(run_dir)
    if not run.is_finished():
        return []
    files = sorted(archived_files(run.root, eval_dir), key=lambda p: p.name == run.metrics.name and p.parent == Path("."))
    for rel in files:
        _copy(run.root / rel, Path(target) / rel)
    return files


def restore_run(source: str | os.PathLike[str], run_dir: str | os.PathLike[str], eval_dir: str | None) -> bool:
    """Copy an archived run into a run folder that has no ``metrics.json``; True when restored."""
    src, run = Path(source), RunFolder(run_dir)
    needed = [src / "metrics.json", src / "recipe.yaml"]
    if eval_dir is not None:
        needed += [src / eval_dir / "metrics.json", src / eval_dir / PAIRS_NAME]
    if run.is_finished() or not all(p.is_file() for p in needed):
        return False
    for path in sorted(needed, key=lambda p: p == src / "metrics.json"):  # metrics.json last: done means complete
        _copy(path, run.root / path.relative_to(src))
    return True


def sync_archive(plan: AblationPlan, results: str | os.PathLike[str], direction: str) -> list[str]:
    """``direction="restore"``: fill missing run folders from ``results``; ``"archive"``: copy finished runs there.

    Returns the run folders (``variant/seedN``) that were restored or archived.
    """
    if direction not in ("restore", "archive"):
        raise ValueError(f"direction must be 'restore' or 'archive', got {direction!r}")
    done = []
    for run in plan.runs:
        eval_dir = eval_dir_name(plan.recipe_of(run))
        entry, run_dir = Path(results) / run.dir, plan.run_dir(run)
        if direction == "restore":
            check_same_recipe(entry, plan.recipe_of(run))  # an archive of another recipe is refused, not restored
        if direction == "restore" and restore_run(entry, run_dir, eval_dir):
            done.append(run.dir)
        elif direction == "archive" and archive_run(run_dir, entry, eval_dir):
            done.append(run.dir)
    return done
