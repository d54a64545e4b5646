"""Gradient accumulation (``train.accumulate: N``): one optimizer step from N micro-batches, as from one batch.

``train.batch_size`` stays the batch of one optimizer step (over every process and
micro-batch), so a paper recipe's learning rate, schedule and iteration count are
unchanged; each process loads ``batch_size / world_size`` images per step and runs
them as ``N`` micro-batches of ``batch_size / (world_size * N)``. What makes the step
equal to the big batch's is the normalisation (:mod:`lossreg.heads.normalizer`): the
losses are divided by the positive count (the heads' ``avg_factor``) of the *whole*
accumulated batch over every process, and each balancer is called once per step with
the whole batch's losses. That count is known only after every micro-batch's
assignment, so each step runs in two passes:

1. *record*: every micro-batch forward under ``torch.no_grad()`` (no activations are
   kept), the model's buffers (batch-norm statistics, the losses' running statistics)
   and the random generators restored afterwards (:func:`preserved_state`), so the
   second pass assigns, samples and normalises exactly as the first saw;
2. *apply*: every micro-batch forward and backward, gradients summed (under DDP, the
   gradient all-reduce runs on the last micro-batch only: ``no_sync``).

The record pass costs one extra forward without gradients per micro-batch (not
measured here: the development machine was too busy to time it). The logged losses are
the whole batch's (the micro-batch parts summed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..heads.normalizer import AccumulationNormalizer, use_normalizer

__all__ = ["accumulate_step", "preserved_state", "split_batch"]


def split_batch(images: Tensor, targets: Sequence[Any], parts: int) -> list[tuple[Tensor, list[Any]]]:
    """``images [B, ...]`` and their ``targets`` in ``parts`` consecutive micro-batches (sizes differ by at most 1; none empty)."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if len(targets) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(targets)} targets")
    out = []
    for idx in torch.tensor_split(torch.arange(images.shape[0]), parts):
        if idx.numel():
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            out.append((images[lo:hi], list(targets[lo:hi])))
    return out


@contextlib.contextmanager
def preserved_state(model: nn.Module, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block, then put back every buffer of ``model`` and the CPU (and CUDA ``device``) random state."""
    device = torch.device(device)
    saved = [(buf, buf.detach().clone()) for buf in model.buffers()]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def accumulate_step(
    model: nn.Module,
    train_model: nn.Module,
    micro_batches: Sequence[tuple[Tensor, list[Any]]],
    backward: Callable[[Tensor], None],
    device: torch.device | str = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> tuple[dict[str, float], AccumulationNormalizer]:
    """Forward and backward every micro-batch, normalised as one batch; returns the summed loss parts.

    Args:
        model: the detector (its buffers are preserved across the record pass, which runs on it).
        train_model: what the training forwards run through: ``model`` or its DDP wrapper (whose
            gradient synchronisation is skipped on every micro-batch but the last).
        micro_batches: ``(images, targets)`` pairs, on the device.
        backward: called with each micro-batch's total loss (``scaler.scale(loss).backward()``).
        autocast: a context manager factory wrapping each forward (mixed precision).

    Returns ``({"loss_cls": ..., ...}, normalizer)``: each loss entry summed over the
    micro-batches (the whole batch's weighted task losses); ``normalizer.weights`` holds
    the balancer weights of the step.
    """
    n = len(micro_batches)
    norm = AccumulationNormalizer(model, n, device)
    with preserved_state(model, device), use_normalizer(norm), torch.no_grad():
        for images, targets in micro_batches:
            norm.begin_micro_batch()
            with autocast():
                model(images, targets)
    norm.finalize()
    norm.start_apply()
    totals: dict[str, float] = {}
    no_sync = getattr(train_model, "no_sync", None)
    with use_normalizer(norm):
        for i, (images, targets) in enumerate(micro_batches):
            norm.begin_micro_batch()
            sync = contextlib.nullcontext() if no_sync is None or i == n - 1 else no_sync()
            with sync:
                with autocast():
                    out = train_model(images, targets)
                loss = sum(out.values())
                backward(loss)
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach())
    return totals, norm
