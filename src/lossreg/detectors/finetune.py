"""Fine-tuning transfer: load pretrained weights into a detector with other classes.

Every weight is kept except the classification output layer(s), which are
re-initialised (zero-mean normal weights and the focal prior bias); the rows of
classes whose names appear in the pretrained ``label_names`` are copied over
instead (docs/api.md, "Fine-tuning and component state"). A head names its classification output layers in
``cls_output_layers``: ``{parameter prefix: (anchors per location, background_last)}``,
and class-specific box regression outputs (Faster R-CNN's ``bbox_pred``) in
``class_reg_layers``: ``{prefix: rows per class}``; their matched classes' rows are
copied too and the rest re-initialised with N(0, 0.001) weights and zero bias.

Losses and balancers are not part of the network: their state (HCRA-C's gradient
density, HCRA-R's running mean, ALWA's windows, the uncertainty weights) describes the
training run that wrote the checkpoint, so it is neither required nor copied, and the
new run starts it fresh. That lets a model trained with one loss be fine-tuned with any
other (``--set model.cls_loss=hcra_c`` on published focal-loss weights).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Layer:
    """One class-dependent output layer: how its rows map to classes and how to re-initialise it."""

    prefix: str
    group: int  # anchors per location (cls) or rows per class (reg)
    background_last: bool
    is_reg: bool

    def rows(self, num_rows: int) -> tuple[int, Tensor]:
        """``(num_classes, [group, num_classes(+1)] row indices)`` of a layer with ``num_rows`` outputs."""
        if self.is_reg:
            n = num_rows // self.group
            return n, torch.arange(num_rows).view(n, self.group).T  # class-major: c * k + j
        per_group = num_rows // self.group
        return per_group - int(self.background_last), torch.arange(num_rows).view(self.group, per_group)

    def reinit(self, weight: Tensor, bias: Tensor, prior_prob: float) -> None:
        nn.init.normal_(weight, std=0.001 if self.is_reg else 0.01)
        sigmoid_cls = not (self.is_reg or self.background_last)
        bias.fill_(-math.log((1 - prior_prob) / prior_prob) if sigmoid_cls else 0.0)


def cls_output_layers(model: nn.Module) -> dict[str, tuple[int, bool]]:
    """``{"head.cls_out": (A, background_last), ...}`` for every head in ``model``."""
    return {layer.prefix: (layer.group, layer.background_last) for layer in _layers(model) if not layer.is_reg}


def _layers(model: nn.Module) -> list[_Layer]:
    layers = []
    for name, module in model.named_modules():
        base = f"{name}." if name else ""
        for prefix, (group, background_last) in getattr(module, "cls_output_layers", {}).items():
            layers.append(_Layer(base + prefix, group, background_last, is_reg=False))
        for prefix, per_class in getattr(module, "class_reg_layers", {}).items():
            layers.append(_Layer(base + prefix, per_class, False, is_reg=True))
    return layers


def transfer_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    src_label_names: Sequence[str] | None = None,
    prior_prob: float = 0.01,
) -> dict[str, list[str]]:
    """Load ``state_dict`` into ``model`` whose classes may differ from the checkpoint's.

    Returns ``{"copied_classes": [...], "reinitialised": [...]}``. Any key or shape
    mismatch outside the classification output layers raises ``ValueError``
    (nothing is loaded then: the check runs before any copy).
    """
    layers = _layers(model)
    prefixes = {layer.prefix for layer in layers}
    own = model.state_dict()
    state_dict = with_fresh_state(model, state_dict, training_state_prefixes(model))
    dst_names = list(getattr(model, "label_names", None) or [])
    src_names = list(src_label_names or [])
    missing = [k for k in own if k not in state_dict and not _in_layers(k, prefixes)]
    unexpected = [k for k in state_dict if k not in own]
    bad_shapes = [
        k for k, v in state_dict.items() if k in own and own[k].shape != v.shape and not _in_layers(k, prefixes)
    ]
    if missing or unexpected or bad_shapes:
        raise ValueError(
            "checkpoint does not fit this detector: "
            + "; ".join(
                f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shapes))
                if keys
            )
        )
    matched = [(d, src_names.index(n)) for d, n in enumerate(dst_names) if n in src_names]
    new_state = {k: v for k, v in state_dict.items() if not _in_layers(k, prefixes)}
    with torch.no_grad():
        for layer in layers:
            w_key, b_key = f"{layer.prefix}.weight", f"{layer.prefix}.bias"
            weight, bias = own[w_key].clone(), own[b_key].clone()
            layer.reinit(weight, bias, prior_prob)
            if w_key in state_dict:
                n_dst, dst_rows = layer.rows(weight.shape[0])
                n_src, src_rows = layer.rows(state_dict[w_key].shape[0])
                pairs = [(d, s) for d, s in matched if s < n_src]
                if layer.background_last:
                    pairs.append((n_dst, n_src))
                for d, s in pairs:
                    weight[dst_rows[:, d]] = state_dict[w_key][src_rows[:, s]].to(weight.dtype)
                    bias[dst_rows[:, d]] = state_dict[b_key][src_rows[:, s]].to(bias.dtype)
            new_state[w_key], new_state[b_key] = weight, bias
    model.load_state_dict(new_state, strict=True)
    copied = [dst_names[d] for d, _ in matched]
    _logger.info("fine-tuning transfer: %d classes copied (%s), output layers %s", len(copied), copied, sorted(prefixes))
    return {"copied_classes": copied, "reinitialised": sorted(prefixes)}


def training_state_prefixes(model: nn.Module, slots: Sequence[str] | None = None) -> tuple[str, ...]:
    """``("head.cls_loss.", "head.balancer.", ...)``: the submodules that are losses or balancers.

    ``slots`` keeps only those whose attribute name is listed (``["cls_loss"]``).
    """
    from ..balancers._base import Balancer
    from ..losses._base import _LossBase

    return tuple(
        f"{name}." for name, m in model.named_modules()
        if name and isinstance(m, (_LossBase, Balancer)) and (slots is None or name.rsplit(".", 1)[-1] in slots)
    )


def with_fresh_state(model: nn.Module, state: Mapping[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    """``state`` with every key under ``prefixes`` replaced by ``model``'s own (initial) value.

    Keys of ``state`` under ``prefixes`` are dropped, whatever component wrote them.
    """
    own = model.state_dict()
    out = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    out.update({k: v for k, v in own.items() if k.startswith(prefixes)})
    return out


def _in_layers(key: str, prefixes: set[str]) -> bool:
    return key.rsplit(".", 1)[0] in prefixes
