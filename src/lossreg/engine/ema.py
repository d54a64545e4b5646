"""Exponential moving average of a model's weights (optional, ``train.ema``)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["ModelEMA", "averaged_keys"]


def averaged_keys(model: nn.Module) -> frozenset[str]:
    """State-dict keys the EMA averages: floating parameters and batch-norm running statistics,
    outside the loss and balancer submodules (whose state is copied)."""
    from ..detectors.finetune import training_state_prefixes  # detectors import engine modules

    copied = training_state_prefixes(model)
    keys = {name for name, p in model.named_parameters(remove_duplicate=False) if p.is_floating_point()}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            for b in ("running_mean", "running_var"):
                if getattr(m, b, None) is not None:
                    keys.add(f"{name}.{b}" if name else b)
    return frozenset(k for k in keys if not k.startswith(copied))


class ModelEMA:
    """A copy of ``model`` whose floating-point state follows ``ema = d * ema + (1 - d) * current``.

    The decay ramps up as ``d = decay * (1 - exp(-updates / warmup))`` (YOLOX / timm's
    warm-up), so the average is not dominated by the random initial weights in a
    short run. Only floating-point parameters and the running statistics of
    batch-norm layers are averaged; every other entry of the state dict is copied
    from the live model: integer counters, other buffers, and the whole state of the
    submodules that are losses or balancers (``detectors.finetune.training_state_prefixes``:
    ALWA's windows and alpha, GHM/HCRA accumulators, running means, learnable
    log-variances). That state is a training statistic, not a weight: averaged, an ALWA
    window or a GHM ``acc_sum`` would be a blend no live model ever had, and the saved
    EMA model would resume or fine-tune from it. The copy is in eval mode and never
    receives gradients; :meth:`update` is called after every optimizer step.

    Args:
        model: the model being trained (unwrapped, not the DDP module).
        decay: the asymptotic decay ``d`` [0.9998].
        warmup: iterations of the ramp [2000].
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup: int = 2000) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = int(warmup)
        self.updates = 0
        self.averaged = averaged_keys(self.module)

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.warmup)) if self.warmup > 0 else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current state."""
        self.updates += 1
        d = self.current_decay()
        current = model.state_dict()
        seen: set[tuple[int, tuple[int, ...]]] = set()
        averaged: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
        for key, ema_value in self.module.state_dict().items():
            # A tensor shared under several names (tied weights) is updated once.
            ident = (ema_value.data_ptr(), tuple(ema_value.shape))
            if ident in seen and ema_value.numel():
                continue
            seen.add(ident)
            value = current[key].detach()
            if key in self.averaged:
                group = averaged.setdefault((ema_value.device, ema_value.dtype), ([], []))
                group[0].append(ema_value)
                group[1].append(value.to(ema_value.dtype))
            else:
                ema_value.copy_(value)
        # ema += (1 - d) * (value - ema), i.e. d * ema + (1 - d) * value: one fused pass over each
        # group (the update is memory-bound: ~7 ms a step for a ResNet-18 detector as mul_ + add_)
        for ema_values, values in averaged.values():
            torch._foreach_lerp_(ema_values, values, 1.0 - d)

    def state_dict(self) -> dict[str, object]:
        """``{"weights": {name: tensor}, "updates": int}`` (CPU copies)."""
        weights = {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}
        return {"weights": weights, "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        weights = state["weights"]
        assert isinstance(weights, Mapping)
        self.module.load_state_dict(dict(weights))
        self.updates = int(state["updates"])  # type: ignore[arg-type]

    def weights(self) -> dict[str, Tensor]:
        return self.module.state_dict()
