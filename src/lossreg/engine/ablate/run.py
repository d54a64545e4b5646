"""Running an ablation: train and evaluate each run in process, as ``--jobs`` subprocesses or under
``torchrun``, then summarise."""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import atomic_write_bytes
from ...recipe import Recipe
from .. import distributed as dist_utils
from ..runs import RunFolder
from ..trainer import Trainer, resolve_device
from .archive import archive_run, sync_archive
from .plan import PAIRS_NAME, PLAN_NAME, AblationPlan, Run, eval_dir_name, run_status, statuses, write_plan
from .summary import SCORE_THR, summarize
from .swaps import AblationError

logger = logging.getLogger(__name__)

LOG_NAME = "ablate.log"


def evaluate_run(run_dir: str | os.PathLike[str], device: str | None = None, score_thr: float = SCORE_THR) -> dict[str, Any]:
    """Evaluate a finished run's ``model/`` on its recipe's validation split as ``lossreg eval RUN`` does.

    Writes ``<run>/eval-<split>/`` (``metrics.json`` with ``score_iou_correlation``,
    ``detections.json``, ``pr_curve.png``, ``score_iou.png``) and ``score_iou_pairs.npz``
    there (``scores`` and ``ious``, float32, for :func:`summarize`'s side-by-side figure).
    Returns the metrics.
    """
    from ...data import DetectionDataset, build_transforms
    from ..consistency import score_iou_pairs
    from ..eval_folder import evaluate_to_folder, match_labels, model_image_size, open_eval_data
    from ..runs import load_model

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
    plan: AblationPlan, todo: list[Run], jobs: int, device: str | None, say: Callable[[str], None],
    on_finished: Callable[[Run], None] | None = None,
) -> list[str]:
    """Train ``todo`` as ``jobs`` subprocesses at a time; ``on_finished(run)`` after each that succeeded.
    Returns the runs that failed."""
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
                    if on_finished is not None:
                        on_finished(run)
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
        ap = json.loads(RunFolder(run_dir).metrics.read_text(encoding="utf-8")).get("AP")
    except (OSError, ValueError):
        return ""
    return f": AP {100 * ap:.1f}" if isinstance(ap, (int, float)) else ""


def run_ablation(
    plan: AblationPlan,
    jobs: int = 1,
    device: str | None = None,
    progress: bool | None = False,
    say: Callable[[str], None] | None = None,
    results: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train and evaluate every run of ``plan`` that is not finished, then :func:`summarize`.

    ``results`` (``--results DIR``): an archive of the runs' small result files
    (:mod:`.archive`): runs archived there are restored first and not trained again, and
    every finished run is archived there (after each run, and all at the end).

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
    if main and results is not None:
        restored = sync_archive(plan, results, "restore")
        if restored:
            say(f"restored {len(restored)} finished runs from {results}")
    status = statuses(plan) if main else None
    status = dist_utils.broadcast_object(status)
    if main:
        write_plan(plan)
    todo = [r for r in plan.runs if status[r.dir] != "done"]
    skipped = len(plan.runs) - len(todo)
    if main:
        say(f"{len(plan.runs)} runs in {plan.output_dir}: {skipped} finished already, {len(todo)} to do")
    failed: list[str] = []
    def archive(run: Run) -> None:  # a long ablation stopped early keeps what it finished
        if results is not None:
            archive_run(plan.run_dir(run), Path(results) / run.dir, eval_dir_name(plan.recipe_of(run)))

    if jobs > 1 and todo:
        failed = _run_parallel(plan, todo, jobs, device, say, on_finished=archive)
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
                archive(run)
    if not main:
        return None  # type: ignore[return-value]
    if results is not None:
        sync_archive(plan, results, "archive")
    summary = summarize(plan.output_dir)
    summary["failed"] = failed
    return summary
