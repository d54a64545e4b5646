"""Mixed precision and memory format for training: what ``train.amp`` and ``train.channels_last`` resolve to.

``train.amp``:

- ``auto`` (default): bfloat16 autocast where the hardware runs it natively (a CPU with
  AVX512-BF16 or AMX, a CUDA device with bf16 support: Ampere and newer), float16 autocast
  with a ``GradScaler`` on older CUDA devices, float32 otherwise;
- ``bf16`` / ``fp16``: that autocast dtype (fp16 gets the ``GradScaler`` on CUDA). On a CPU
  without native bfloat16 ``bf16`` is emulated and logs a warning: a quick-start step took
  7.3 s there against 0.57 s in fp32 (2-core AVX2 EPYC, ``benchmarks/profile_step.py``);
- ``fp32`` (or ``false``): no autocast. ``true`` is the old switch: bf16 on a CPU, fp16 on CUDA.

``train.channels_last``: ``auto`` (default) uses channels-last tensors on CUDA (tensor
cores want NHWC) and keeps the default layout on a CPU; ``true``/``false`` force it.

Losses, assigners and balancers compute in float32 inside autocast (each casts its
inputs), so only the network runs in the lower precision.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

_logger = logging.getLogger(__name__)

__all__ = ["AMP_CHOICES", "Precision", "cpu_has_native_bf16", "resolve_precision"]

AMP_CHOICES = ("auto", "bf16", "fp16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """The resolved setting: autocast ``dtype`` (None: float32), ``grad_scaler`` and ``channels_last``."""

    dtype: torch.dtype | None
    grad_scaler: bool
    channels_last: bool
    reason: str

    @property
    def autocast(self) -> bool:
        return self.dtype is not None

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[self.dtype]


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """The CPU executes bfloat16 matrix instructions (x86 AVX512-BF16 / AMX-BF16, Arm BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.system() == "Darwin" and platform.machine() == "arm64"  # Apple M2 and newer: bf16
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _cuda_bf16(device: torch.device) -> bool:
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the keyword
        return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(amp: str | bool, device: torch.device | str, channels_last: str | bool = "auto") -> Precision:
    """What ``train.amp`` and ``train.channels_last`` mean on ``device`` (see the module docstring)."""
    device = torch.device(device)
    if isinstance(amp, bool):
        amp = ("bf16" if device.type == "cpu" else "fp16") if amp else "fp32"
    if amp not in AMP_CHOICES:
        raise ValueError(f"train.amp must be one of {', '.join(AMP_CHOICES)} (or true/false), got {amp!r}")
    if amp == "auto":
        if device.type == "cpu" and cpu_has_native_bf16():
            amp, reason = "bf16", "auto: this CPU has native bfloat16"
        elif device.type == "cuda" and _cuda_bf16(device):
            amp, reason = "bf16", "auto: this CUDA device supports bfloat16"
        elif device.type == "cuda":
            amp, reason = "fp16", "auto: this CUDA device has no bfloat16; float16 with a GradScaler"
        else:
            amp, reason = "fp32", f"auto: no native bfloat16 on this {device.type}"
    else:
        reason = f"train.amp: {amp}"
        if amp == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            reason += " (emulated: this CPU has no native bfloat16)"
            _logger.warning(
                "train.amp: bf16 on a CPU without native bfloat16 (no AVX512-BF16 or AMX) is emulated and "
                "runs many times slower than fp32 (13x for the quick start on an AVX2 CPU); use amp: auto or "
                "fp32 unless bf16's numerics are the point"
            )
    dtype = _DTYPES.get(amp)
    if channels_last == "auto":
        layout = device.type == "cuda"
    elif isinstance(channels_last, bool):
        layout = channels_last
    else:
        raise ValueError(f"train.channels_last must be auto, true or false, got {channels_last!r}")
    return Precision(dtype, grad_scaler=dtype is torch.float16 and device.type == "cuda", channels_last=layout,
                     reason=reason)
