"""P6/P7 under CPU bf16 autocast on small images: torch's bf16 conv gives a wrong weight gradient
for a stride-2 conv over a map one pixel wide (P7 of a 64 px image), which made `lossreg train`
(amp auto -> bf16 on CPUs with native bf16) write non-finite P7 weights after two steps."""

from __future__ import annotations

import pytest
import torch

from lossreg.necks.fpn import FPN


@pytest.mark.parametrize("size", [(64, 64), (64, 40), (96, 64)])
def test_p6p7_gradients_under_bf16_match_fp32(size):
    torch.manual_seed(0)
    neck = FPN(in_channels=[16, 32, 64], out_channels=32)
    h, w = size
    feats = [torch.randn(2, c, h // s, w // s) for c, s in ((16, 8), (32, 16), (64, 32))]
    grads = {}
    for bf16 in (False, True):
        neck.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outs = neck(feats)
        sum(o.float().sum() for o in outs).backward()
        grads[bf16] = {n: p.grad.clone() for n, p in neck.named_parameters() if "extra" in n}
    for name, ref in grads[False].items():
        got = grads[True][name]
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got, ref, rtol=0.05, atol=0.05 * float(ref.abs().max()) + 1e-4, msg=name)

