"""Optimizers (torch's SGD and fused AdamW, every other name timm's) and learning-rate schedules.

:func:`build_optimizer` builds ``train.optimizer``; :func:`param_groups` splits a
model's parameters into those with and without weight decay (norm layers, biases, the
heads' per-level scales and the balancers' learnable weights are not decayed).

Learning-rate schedules: linear warm-up followed by a step, cosine or constant schedule.

The schedule is a per-iteration multiplier of the optimizer's base learning rate,
used through :class:`torch.optim.lr_scheduler.LambdaLR` (stepped once per iteration)::

    factor = WarmupSchedule("cosine", total_iters=1200, iters_per_epoch=100, warmup_iters=50)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

The multiplier is a picklable object holding only plain numbers, so the scheduler's
``state_dict`` (which stores it) loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["WarmupSchedule", "build_optimizer", "build_scheduler", "param_groups"]

_SCHEDULES = ("step", "cosine", "constant")


class WarmupSchedule:
    """Learning-rate multiplier of iteration ``it`` (0-based).

    Warm-up (mmdetection's linear warm-up): for ``it < warmup_iters`` the multiplier
    rises linearly from ``warmup_ratio`` at ``it = 0`` towards 1, i.e.
    ``warmup_ratio + (1 - warmup_ratio) * it / warmup_iters``; it multiplies the main
    schedule's value.

    Main schedule:

    - ``"step"``: ``gamma ** k`` where ``k`` counts the ``steps`` (epochs) already
      reached: with ``steps=(8, 11)`` the rate drops at the start of the 9th and the
      12th epoch (0-based epochs 8 and 11).
    - ``"cosine"``: ``0.5 * (1 + cos(pi * it / total_iters))``, from 1 to 0 at the end.
    - ``"constant"``: 1.

    Args:
        schedule: ``"step"``, ``"cosine"`` or ``"constant"``.
        total_iters: iterations of the whole run (>= 1).
        iters_per_epoch: iterations per epoch (>= 1), for ``steps``.
        warmup_iters: iterations of warm-up (0: none).
        warmup_ratio: starting multiplier of the warm-up, in (0, 1].
        steps: epochs at which ``"step"`` multiplies the rate by ``gamma``.
        gamma: factor of each step.

    Raises ``ValueError`` on an unknown schedule or out-of-range numbers.
    """

    def __init__(
        self,
        schedule: str,
        total_iters: int,
        iters_per_epoch: int,
        warmup_iters: int = 0,
        warmup_ratio: float = 0.001,
        steps: Sequence[int] = (),
        gamma: float = 0.1,
    ) -> None:
        if schedule not in _SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(_SCHEDULES)}")
        if total_iters < 1 or iters_per_epoch < 1:
            raise ValueError(f"total_iters and iters_per_epoch must be >= 1, got {total_iters}, {iters_per_epoch}")
        if warmup_iters < 0 or not 0 < warmup_ratio <= 1:
            raise ValueError(f"warmup_iters must be >= 0 and warmup_ratio in (0, 1], got {warmup_iters}, {warmup_ratio}")
        self.schedule = schedule
        self.total_iters = int(total_iters)
        self.iters_per_epoch = int(iters_per_epoch)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.steps = [int(s) for s in steps]
        self.gamma = float(gamma)

    def main_factor(self, it: int) -> float:
        """The main schedule's multiplier at iteration ``it`` (no warm-up)."""
        if self.schedule == "step":
            epoch = it // self.iters_per_epoch
            return self.gamma ** sum(1 for s in self.steps if epoch >= s)
        if self.schedule == "cosine":
            progress = min(max(it / self.total_iters, 0.0), 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    def __call__(self, it: int) -> float:
        factor = self.main_factor(it)
        if it < self.warmup_iters:
            factor *= self.warmup_ratio + (1.0 - self.warmup_ratio) * it / self.warmup_iters
        return factor


def _can_fuse(params: list[Any]) -> bool:
    """Whether the fused AdamW kernel takes these parameters (floating point, on CPU or CUDA).

    On a CPU the default per-tensor AdamW step costs a tenth of a small detector's
    training step; the fused kernel does the same update in one pass (~10x faster).
    """
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    return bool(tensors) and all(
        isinstance(t, torch.Tensor) and t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors
    )


_NORMS = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.LocalResponseNorm)


def _is_no_decay(module: torch.nn.Module, param: torch.Tensor) -> bool:
    """Norm-layer parameters, biases and other 0/1-dim parameters (the heads' ``Scale``), as timm's rule."""
    return isinstance(module, _NORMS) or param.ndim <= 1 or type(module).__name__ in ("Scale", "FrozenBatchNorm2d")


def param_groups(model: torch.nn.Module, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` as ``[{"params": decayed, "weight_decay": wd}, {"params": rest, "weight_decay": 0}]``.

    Not decayed: parameters of norm layers (batch, group, layer norm), biases, every other
    parameter of at most one dimension (the heads' per-level ``Scale``) and the balancers'
    learnable loss weights. ``decay_norm_and_bias`` decays all but the balancers'
    (mmdetection's plain SGD configs). Each parameter appears once (tied weights too).
    """
    from ..balancers._base import Balancer

    balancer_ids = {id(p) for m in model.modules() if isinstance(m, Balancer) for p in m.parameters()}
    decay: list[torch.Tensor] = []
    no_decay: list[torch.Tensor] = []
    seen: set[int] = set()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if id(param) in balancer_ids or (not decay_norm_and_bias and _is_no_decay(module, param)):
                no_decay.append(param)
            else:
                decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(params: Any, cfg: Any) -> torch.optim.Optimizer:
    """The optimizer of a recipe's ``train.optimizer`` over ``params`` (parameters or groups, e.g. :func:`param_groups`).

    ``sgd``: ``torch.optim.SGD`` with ``momentum``; ``adamw``: ``torch.optim.AdamW`` with
    ``betas``, fused when every parameter allows it; any other name: timm's
    ``create_optimizer_v2`` (``momentum`` for optimizers with one, ``betas`` for those with
    two). ``cfg.args`` are passed as further keyword arguments. Groups may set their own
    ``weight_decay``. Raises ``ValueError`` on a name neither torch's two nor timm's.
    """
    name = cfg.name.lower()
    extra = dict(getattr(cfg, "args", None) or {})
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **extra)
    if name == "adamw":
        params = list(params)
        extra.setdefault("fused", _can_fuse(params) or None)
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **extra)
    import timm.optim

    try:
        info = timm.optim.get_optimizer_info(name.removeprefix("lookahead_"))
    except ValueError:
        raise ValueError(f"unknown optimizer {cfg.name!r}; expected 'sgd', 'adamw' or one of "
                         "timm.optim.list_optimizers()") from None
    if info.has_betas and info.num_betas == 2:
        extra.setdefault("betas", tuple(cfg.betas))
    return timm.optim.create_optimizer_v2(
        list(params), opt=name, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, **extra
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, train_cfg: Any, iters_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration :class:`~torch.optim.lr_scheduler.LambdaLR` for a recipe's ``train`` section."""
    factor = WarmupSchedule(
        train_cfg.schedule,
        total_iters=train_cfg.epochs * iters_per_epoch,
        iters_per_epoch=iters_per_epoch,
        warmup_iters=train_cfg.warmup_iters,
        warmup_ratio=train_cfg.warmup_ratio,
        steps=train_cfg.steps,
        gamma=train_cfg.gamma,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
