"""Synchronised batch normalisation (``train.sync_bn: true`` under ``torchrun``), on GPUs and CPUs.

Each process of a DDP run normalises its own ``batch_size / world_size`` images; with
``train.sync_bn`` every trained ``BatchNorm*d`` of the model computes its batch
statistics over the images of *all* processes, so a DDP step equals one process holding
the whole batch (with the heads' normaliser, :mod:`lossreg.heads.normalizer`, for the
loss). :func:`convert_sync_batchnorm` uses ``torch.nn.SyncBatchNorm`` (whose kernels
need CUDA; through timm's converter, which also handles its norm + activation layers); on
the CPU (``gloo``, the 2-process tests) the converted layers are :class:`CPUSyncBatchNorm`,
which sums ``(sum x, sum x^2, count)`` over the processes with a differentiable
``all_reduce`` and normalises by them. Frozen batch norm (pretrained
backbones, ``freeze_bn``) has no batch statistics and is left alone; outside a process
group both behave as ``BatchNorm``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["CPUSyncBatchNorm", "convert_sync_batchnorm"]


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are summed over the process group with autograd's ``all_reduce``.

    What ``torch.nn.SyncBatchNorm`` does, for CPU tensors (DDP refuses ``SyncBatchNorm``
    modules on the CPU, so this is a plain ``_BatchNorm``). Outside a process group, or in
    eval mode, it is ``BatchNorm``.
    """

    def __init__(self, *args: Any, process_group: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        group = self.process_group or (dist.group.WORLD if dist.is_available() and dist.is_initialized() else None)
        if not (self.training and group is not None and dist.get_world_size(group) > 1):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x = input.float()
        count = x.new_tensor([x.numel() // c])
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]), group=group)
        n = stats[2 * c]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp(min=0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp(min=1))
                self.running_mean.mul_(1 - momentum).add_(mean.detach().to(self.running_mean.dtype), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach().to(self.running_var.dtype), alpha=momentum)
        shape = [1, c] + [1] * (input.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _to_cpu_sync(module: nn.Module) -> nn.Module:
    out = module
    if type(module) in _PLAIN_BN:
        bn: Any = module
        out = CPUSyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        if bn.affine:
            out.weight, out.bias = bn.weight, bn.bias
        out.running_mean, out.running_var = bn.running_mean, bn.running_var
        out.num_batches_tracked = bn.num_batches_tracked
        out.train(bn.training)
    for name, child in module.named_children():
        out.add_module(name, _to_cpu_sync(child))
    return out


def convert_sync_batchnorm(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """``model`` with every trained batch norm synchronised over the process group (parameters and buffers kept).

    On CUDA: timm's ``convert_sync_batchnorm`` (``torch.nn.SyncBatchNorm``, and timm's
    norm + activation layers); on the CPU: plain ``BatchNorm*d`` become :class:`CPUSyncBatchNorm`.
    Returns the converted model (the same object unless ``model`` itself is a batch norm).
    """
    if torch.device(device).type == "cpu":
        return _to_cpu_sync(model)
    from timm.layers import convert_sync_batchnorm as timm_convert

    return timm_convert(model)
