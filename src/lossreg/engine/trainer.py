"""The training loop: one recipe in, a run folder with checkpoints, metrics and plots out.

>>> trainer = Trainer("quickstart", output_dir="runs/quick")      # doctest: +SKIP
>>> metrics = trainer.train()                                      # doctest: +SKIP
>>> metrics["AP"], metrics["train_seconds"]                        # doctest: +SKIP

What one iteration does: the detector's training forward returns its task losses
already weighted by the recipe's balancer (every training-mode call is one balancer
iteration; a balancer's own regulariser is the ``loss_balancer`` entry), and their sum
``sum(loss_dict.values())``, the total ``loss``, is back-propagated (through a
``GradScaler`` under CUDA fp16 autocast), gradients are clipped to ``grad_clip``
(global L2 norm) if set, the optimizer steps over *all* the model's parameters
(learnable balancer parameters such as ``uncertainty``'s log-variances included; no weight
decay on them, on norm layers, biases and the heads' per-level scales:
:func:`~.schedule.param_groups`), the per-iteration ``LambdaLR`` schedule (:mod:`.schedule`) steps, and
the optional EMA copy of the weights is updated. Each task's loss as weighted
(``losses``) and before weighting (``raw_losses``), the balancer's weights
(``weights``: ``last_loss_weights`` of the head, or of a two-stage detector), the total
``loss``, the learning rate ``lr`` and, with clipping, ``grad_norm`` are appended to
``metrics.jsonl`` every iteration (averaged over the processes under DDP).

The run folder (rank 0 writes it; see :mod:`.distributed`)::

    recipe.yaml             the resolved recipe (loadable; a comment header gives the seed
                            and the versions of lossreg, torch, torchvision and timm)
    metrics.jsonl           one JSON record per iteration ("type": "train") and evaluation ("eval")
    checkpoints/last.*      last.safetensors + last.state.pt, rewritten at the end of each epoch
    checkpoints/epoch_NNNN.*  every ``train.checkpoint_interval`` epochs; only the newest
                            ``train.keep_last`` are kept (hard links of ``last``: no extra space
                            while they are the same)
    checkpoints/best.*      with ``train.best_metric``: the checkpoint of the best evaluation
    plots/*.png             losses, balancer weights, learning rate (and validation AP): redrawn at
                            epochs with an evaluation or a numbered checkpoint, otherwise at most
                            once a minute, and at the end
    tensorboard/            with ``train.tensorboard``: the same scalars for TensorBoard (:mod:`.tensorboard`)
    metrics.json            the final evaluation, ``train_seconds`` and ``loss_weights_per_epoch``
                            (each task's balancer weight, mean over each epoch's logged
                            iterations), when training ends
    model/                  the trained model in the Hub layout (lossreg.save_pretrained): model.safetensors,
                            config.json, recipe.yaml, README.md (model card); `lossreg push` publishes it

Resuming (``resume=``) continues exactly: the model, optimizer, scheduler, gradient
scaler, EMA, RNG states and the position in the epoch are restored, every epoch's
sample order and every sample's augmentation depend only on ``(seed, epoch,
position)`` (:mod:`.sampler`), so on the CPU the weights after N more iterations equal
an uninterrupted run's bit for bit. Resuming a run that has finished (its checkpoint at
the end of the schedule and ``metrics.json`` written) changes nothing: :meth:`Trainer.train`
returns the recorded metrics; ``--set train.epochs=N`` with more epochs extends it.

``train.batch_size`` is the batch of one iteration over all processes: under ``torchrun``
with N processes each loads ``batch_size / N`` images. With ``train.accumulate: K`` each
process runs those images as K micro-batches and the optimizer steps once: the losses are
normalised over the whole batch (:mod:`.accumulate`, :mod:`lossreg.heads.normalizer`), so
the step equals one batch of ``batch_size`` (up to what the micro-batches cannot share:
trained batch norm, losses with running statistics), and learning rate, schedule and
logged values need no change.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._io import atomic_write_text
from .._version import __version__
from ..data import build_dataset, collate
from ..heads.normalizer import SyncNormalizer, use_normalizer
from ..recipe import Recipe, load_recipe
from . import distributed as dist_utils
from .accumulate import accumulate_step, split_batch
from .checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint
from .ema import ModelEMA
from .evaluate import METRIC_KEYS, evaluate
from .plots import epoch_means, plot_metrics, read_metrics
from .precision import resolve_precision
from .runs import RunFolder, default_run_dir
from .sampler import ResumableSampler, SeededItems
from .schedule import build_optimizer, build_scheduler, param_groups

__all__ = ["Trainer", "resolve_device", "seed_everything", "versions"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers


def versions() -> dict[str, str]:
    """Versions of lossreg and the libraries a run's results depend on."""
    import timm
    import torchvision

    found = {"lossreg": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__}
    return {k: str(v) for k, v in found.items()}  # torch's is a TorchVersion, not a plain str


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; other names as torch reads them.

    Raises ``ValueError`` for a CUDA device on a machine without one.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"bad device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but CUDA is not available on this machine")
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); with ``deterministic`` ask torch for deterministic kernels.

    Deterministic mode uses ``torch.use_deterministic_algorithms(True, warn_only=True)``
    (ops without a deterministic kernel warn instead of failing), disables cuDNN
    benchmarking and sets ``CUBLAS_WORKSPACE_CONFIG`` if unset.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning("checkpoint has CUDA RNG states for %d devices, this machine %d: not restored", len(cuda), torch.cuda.device_count())


def _to_device(targets: Sequence[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]


def _balancer_weights(model: nn.Module) -> dict[str, float]:
    """The weights the balancer applied at the last training call (detector property, else the head's)."""
    weights = getattr(model, "last_loss_weights", None)
    if weights is None:
        weights = getattr(getattr(model, "head", None), "last_loss_weights", None)
    return {str(k): float(v) for k, v in (weights or {}).items()}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for the leaves of nested mappings."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Train the detector of a recipe (see the module docstring for what is written where).

    Args:
        recipe: a :class:`~lossreg.recipe.Recipe`, a recipe name or path, or a dict.
        output_dir: the run folder [``runs/<recipe>-<time>``]. A folder that already
            holds a checkpoint is refused unless ``resume`` is given.
        resume: continue from a checkpoint: a path (see
            :func:`~lossreg.engine.checkpoint.checkpoint_paths`) or ``True`` for
            ``output_dir``'s last checkpoint.
        device: overrides ``train.device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        progress: tqdm progress bars [None: when stderr is a terminal]; always off on ranks > 0.

    Raises ``ValueError`` (bad device, batch size not divisible by the process count,
    ``model.num_classes`` disagreeing with the dataset, a training split without a single
    box, an occupied run folder) and :class:`~lossreg.engine.checkpoint.CheckpointError`
    for an unusable checkpoint. Rank 0 holds the run folder's lock
    (:class:`~lossreg.engine.runs.RunLock`) from construction until :meth:`train` returns or
    fails (or :meth:`close`); a folder another live run holds raises
    :class:`~lossreg.engine.runs.RunFolderLocked` before any file in it is touched.
    """

    def __init__(
        self,
        recipe: Recipe | str | os.PathLike[str] | Mapping[str, Any],
        output_dir: str | os.PathLike[str] | None = None,
        resume: str | os.PathLike[str] | bool | None = None,
        device: str | None = None,
        progress: bool | None = None,
    ) -> None:
        recipe = load_recipe(recipe)
        if device is not None:
            recipe = recipe.with_overrides([f"train.device={device}"])
        cfg = recipe.train
        self.device = resolve_device(cfg.device)
        self.dist = dist_utils.init_distributed(self.device.type)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.is_main = self.dist.rank == 0
        world = self.dist.world_size
        if cfg.batch_size % world:
            raise ValueError(
                f"train.batch_size={cfg.batch_size} is the batch over all processes and must be divisible "
                f"by their number ({world})"
            )
        self.accumulate = int(cfg.accumulate)
        if cfg.batch_size % (world * self.accumulate):
            raise ValueError(
                f"train.batch_size={cfg.batch_size} is the batch of one optimizer step over {world} process(es) x "
                f"train.accumulate={self.accumulate} micro-batches and must be divisible by {world * self.accumulate}"
            )
        self.batch_per_rank = cfg.batch_size // world
        #: images of one forward: the batch per process, divided by ``train.accumulate``
        self.micro_batch = self.batch_per_rank // self.accumulate
        self.show_progress = self.is_main and (sys.stderr.isatty() if progress is None else progress)
        seed_everything(cfg.seed, cfg.deterministic)

        # data (rank 0 first: a generated synthetic set is written once)
        if not self.is_main:
            dist_utils.barrier()
        self.train_set = build_dataset(recipe.data.train, recipe.data, train=True)
        self.val_set = (
            build_dataset(recipe.data.val, recipe.data, train=False, class_names=self.train_set.class_names)
            if recipe.data.val is not None
            else None
        )
        if self.is_main:
            dist_utils.barrier()
        num_classes = self.train_set.num_classes
        if self.train_set.data.num_boxes == 0:
            raise ValueError(
                f"data.train ({self.train_set.data.source or recipe.data.train.format}) has {len(self.train_set)} "
                "images but not one box: nothing to learn from; check the annotation file and its category ids"
            )
        if recipe.model.num_classes is not None and recipe.model.num_classes != num_classes:
            raise ValueError(
                f"model.num_classes is {recipe.model.num_classes} but the training set has {num_classes} classes "
                f"({', '.join(self.train_set.class_names)}); drop model.num_classes or make them agree"
            )
        if recipe.model.num_classes is None:
            recipe = recipe.with_overrides([f"model.num_classes={num_classes}"])
        self.recipe = recipe
        self.cfg = cfg

        # model, optimisation
        from .._factory import build_from_recipe

        self.model: nn.Module = build_from_recipe(recipe, label_names=list(self.train_set.class_names)).to(self.device)
        if cfg.sync_bn and self.dist.enabled:  # batch statistics over every process (engine/sync_bn.py)
            from .sync_bn import convert_sync_batchnorm

            self.model = convert_sync_batchnorm(self.model, self.device)
        self.sampler = ResumableSampler(
            len(self.train_set), shuffle=True, seed=cfg.seed, rank=self.dist.rank, world_size=world
        )
        self._loader_gen = torch.Generator()
        self.loader = torch.utils.data.DataLoader(
            SeededItems(self.train_set),
            batch_size=self.batch_per_rank,
            sampler=self.sampler,
            collate_fn=collate,
            num_workers=recipe.data.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=self._loader_gen,
        )
        self.iters_per_epoch = math.ceil(self.sampler.per_rank / self.batch_per_rank)
        self.total_iters = cfg.epochs * self.iters_per_epoch
        groups = param_groups(self.model, cfg.optimizer.weight_decay, cfg.optimizer.decay_norm_and_bias)
        self.optimizer = build_optimizer(groups, cfg.optimizer)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.iters_per_epoch)
        self.precision = resolve_precision(cfg.amp, self.device, cfg.channels_last)
        logger.info("precision %s (%s), channels_last %s", self.precision.name, self.precision.reason,
                    self.precision.channels_last)
        self.amp = self.precision.autocast
        self.amp_dtype = self.precision.dtype or torch.float32
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.grad_scaler)
        if self.precision.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ema = ModelEMA(self.model, cfg.ema_decay) if cfg.ema else None
        # under DDP the heads normalise by the whole batch's positives (lossreg.heads.normalizer)
        self._sync_normalizer = SyncNormalizer(self.model, self.device) if self.dist.enabled else None
        self.iteration = 0
        self.train_seconds = 0.0
        self._last_plot = time.monotonic()
        self.last_eval: dict[str, Any] | None = None
        #: ``{"metric", "value", "epoch", "iteration"}`` of the best evaluation (``train.best_metric``)
        self.best: dict[str, Any] | None = None
        #: resumed from the end of a run whose metrics.json exists: train() leaves the folder untouched
        self.finished_before = False
        #: the record of the last iteration (what metrics.jsonl got), for callbacks
        self.last_record: dict[str, Any] | None = None
        self._callbacks: list[Any] = []
        if cfg.tensorboard and self.is_main:
            from .tensorboard import require_tensorboard

            try:
                require_tensorboard()
            except ImportError as exc:
                raise ValueError(str(exc)) from None

        # run folder
        run_dir = None
        if self.is_main:
            run_dir = Path(output_dir) if output_dir is not None else default_run_dir(recipe.name)
        self.run = RunFolder(dist_utils.broadcast_object(str(run_dir) if run_dir is not None else None))
        self.run_dir = self.run.root
        self.checkpoint_dir = self.run.checkpoints
        self.metrics_path = self.run.metrics_log
        # the run folder's owner until training ends (engine/runs.py, RunLock): a second run into it stops here
        self._lock = self.run.lock().acquire() if self.is_main else None
        try:
            if resume is True:
                resume = self.run.last_checkpoint
            elif resume is False:
                resume = None
            if resume is None and checkpoint_paths(self.run.last_checkpoint)[0].exists():
                raise ValueError(
                    f"{self.run_dir} already holds a training run (checkpoints/last.safetensors); resume it "
                    "(--resume) or choose another output folder"
                )
            if resume is not None:
                self.load_checkpoint(resume)
            if self.is_main:
                self._init_run_dir()
            dist_utils.barrier()
            self.ddp_model = self._wrap()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run folder (its ``.lock``); :meth:`train` does it when it returns or fails."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    # ------------------------------------------------------------------ setup
    def _init_run_dir(self) -> None:
        if self.finished_before:  # a finished run is left as it is
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        v = versions()
        header = (
            f"# lossreg training run {self.run_dir.name}: seed {self.cfg.seed}; "
            + ", ".join(f"{k} {val}" for k, val in v.items())
            + "\n"
        )
        atomic_write_text(self.run.recipe, header + self.recipe.to_yaml())
        # keep the history up to the resumed iteration (a killed run may have logged past it)
        records = [r for r in read_metrics(self.metrics_path) if int(r.get("iter", 0)) <= self.iteration]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records))

    def _wrap(self) -> nn.Module:
        if not self.dist.enabled:
            return self.model
        find_unused = self._has_unused_parameters()
        flag = torch.tensor([float(find_unused)], device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        find_unused = bool(flag.item())
        if find_unused:
            logger.info("some parameters get no gradient: DDP runs with find_unused_parameters=True")
        return dist_utils.wrap_ddp(self.model, self.device, find_unused_parameters=find_unused)

    def _has_unused_parameters(self) -> bool:
        """Whether a training step on a copy of the model leaves a trainable parameter without gradient.

        The copy runs on this rank's first batch of the current epoch under a forked RNG,
        so the real model, the balancer state and the random streams are untouched.
        """
        probe = copy.deepcopy(self.model).train()
        order = self.sampler.order()
        items = SeededItems(self.train_set)
        keys = [(0, order[self.dist.rank + k * self.dist.world_size]) for k in range(min(self.micro_batch, self.sampler.per_rank))]
        images, targets, _ = collate([items[key] for key in keys])
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            losses = probe(images.to(self.device), _to_device(targets, self.device))
            sum(losses.values()).backward()
        unused = [n for n, p in probe.named_parameters() if p.requires_grad and p.grad is None]
        if unused:
            logger.debug("parameters without gradient: %s", ", ".join(unused[:10]))
        return bool(unused)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """Everything but the model weights that a resumed run needs (``torch.load(weights_only=True)``-safe)."""
        return {
            "iteration": self.iteration,
            "epoch": self.iteration // self.iters_per_epoch,
            "iters_per_epoch": self.iters_per_epoch,
            "world_size": self.dist.world_size,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self._scheduler_state(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": _rng_state(),
            "train_seconds": self.train_seconds,
            "best": self.best,
            "recipe": self.recipe.to_dict(),
            "versions": versions(),
        }

    def _scheduler_state(self) -> dict[str, Any]:
        # the schedule's shape (epochs, warm-up, steps) comes from the recipe on resume, not the checkpoint
        state = self.scheduler.state_dict()
        state["lr_lambdas"] = [None] * len(state.get("lr_lambdas", []))
        return state

    def save_checkpoint(self, name: str = "last") -> Path | None:
        """Write checkpoint ``name`` into ``checkpoints/`` (rank 0 only; returns its stem path, None elsewhere)."""
        if not self.is_main:
            return None
        weights_path, _ = save_checkpoint(self.checkpoint_dir, name, self.model.state_dict(), self.state())
        return weights_path.with_suffix("")

    def _link_checkpoint(self, name: str) -> None:
        """``checkpoints/<name>.*`` as hard links of ``last.*`` (a copy where links are not possible)."""
        import shutil

        for src, dst in zip(checkpoint_paths(self.checkpoint_dir / "last"), checkpoint_paths(self.checkpoint_dir / name)):
            tmp = dst.with_name(f".{dst.name}.link.tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copy2(src, tmp)
            os.replace(tmp, dst)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore the model and the training state from a checkpoint (every rank reads it)."""
        weights, state = load_checkpoint(path)
        saved, current = _flatten(state.get("recipe") or {}), _flatten(self.recipe.to_dict())
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if state.get("recipe") is not None and changed:
            logger.warning(
                "resuming with a recipe that differs from the checkpoint's (%s): optimizer settings come from the "
                "checkpoint, the schedule from the recipe; the run will not match an uninterrupted one",
                ", ".join(changed[:8]),
            )
        self.model.load_state_dict(weights)
        if state.get("iters_per_epoch") != self.iters_per_epoch:
            logger.warning(
                "the checkpoint was written with %s iterations per epoch, this run has %d (batch size, process "
                "count or dataset changed): the schedule continues from iteration %d but not exactly",
                state.get("iters_per_epoch"),
                self.iters_per_epoch,
                state["iteration"],
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # the learning rate of the next iteration under the recipe's schedule (the same value when unchanged)
        step = self.scheduler.last_epoch
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * factor(step)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            else:
                logger.warning("the checkpoint has no EMA weights: the average restarts from the current weights")
                self.ema = ModelEMA(self.model, self.cfg.ema_decay)
        self.iteration = int(state["iteration"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.best = self._recorded_best(state.get("best"))
        self.finished_before = self.iteration >= self.total_iters and self.run.metrics.is_file()
        _set_rng_state(state["rng"])
        logger.info("resumed from %s at iteration %d (epoch %d)", path, self.iteration, self.iteration // self.iters_per_epoch)

    # ------------------------------------------------------------------ training
    def _log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def train_step(self, images: torch.Tensor, targets: list[dict[str, Any]]) -> dict[str, Any]:
        """One iteration (optimizer step) on a collated batch; returns the logged record (values averaged over ranks).

        With ``train.accumulate: N`` the batch runs as N micro-batches normalised as one
        (:mod:`.accumulate`); the logged losses are the whole batch's.
        """
        start = time.perf_counter()
        self.ddp_model.train()
        images = images.to(self.device, non_blocking=True)
        if self.precision.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = _to_device(targets, self.device)
        lr = float(self.optimizer.param_groups[0]["lr"])
        loss: torch.Tensor | None = None
        if self.accumulate > 1:  # forwards and backwards of every micro-batch, normalised as one batch
            self.optimizer.zero_grad(set_to_none=True)
            parts, _ = accumulate_step(
                self.model, self.ddp_model, split_batch(images, targets, self.accumulate),
                lambda total: self.scaler.scale(total).backward(), self.device, self._autocast,
            )
        else:
            with use_normalizer(self._sync_normalizer), self._autocast():
                out = self.ddp_model(images, targets)
            loss = sum(out.values())  # torchvision's contract: the dict's parts sum to the total
            parts = {k: float(v.detach()) for k, v in out.items()}
        values = {f"loss/{k[5:]}": v for k, v in parts.items() if k.startswith("loss_")}
        values["loss"] = float(loss.detach()) if loss is not None else sum(parts.values())
        values.update({f"weight/{k}": v for k, v in _balancer_weights(self.model).items()})
        values = dist_utils.all_reduce_mean(values, self.device if self.device.type == "cuda" else "cpu")
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(
                f"the loss is {values['loss']} at iteration {self.iteration + 1} "
                f"({', '.join(f'{k}={v:.4g}' for k, v in values.items())}); lower train.optimizer.lr, "
                "set train.grad_clip or lengthen the warm-up"
            )
        if loss is not None:
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        grad_norm = None
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.iteration += 1
        record: dict[str, Any] = {
            "type": "train",
            "iter": self.iteration,
            "epoch": (self.iteration - 1) // self.iters_per_epoch,
            "lr": lr,
            "loss": values["loss"],
            "losses": {k[5:]: v for k, v in values.items() if k.startswith("loss/")},
            "weights": {k[7:]: v for k, v in values.items() if k.startswith("weight/")},
            "time": time.perf_counter() - start,
        }
        # the task losses before weighting (where the weight is known and not 0)
        record["raw_losses"] = {
            k: v / record["weights"][k] for k, v in record["losses"].items() if record["weights"].get(k, 0.0) > 0.0
        }
        if grad_norm is not None:
            record["grad_norm"] = grad_norm
        self._log(record)
        self.last_record = record
        return record

    def train(
        self,
        max_iterations: int | None = None,
        callbacks: Sequence[Callable[[Trainer], None]] = (),
    ) -> dict[str, Any] | None:
        """Train until the schedule ends (or until ``max_iterations`` iterations in all have run).

        ``callbacks`` are called with the trainer after every iteration (its
        :attr:`last_record` is what ``metrics.jsonl`` got); one with an ``on_eval(trainer,
        metrics)`` method is also called after each evaluation, and ``on_train_end(trainer)``
        when this call ends (:class:`~.tensorboard.TensorBoardCallback`). At the end of
        each epoch: evaluation every ``eval.interval`` epochs, the ``last`` checkpoint
        (and ``epoch_NNNN`` every ``train.checkpoint_interval`` epochs, the newest
        ``train.keep_last`` kept; ``best`` when ``train.best_metric`` improved) and the plots.
        When the schedule is complete, returns the final metrics (also written to
        ``metrics.json``, with the model in ``model/``); returns None when stopped early.
        """
        if self._lock is not None:
            self._lock.acquire()  # held since __init__; again after an earlier train() released it
        try:
            return self._train(max_iterations, callbacks)
        finally:
            self.close()

    def _train(self, max_iterations: int | None, callbacks: Sequence[Callable[[Trainer], None]]) -> dict[str, Any] | None:
        if self.finished_before:
            return self._finished_metrics()
        callbacks = [*self._default_callbacks(), *callbacks]
        self._callbacks = list(callbacks)
        stop = self.total_iters if max_iterations is None else min(int(max_iterations), self.total_iters)
        if self.is_main:
            logger.info(
                "training %s for %d epochs x %d iterations on %s%s%s -> %s",
                self.recipe.name,
                self.cfg.epochs,
                self.iters_per_epoch,
                self.device,
                f" x {self.dist.world_size} processes" if self.dist.enabled else "",
                f" (batch {self.cfg.batch_size} as {self.accumulate} accumulated micro-batches of {self.micro_batch}"
                f"{' per process' if self.dist.enabled else ''})" if self.accumulate > 1 else "",
                self.run_dir,
            )
        while self.iteration < stop:
            epoch, done = divmod(self.iteration, self.iters_per_epoch)
            self.sampler.set_epoch(epoch)
            self.sampler.set_start(done * self.batch_per_rank)
            self._loader_gen.manual_seed(self.cfg.seed + epoch)  # data-loader worker seeds only
            bar = tqdm(
                total=self.iters_per_epoch,
                initial=done,
                desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
                disable=not self.show_progress,
                dynamic_ncols=True,
            )
            tick = time.perf_counter()
            try:
                for images, targets, _sizes in self.loader:
                    record = self.train_step(images, targets)
                    self.train_seconds += time.perf_counter() - tick
                    tick = time.perf_counter()
                    bar.update(1)
                    if self.iteration % self.cfg.log_interval == 0 or self.iteration == stop:
                        self._report(record, bar)
                    for callback in callbacks:
                        callback(self)
                    if self.iteration >= stop:
                        break
            finally:
                bar.close()
            if self.iteration % self.iters_per_epoch == 0:
                tick = time.perf_counter()
                self._end_of_epoch(self.iteration // self.iters_per_epoch)
                self.train_seconds += time.perf_counter() - tick
        result = self.finish() if self.iteration >= self.total_iters else None
        for callback in self._callbacks:
            end = getattr(callback, "on_train_end", None)
            if end is not None:
                end(self)
        return result

    def _default_callbacks(self) -> list[Any]:
        """The callbacks the recipe asks for: the TensorBoard writer with ``train.tensorboard`` (rank 0)."""
        if not (self.cfg.tensorboard and self.is_main):
            return []
        from .tensorboard import TensorBoardCallback

        return [TensorBoardCallback(self.run.tensorboard, purge_step=self.iteration + 1 if self.iteration else None)]

    def _report(self, record: dict[str, Any], bar: Any) -> None:
        if not self.is_main:
            return
        losses = " ".join(f"{k}={v:.4f}" for k, v in record["losses"].items())
        weights = " ".join(f"{k}={v:.3g}" for k, v in record["weights"].items())
        if self.show_progress:
            bar.set_postfix_str(f"loss={record['loss']:.4f} lr={record['lr']:.3g}", refresh=False)
        else:
            logger.info(
                "iter %d/%d epoch %d lr %.4g loss %.4f [%s] weights [%s]",
                record["iter"],
                self.total_iters,
                record["epoch"] + 1,
                record["lr"],
                record["loss"],
                losses,
                weights,
            )

    #: between evaluations and numbered checkpoints the plots are redrawn at most this often (s):
    #: drawing them takes about a second, which every epoch of a short run would notice
    plot_every_seconds: float = 60.0

    def _end_of_epoch(self, epochs_done: int) -> None:
        final = epochs_done >= self.cfg.epochs
        evaluated = not final and self.val_set is not None and epochs_done % self.recipe.eval.interval == 0
        if evaluated:
            self.run_evaluation(epochs_done)
        if self.is_main:
            self.save_checkpoint("last")
            numbered = epochs_done % self.cfg.checkpoint_interval == 0
            if numbered:
                self._link_checkpoint(self.run.epoch_checkpoint(epochs_done).name)
                self.prune_checkpoints()
            if self.best is not None and self.best["iteration"] == self.iteration:
                self._link_checkpoint("best")
            now = time.monotonic()
            if evaluated or numbered or now - self._last_plot >= self.plot_every_seconds:
                plot_metrics(self.metrics_path, self.run.plots)
                self._last_plot = now
        dist_utils.barrier()

    # ------------------------------------------------------------------ checkpoints people can manage
    def prune_checkpoints(self) -> list[Path]:
        """Delete all but the newest ``train.keep_last`` epoch checkpoints (rank 0); returns the deleted stems.

        ``last`` and ``best`` are separate links and stay whatever is deleted.
        """
        keep = self.cfg.keep_last
        if not self.is_main or keep is None:
            return []
        old = [stem for _, stem in self.run.epoch_checkpoints()][:-keep]
        for stem in old:
            for path in checkpoint_paths(stem):
                path.unlink(missing_ok=True)
        if old:
            logger.debug("train.keep_last=%d: deleted %s", keep, ", ".join(p.name for p in old))
        return old

    def _is_best(self, metrics: Mapping[str, Any]) -> bool:
        """Record ``metrics`` as the best evaluation if ``train.best_metric`` improved (higher is better)."""
        name = self.cfg.best_metric
        value = metrics.get(name) if name else None
        if value is None or (self.best is not None and float(value) <= float(self.best["value"])):
            return False
        self.best = {"metric": name, "value": float(value), "epoch": self.iteration // self.iters_per_epoch,
                     "iteration": self.iteration}
        return True

    def _recorded_best(self, from_state: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The best evaluation a resumed run had: its checkpoint's, or metrics.json's when newer (final evaluation)."""
        best = dict(from_state) if from_state else None
        if self.is_main and self.run.metrics.is_file():
            try:
                final = json.loads(self.run.metrics.read_text(encoding="utf-8")).get("best")
            except (OSError, ValueError):
                final = None
            if final and (best is None or final.get("iteration", -1) > best.get("iteration", -1)):
                best = dict(final)
        if best is not None and best.get("metric") != self.cfg.best_metric:
            return None  # another metric now: start over
        return best

    def _finished_metrics(self) -> dict[str, Any] | None:
        """A finished run's recorded metrics.json (rank 0), touching nothing."""
        if not self.is_main:
            return None
        logger.info("%s finished already (iteration %d of %d); nothing to do (more epochs: --set train.epochs=N)",
                    self.run_dir, self.iteration, self.total_iters)
        return json.loads(self.run.metrics.read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ evaluation and the end
    @property
    def eval_model(self) -> nn.Module:
        """The model evaluated and saved: the EMA copy when ``train.ema``, else the trained model."""
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self) -> dict[str, Any] | None:
        """COCO metrics of :attr:`eval_model` on the validation split (rank 0; None elsewhere or without one).

        Under DDP every rank calls it and predicts its shard of the images; rank 0 gathers
        and scores them (``evaluate(..., distributed=True)``).
        """
        val = self.recipe.data.val
        if val is None or self.val_set is None:
            return None
        ann_file = val.ann_file if val.format == "coco" else None
        return evaluate(
            self.eval_model,
            self.val_set,
            batch_size=self.recipe.eval.batch_size,
            device=self.device,
            amp=self.amp_dtype if self.amp else False,
            ann_file=ann_file,
            num_workers=self.recipe.data.num_workers,
            max_dets=self.recipe.eval.max_dets,
            progress=self.show_progress,
            distributed=self.dist.enabled,
        )

    def run_evaluation(self, epochs_done: int) -> dict[str, Any] | None:
        """Evaluate (every rank its shard, rank 0 the metrics) and log an ``"eval"`` record."""
        metrics = self.evaluate()
        if metrics is not None:
            self.last_eval = metrics
            self._is_best(metrics)
            for callback in self._callbacks:
                on_eval = getattr(callback, "on_eval", None)
                if on_eval is not None:
                    on_eval(self, metrics)
            self._log({"type": "eval", "iter": self.iteration, "epoch": epochs_done, **metrics})
            logger.info(
                "epoch %d: %s", epochs_done, " ".join(f"{k}={metrics[k]:.4f}" for k in METRIC_KEYS if metrics[k] is not None)
            )
        dist_utils.barrier()
        return metrics

    def finish(self) -> dict[str, Any] | None:
        """Final evaluation, ``metrics.json``, ``model/`` and plots (rank 0); returns the metrics there."""
        metrics = self.run_evaluation(self.iteration // self.iters_per_epoch)
        if not self.is_main:
            return None
        if metrics is None:
            logger.warning("the recipe has no data.val split: metrics.json holds no evaluation")
            metrics = {key: None for key in METRIC_KEYS}
            metrics["per_class"] = {}
        result = {
            **metrics,
            "train_seconds": round(self.train_seconds, 3),
            "iterations": self.iteration,
            "epochs": self.iteration // self.iters_per_epoch,
            # small enough for an ablation archive, and what explains a balancer's result
            "loss_weights_per_epoch": epoch_means(read_metrics(self.metrics_path)),
            "versions": versions(),
        }
        if self.best is not None:
            result["best"] = dict(self.best)
            if self.best["iteration"] == self.iteration:  # the final evaluation is the best
                self._link_checkpoint("best")
        self.save_model(self.run.model, result)
        atomic_write_text(self.run.metrics, json.dumps(result, indent=2) + "\n")
        plot_metrics(self.metrics_path, self.run.plots)
        logger.info("finished: %s", self.run.metrics)
        return result

    def save_model(self, folder: str | os.PathLike[str], metrics: Mapping[str, Any] | None = None) -> Path:
        """:attr:`eval_model` in the Hub layout (``lossreg.save_pretrained``): weights, config, recipe, card."""
        from ..hub import save_pretrained

        return save_pretrained(self.eval_model, folder, recipe=self.recipe, metrics=metrics)
