"""timm backbones as multi-scale feature extractors (``features_only=True``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import timm
from torch import Tensor, nn

_logger = logging.getLogger(__name__)


class OfflineWeightsError(RuntimeError):
    """Pretrained weights were requested but could not be downloaded or found in the cache."""



class _NoZeroInitOption(ValueError):
    """A ``zero_init_last`` asked of a timm model without the option (never a download failure)."""


def _create_body(name: str, pretrained: bool, zero_init_last: bool | None) -> nn.Module:
    """The timm ``features_only`` model, with ``zero_init_last`` off unless asked for (see TimmBackbone)."""
    init: dict[str, Any] = {"zero_init_last": bool(zero_init_last)}
    try:
        return timm.create_model(name, features_only=True, pretrained=pretrained, **init)
    except TypeError as exc:
        if "zero_init_last" not in str(exc):
            raise
        if zero_init_last is not None:
            raise _NoZeroInitOption(f"timm backbone {name!r} has no zero_init_last option; leave it unset") from exc
    return timm.create_model(name, features_only=True, pretrained=pretrained)  # the model's own init

class TimmBackbone(nn.Module):
    """Any timm model with ``features_only=True``, returning the levels of the requested strides.

    Args:
        name: timm model name (``resnet18``, ``resnet50``, ``convnext_tiny``, ...).
        strides: output strides wanted, finest first [(8, 16, 32)]: C3-C5 for one-stage
            detectors, ``(4, 8, 16, 32)`` (C2-C5) for two-stage ones.
        pretrained: download ImageNet weights through timm / the Hugging Face Hub [False].
        freeze_bn: replace BatchNorm by frozen BatchNorm (detection practice with
            pretrained weights and small per-device batches) [False].
        frozen_stages: stages whose parameters get no gradient and whose BatchNorm stays
            in eval mode, mmdetection's convention: ``-1`` none [default], ``0`` the stem,
            ``k`` the stem and the first ``k`` stages (a stage ends at each feature level
            of timm's ``feature_info``: ResNet's stem is conv1/bn1, stage 1 maxpool +
            layer1). torchvision's ``trainable_backbone_layers=3`` is ``frozen_stages=1``.
        bn_eps: epsilon of every (frozen) BatchNorm of the backbone [None: timm's, 1e-5];
            torchvision's COCO_V1 RetinaNet and Faster R-CNN weights need 0.0.
        style: ``"pytorch"`` [default: timm's, the stride of a ResNet bottleneck on its 3x3
            conv] or ``"caffe"`` (the stride on its first 1x1 conv: mmdetection's
            ``style='caffe'``, the MSRA/Detectron ResNets of mmdetection's FCOS baselines).
        mean, std: the input normalisation in 0-1 RGB units [None: the timm model's
            ``pretrained_cfg``]; read by the detectors.
        zero_init_last: timm's ``zero_init_last`` of the random init: the last BatchNorm of
            each residual branch starting at weight 0 (Goyal et al., 2017). [None: off
            (weight 1, torchvision's ResNet init) where the timm model has the option, the
            model's own init elsewhere; True: timm's default for its ResNets; False: off,
            ``ValueError`` for a model without the option.] Off by default because from
            scratch, with AdamW, a zero-initialised BatchNorm weight grows by at most about
            the learning rate per step, so every residual branch stays nearly shut for
            much of a short schedule: at the quick start's size it cost FCOS 16 AP points
            against torchvision's init (3 paired seeds; README, "Parity with torchvision";
            ``benchmarks/RESULTS.md``, "Accuracy parity"). Pretrained weights
            replace the init either way.

    Shapes: ``forward([B, 3, H, W]) -> list of [B, channels[i], H / strides[i], W / strides[i]]``.
    """

    def __init__(
        self,
        name: str = "resnet50",
        strides: Sequence[int] = (8, 16, 32),
        pretrained: bool = False,
        freeze_bn: bool = False,
        frozen_stages: int = -1,
        bn_eps: float | None = None,
        style: str = "pytorch",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        zero_init_last: bool | None = None,
    ) -> None:
        super().__init__()
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"backbone style must be 'pytorch' or 'caffe', got {style!r}")
        for key, value in (("mean", mean), ("std", std)):
            if value is not None and len(value) != 3:
                raise ValueError(f"backbone {key} needs 3 values (R, G, B), got {value!r}")
        self.mean = tuple(float(v) for v in mean) if mean is not None else None
        self.std = tuple(float(v) for v in std) if std is not None else None
        self.style = style
        if not timm.is_model(name):
            from .._registry import UnknownComponentError

            raise UnknownComponentError("timm backbone", name, timm.list_models(), hint="see timm.list_models()")
        self.zero_init_last = zero_init_last
        try:
            body = _create_body(name, pretrained, zero_init_last)
        except _NoZeroInitOption:
            raise
        except Exception as exc:  # noqa: BLE001 - any download failure becomes one clear message
            if not pretrained:
                raise
            raise OfflineWeightsError(
                f"could not load pretrained weights of timm backbone {name!r} ({type(exc).__name__}: {exc}). "
                "The weights are downloaded from the Hugging Face Hub on first use: connect to the internet, "
                "or pre-populate the Hugging Face cache (HF_HOME), or pass pretrained_backbone=False"
            ) from exc
        reductions = body.feature_info.reduction()
        missing = [s for s in strides if s not in reductions]
        if missing:
            raise ValueError(f"backbone {name!r} has no feature level with stride {missing}; it offers {reductions}")
        self.indices = [reductions.index(s) for s in strides]
        self.strides = tuple(int(s) for s in strides)
        self.channels = [body.feature_info.channels()[i] for i in self.indices]
        self.name = name
        if freeze_bn:
            from timm.layers import freeze_batch_norm_2d

            body = freeze_batch_norm_2d(body)
        if style == "caffe":  # move each bottleneck's stride from its 3x3 conv to its first 1x1 conv
            for m in body.modules():
                c1, c2 = getattr(m, "conv1", None), getattr(m, "conv2", None)
                if isinstance(c1, nn.Conv2d) and isinstance(c2, nn.Conv2d) and c1.kernel_size == (1, 1) and c2.stride != (1, 1):
                    c1.stride, c2.stride = c2.stride, (1, 1)
        if bn_eps is not None:
            for m in body.modules():
                if hasattr(m, "running_var") and hasattr(m, "eps"):
                    m.eps = float(bn_eps)
        self.body = body
        self.frozen_stages = int(frozen_stages)
        self._frozen = self._stage_modules(self.frozen_stages)
        for m in self._frozen:
            for p in m.parameters():
                p.requires_grad_(False)

    def _stage_modules(self, last: int) -> list[nn.Module]:
        """The top-level modules of the stem (stage 0) and stages ``1..last``."""
        if last < 0:
            return []
        names = self.body.feature_info.module_name()
        stages = len(names)
        if last >= stages:
            raise ValueError(f"frozen_stages={last}, but backbone {self.name!r} has stages 0..{stages - 1}")
        ends = {n.split(".")[0]: i for i, n in enumerate(names)}
        out, stage = [], 0
        for child_name, child in self.body.named_children():
            if stage > last:
                break
            out.append(child)
            if child_name in ends:
                stage = ends[child_name] + 1
        return out

    def train(self, mode: bool = True) -> TimmBackbone:
        super().train(mode)
        for m in self._frozen:  # frozen stages keep their BatchNorm statistics
            m.eval()
        return self

    def forward(self, images: Tensor) -> list[Tensor]:
        feats = self.body(images)
        return [feats[i] for i in self.indices]
