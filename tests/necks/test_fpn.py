"""FPN neck: output levels, strides, channels; P6 from P5 or C5."""

from __future__ import annotations

import pytest
import torch

import lossreg


def _feats(channels=(128, 256, 512), size=64):
    return [torch.randn(2, c, size // s, size // s) for c, s in zip(channels, (8, 16, 32))]


@pytest.mark.parametrize("extra,n_out", [("p6p7", 5), ("maxpool", 4), ("none", 3)])
def test_levels(extra, n_out):
    neck = lossreg.create_neck("fpn", in_channels=[128, 256, 512], out_channels=32, extra=extra)
    outs = neck(_feats())
    assert len(outs) == n_out == neck.num_outs
    sizes = [o.shape[-1] for o in outs]
    assert sizes[:3] == [8, 4, 2] and all(o.shape[:2] == (2, 32) for o in outs)
    if extra == "p6p7":
        assert sizes[3:] == [1, 1]


def test_p6_source():
    from_c5 = lossreg.create_neck("fpn", in_channels=[128, 256, 512], out_channels=32, extra_from="c5")
    from_p5 = lossreg.create_neck("fpn", in_channels=[128, 256, 512], out_channels=32)
    assert from_c5.fpn.extra_blocks.p6.in_channels == 512
    assert from_p5.fpn.extra_blocks.p6.in_channels == 32


def test_errors():
    neck = lossreg.create_neck("fpn", in_channels=[128, 256, 512], out_channels=32)
    with pytest.raises(ValueError, match="expected 3 feature maps"):
        neck(_feats()[:2])
    with pytest.raises(TypeError, match="parameter 'extra'"):
        lossreg.create_neck("fpn", in_channels=[8], extra="p6")
