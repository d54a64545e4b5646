"""Shared behaviour of every loss balancer (docs/api.md, "Balancers").

``total, weights = balancer(losses)``: ``losses`` maps task names to scalar
loss tensors, ``total`` is the weighted sum the optimiser sees and ``weights``
maps each given task to the float it was multiplied by this step (for logging).
``parts, weights = balancer.weighted_parts(losses)`` is the same iteration with the
total split into its terms (``sum(parts.values())`` is the total), which is what the
detectors return as their loss dict.
Subclasses implement :meth:`Balancer.compute_weights` on detached Python floats;
this module checks the input, applies the weights and guards the state.

Conventions every balancer follows (each subclass documents its own cases):

* Every call made in training mode (``balancer.train()``) is one training
  iteration and may advance the state; calls in eval mode return the weights
  the current state gives and change nothing, so validation losses can be
  weighted without disturbing training.
* All state (statistics, windows, counters, EMAs) lives in registered buffers,
  so it travels with the model's ``state_dict`` and safetensors files, and a
  resumed run continues the uninterrupted trajectory exactly. Statistics are
  float64 and stay float64 when the model is cast (``.half()``, ``.to(dtype)``).
* A task missing from ``losses`` in some iteration is simply not updated.
* A non-finite loss is never recorded into the state (one bad batch must not
  poison a window or an EMA); it is still multiplied by its current weight, so
  the NaN/inf reaches the caller's own divergence check instead of being hidden.
* A loss that is exactly 0 is not recorded by the stateful balancers either: in a
  detector it means "no positives in this batch", not "task solved", and a zero
  would otherwise drive ratios to 0 or infinity.
* Weights are always finite and non-negative; ``Balancer`` raises if a subclass
  ever produces anything else. The total is finite whenever every weighted loss
  ``weight * loss`` is representable in the losses' dtype.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["REGULARISER", "Balancer", "check_task_name", "usable"]

# Separates a per-task state kind from its task in buffer names ("kappa__cls").
_SEP = "__"

#: The key of :meth:`Balancer.parts` holding what a balancer adds to the weighted task losses
#: (a detector's ``loss_balancer`` entry); not usable as a task name.
REGULARISER = "balancer"


def check_task_name(task: Any, owner: str) -> str:
    """A task name usable as a key and inside buffer/parameter names."""
    if not isinstance(task, str) or not task or "." in task:
        raise ValueError(f"{owner}: task names must be non-empty strings without '.', got {task!r}")
    return task


def usable(value: float) -> bool:
    """Whether a loss value may enter a balancer's statistics (finite and non-zero)."""
    return math.isfinite(value) and value != 0.0


class Balancer(nn.Module):
    """Base class: validates ``losses``, applies the weights, returns them.

    Subclasses implement :meth:`compute_weights`, and may override
    :meth:`combine` when the total is not a plain weighted sum. Per-task state
    whose tasks are only known at the first call is declared in ``task_state``
    (``{kind: (dtype, shape)}``) and stored as buffers named ``{kind}__{task}``,
    which :meth:`load_state_dict` recreates from a checkpoint.
    """

    paper: ClassVar[str | None] = None
    task_state: ClassVar[dict[str, tuple[torch.dtype, tuple[int, ...]]]] = {}

    def __init__(self) -> None:
        super().__init__()
        # Training iterations seen; every balancer has it, for logging and resume checks.
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    # ------------------------------------------------------------------ call
    def forward(self, losses: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        losses, weights = self._step(losses)
        return self.combine(losses, weights), weights

    def weighted_parts(self, losses: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Like calling the balancer (one iteration in training mode), but returns the total's parts.

        ``parts`` is :meth:`parts`: ``{task: weighted loss, ...}`` plus, for a balancer
        whose total is not a plain weighted sum, ``"balancer"``: the rest (uncertainty
        weighting's ``sum 0.5 s_k``). ``sum(parts.values())`` is the total to train;
        detectors return these parts as their ``loss_<task>`` / ``loss_balancer`` entries.
        """
        losses, weights = self._step(losses)
        return self.parts(losses, weights), weights

    def _step(self, losses: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, float]]:
        """Checked losses and this iteration's weights (advancing the state in training mode)."""
        losses = self._check_losses(losses)
        # One host sync per task: the weights are Python floats for logging anyway.
        values = {task: float(loss.detach()) for task, loss in losses.items()}
        update = self.training
        weights = self.compute_weights(values, update)
        weights = self._check_weights(weights, values)
        if update:
            self.steps += 1
        return losses, weights

    def parts(self, losses: dict[str, Tensor], weights: dict[str, float]) -> dict[str, Tensor]:
        """The terms of the total, by default ``{task: weights[task] * losses[task]}``.

        A subclass that overrides :meth:`combine` with a total that is not the weighted
        sum overrides this too, adding the rest as ``"balancer"`` (:data:`REGULARISER`),
        so that ``sum(parts.values())`` equals :meth:`combine` up to rounding.
        """
        return {task: loss * weights[task] for task, loss in losses.items()}

    def compute_weights(self, values: dict[str, float], update: bool) -> dict[str, float]:
        """Weights for every task in ``values`` (detached losses); advance the state if ``update``.

        ``update`` is ``self.training``; during the call ``self.steps`` is the index of
        this iteration (it is incremented afterwards).
        """
        raise NotImplementedError

    def combine(self, losses: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
        """The total loss; by default ``sum_k weights[k] * losses[k]``.

        Summed in float64 and returned in the losses' (promoted) dtype: a weight is
        applied exactly as reported even where it is a float32 denormal (1e-41), and
        the sum is rounded once.
        """
        dtype = functools.reduce(torch.promote_types, (loss.dtype for loss in losses.values()))
        terms = [loss.to(torch.float64) * weights[task] for task, loss in losses.items()]
        # Pairwise "+" rather than stack: a task's 0-dim CPU zero may meet CUDA losses.
        return functools.reduce(operator.add, terms).to(dtype)

    # ------------------------------------------------------------------ checks
    @property
    def _name(self) -> str:
        return type(self).__name__

    def _check_losses(self, losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if not isinstance(losses, Mapping):
            raise TypeError(f"{self._name}: losses must be a dict task -> scalar tensor, got {type(losses).__name__}")
        if not losses:
            raise ValueError(f"{self._name}: losses is empty; pass at least one task")
        out = {}
        for task, loss in losses.items():
            check_task_name(task, self._name)
            if not isinstance(loss, Tensor):
                raise TypeError(f"{self._name}: loss of task {task!r} must be a tensor, got {type(loss).__name__}")
            if loss.numel() != 1:
                raise ValueError(f"{self._name}: loss of task {task!r} must be a scalar, got shape {tuple(loss.shape)}")
            if not loss.is_floating_point():
                raise TypeError(f"{self._name}: loss of task {task!r} must be floating point, got {loss.dtype}")
            out[task] = loss.reshape(())
        return out

    def _check_weights(self, weights: Mapping[str, float], values: Mapping[str, float]) -> dict[str, float]:
        out = {}
        for task in values:
            w = float(weights[task])
            if not (math.isfinite(w) and w >= 0.0):  # a bug in a balancer, never the caller's fault
                raise RuntimeError(f"{self._name} produced weight {w!r} for task {task!r}")
            out[task] = w
        return out

    # ------------------------------------------------------------------ per-task state
    def _device(self) -> torch.device:
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def _task_buffer(self, kind: str, task: str) -> Tensor | None:
        return self._buffers.get(f"{kind}{_SEP}{task}")

    def _new_task_buffer(self, kind: str, task: str) -> Tensor:
        dtype, shape = self.task_state[kind]
        buf = torch.zeros(shape, dtype=dtype, device=self._device())
        self.register_buffer(f"{kind}{_SEP}{task}", buf)
        return buf

    def _tasks_with(self, kind: str) -> list[str]:
        """Tasks that have state of ``kind``, sorted so sums run in a fixed order."""
        head = kind + _SEP
        return sorted(name[len(head) :] for name in self._buffers if name.startswith(head))

    def _is_task_buffer(self, name: str) -> bool:
        kind, sep, task = name.partition(_SEP)
        return bool(sep) and bool(task) and kind in self.task_state

    def creates_on_load(self, name: str) -> bool:
        """Whether loading a state dict creates the buffer ``name`` (per-task state; read by the Hub loader's key check)."""
        return self._is_task_buffer(name)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        if self.task_state:
            saved = set()
            for key in state_dict:
                local = key[len(prefix) :] if key.startswith(prefix) else None
                if local is not None and "." not in local and self._is_task_buffer(local):
                    saved.add(local)
            # Resuming replaces the per-task state: tasks this instance has seen but the
            # checkpoint has not are dropped, and the checkpoint's tasks get placeholders to load into.
            for name in [n for n in self._buffers if self._is_task_buffer(n) and n not in saved]:
                del self._buffers[name]
            for name in sorted(saved - set(self._buffers)):
                kind, _, task = name.partition(_SEP)
                self._new_task_buffer(kind, task)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _apply(self, fn: Any, recurse: bool = True) -> Balancer:
        # Follow the module's device but keep the state's dtype: model.half() must not
        # round float64 statistics (the trajectory would change) or int64 counters.
        before = {name: buf for name, buf in self._buffers.items() if buf is not None}
        super()._apply(fn, recurse)
        for name, old in before.items():
            new = self._buffers.get(name)
            if new is not None and new.dtype != old.dtype:
                self._buffers[name] = old.to(device=new.device)
        return self
