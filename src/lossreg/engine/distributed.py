"""Distributed data parallel training under ``torchrun``.

``torchrun --nproc_per_node=N -m lossreg train RECIPE`` starts N processes with the
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
environment variables; :func:`init_distributed` joins them into one process group
(``nccl`` on CUDA, ``gloo`` on the CPU). Without those variables (or with
``WORLD_SIZE=1``) everything here is a no-op and training runs in one process.

Conventions of the trainer: every rank trains on its shard of each epoch
(:class:`lossreg.engine.sampler.ResumableSampler`), gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel`, logged values are averaged
over the ranks (:func:`all_reduce_mean`), and only rank 0 (:func:`is_main_process`)
writes files. Evaluation is sharded: each rank predicts every ``world_size``-th image and
rank 0 gathers the detections (:func:`all_gather_object`) and scores them
(:func:`lossreg.engine.evaluate.evaluate` with ``distributed=True``). ``train.sync_bn``
synchronises batch-norm statistics over the ranks (:mod:`lossreg.engine.sync_bn`).
"""

from __future__ import annotations

import datetime
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "all_gather_object",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run): the process that writes files."""
    return get_rank() == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device_type: str) -> DistInfo:
    """Join the ``torchrun`` process group if the environment asks for one.

    ``device_type`` is ``"cuda"`` (backend ``nccl``; each process takes GPU
    ``LOCAL_RANK``) or ``"cpu"`` (backend ``gloo``). Returns this process's
    :class:`DistInfo` (``world_size`` 1 when not distributed). Calling it again in a
    process that already joined returns the same information.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not dist.is_available():  # pragma: no cover - torch builds without distributed
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60))
        logger.info("joined process group: rank %d of %d (%s)", rank, world_size, backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def cleanup_distributed() -> None:
    """Leave the process group (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (a picklable object; identity in one process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(values: Mapping[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """The mean over ranks of each value (every rank must pass the same keys; identity in one process).

    ``device`` is where the reduction tensor lives: it must be a CUDA device with ``nccl``.
    """
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects; ``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` inside :class:`~torch.nn.parallel.DistributedDataParallel` (unchanged in one process).

    Buffers are not broadcast from rank 0 at every forward (``broadcast_buffers=False``,
    as mmdetection does): BatchNorm statistics and the balancers' state, whose
    per-task buffers may be created lazily after wrapping, stay each rank's own and
    rank 0's are the ones saved.
    """
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    with warnings.catch_warnings():
        # newer torch deprecates broadcast_buffers but says to keep it for rank-local buffers, as here
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, broadcast_buffers=False, find_unused_parameters=find_unused_parameters
        )
