"""Fine-tuning transfer: load pretrained weights into a detector with other classes.

Every weight is kept except the classification output layer(s), which are
re-initialised (zero-mean normal weights and the focal prior bias); the rows of
classes whose names appear in the pretrained ``label_names`` are copied over
instead (api.md section 5). A head names its classification output layers in
``cls_output_layers``: ``{parameter prefix: (anchors per location, background_last)}``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

_logger = logging.getLogger(__name__)


def cls_output_layers(model: nn.Module) -> dict[str, tuple[int, bool]]:
    """``{"head.cls_out": (A, background_last), ...}`` for every head in ``model``."""
    layers: dict[str, tuple[int, bool]] = {}
    for name, module in model.named_modules():
        for prefix, layout in getattr(module, "cls_output_layers", {}).items():
            layers[f"{name}.{prefix}" if name else prefix] = layout
    return layers


def _class_rows(num_classes: int, anchors: int, background_last: bool) -> Tensor:
    """``[A, C(+1)]`` row index of (anchor, class) in an output layer laid out anchor-major."""
    per_anchor = num_classes + int(background_last)
    return torch.arange(anchors * per_anchor).view(anchors, per_anchor)


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
    layers = cls_output_layers(model)
    own = model.state_dict()
    dst_names = list(getattr(model, "label_names", None) or [])
    src_names = list(src_label_names or [])
    missing = [k for k in own if k not in state_dict and not _in_layers(k, layers)]
    unexpected = [k for k in state_dict if k not in own]
    bad_shapes = [
        k for k, v in state_dict.items() if k in own and own[k].shape != v.shape and not _in_layers(k, layers)
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
    new_state = {k: v for k, v in state_dict.items() if not _in_layers(k, layers)}
    with torch.no_grad():
        for prefix, (anchors, background_last) in layers.items():
            w_key, b_key = f"{prefix}.weight", f"{prefix}.bias"
            weight, bias = own[w_key].clone(), own[b_key].clone()
            nn.init.normal_(weight, std=0.01)
            bias.fill_(0.0 if background_last else -math.log((1 - prior_prob) / prior_prob))
            if w_key in state_dict:
                n_dst = weight.shape[0] // anchors - int(background_last)
                n_src = state_dict[w_key].shape[0] // anchors - int(background_last)
                dst_rows = _class_rows(n_dst, anchors, background_last)
                src_rows = _class_rows(n_src, anchors, background_last)
                pairs = [(d, s) for d, s in matched if s < n_src]
                if background_last:
                    pairs.append((n_dst, n_src))
                for d, s in pairs:
                    weight[dst_rows[:, d]] = state_dict[w_key][src_rows[:, s]].to(weight.dtype)
                    bias[dst_rows[:, d]] = state_dict[b_key][src_rows[:, s]].to(bias.dtype)
            new_state[w_key], new_state[b_key] = weight, bias
    model.load_state_dict(new_state, strict=True)
    copied = [dst_names[d] for d, _ in matched]
    _logger.info("fine-tuning transfer: %d classes copied (%s), output layers %s", len(copied), copied, list(layers))
    return {"copied_classes": copied, "reinitialised": sorted(layers)}


def _in_layers(key: str, layers: Mapping[str, tuple[int, bool]]) -> bool:
    return any(key in (f"{p}.weight", f"{p}.bias") for p in layers)
