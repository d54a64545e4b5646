"""Anchor and point grids: hand-computed anchors and the (row, column, anchor) order heads rely on."""

from __future__ import annotations

import math

import torch

from lossreg.heads.dense import _flatten
from lossreg.ops.anchors import AnchorGenerator, grid_points


def test_atss_square_anchors_hand_computed():
    gen = AnchorGenerator(strides=(8, 16), ratios=(1.0,), octave_base_scale=8, scales_per_octave=1)
    anchors, sizes = gen.grid_anchors([(2, 3), (1, 2)])
    assert sizes == [6, 2] and gen.num_anchors == 1
    # level 0: 64 px squares centred at x in {0, 8, 16}, y in {0, 8}, row-major
    assert anchors[0].tolist() == [-32, -32, 32, 32]
    assert anchors[1].tolist() == [-24, -32, 40, 32]
    assert anchors[3].tolist() == [-32, -24, 32, 40]
    # level 1: 128 px squares at stride 16
    assert anchors[7].tolist() == [-48, -64, 80, 64]


def test_retina_anchor_shapes_hand_computed():
    gen = AnchorGenerator(strides=(8,), ratios=(0.5, 1.0, 2.0), octave_base_scale=4, scales_per_octave=3)
    base = gen.base_anchors(8)
    assert base.shape == (9, 4)
    side = 32 * 2 ** (1 / 3)  # ratio 1, second octave scale
    assert torch.allclose(base[4], torch.tensor([-side / 2, -side / 2, side / 2, side / 2]))
    # ratio 0.5 = h / w: a wide box of the same area 32^2
    w, h = 32 / math.sqrt(0.5), 32 * math.sqrt(0.5)
    assert torch.allclose(base[0], torch.tensor([-w / 2, -h / 2, w / 2, h / 2]))
    areas = (base[:, 2] - base[:, 0]) * (base[:, 3] - base[:, 1])
    assert torch.allclose(areas[0::3], torch.full((3,), 32.0**2))


def test_flatten_order_matches_anchor_order():
    a, k, h, w = 3, 2, 2, 4
    gen = AnchorGenerator(strides=(8,), ratios=(0.5, 1.0, 2.0), octave_base_scale=4, scales_per_octave=1)
    anchors, _ = gen.grid_anchors([(h, w)])
    # a head output whose value encodes (anchor, channel, row, column)
    out = torch.zeros(1, a * k, h, w)
    for ai in range(a):
        for ki in range(k):
            for y in range(h):
                for x in range(w):
                    out[0, ai * k + ki, y, x] = ai * 1000 + ki * 100 + y * 10 + x
    flat = _flatten([out], k)[0]
    for idx in range(h * w * a):
        value = int(flat[idx, 1])
        ai, y, x = value // 1000, (value // 10) % 10, value % 10
        assert (value // 100) % 10 == 1  # channel 1
        cx = (anchors[idx, 0] + anchors[idx, 2]) / 2
        cy = (anchors[idx, 1] + anchors[idx, 3]) / 2
        assert (cx, cy) == (x * 8, y * 8)
        assert torch.allclose(anchors[idx] - torch.tensor([cx, cy, cx, cy]), gen.base_anchors(8)[ai])


def test_points_with_offset_and_cache():
    pts = grid_points(2, 2, 16, 0.5)
    assert pts.tolist() == [[8, 8], [24, 8], [8, 24], [24, 24]]
    gen = AnchorGenerator(strides=(8,), ratios=(1.0,), octave_base_scale=8, scales_per_octave=1)
    first, _ = gen.grid_anchors([(4, 4)])
    assert gen.grid_anchors([(4, 4)])[0] is first
