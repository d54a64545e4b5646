"""DeltaBoxCoder: hand-computed deltas, round trip, torchvision equivalence, clamping, dtypes."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from lossreg.ops.box_coder import DEFAULT_WH_CLIP, DeltaBoxCoder


def random_boxes(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * 500
    # Sizes within a factor 25 of each other, inside the decode clamp (1000 / 16 = 62.5), so round trips are exact.
    wh = torch.rand(n, 2, generator=generator, dtype=dtype) * 192 + 8
    return torch.cat([xy, xy + wh], 1)


def test_hand_computed_encoding():
    # Anchor centre (5, 5), size 10 x 10; box centre (15, 10), size 20 x 10:
    # dx = 10 / 10 = 1, dy = 5 / 10 = 0.5, dw = log(20 / 10) = log 2, dh = log 1 = 0.
    anchor = torch.tensor([[0.0, 0, 10, 10]])
    box = torch.tensor([[5.0, 5, 25, 15]])
    torch.testing.assert_close(DeltaBoxCoder().encode(anchor, box), torch.tensor([[1.0, 0.5, math.log(2), 0.0]]))
    # stds (0.1, 0.1, 0.2, 0.2) divide, means subtract first.
    coder = DeltaBoxCoder(means=(0.5, 0, 0, 0), stds=(0.1, 0.1, 0.2, 0.2))
    torch.testing.assert_close(coder.encode(anchor, box), torch.tensor([[5.0, 5.0, 5 * math.log(2), 0.0]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "means,stds", [((0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 1.0, 1.0)), ((0.1, -0.2, 0.05, 0.0), (0.1, 0.1, 0.2, 0.2))]
)
def test_round_trip(dtype, means, stds):
    gen = torch.Generator().manual_seed(0)
    anchors, boxes = random_boxes(500, gen, dtype), random_boxes(500, gen, dtype)
    coder = DeltaBoxCoder(means=means, stds=stds)
    deltas = coder.encode(anchors, boxes)
    assert deltas.dtype == dtype and deltas.shape == (500, 4)
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(coder.decode(anchors, deltas), boxes, atol=tol, rtol=0)


def test_matches_torchvision_box_coder_weights():
    gen = torch.Generator().manual_seed(1)
    anchors, boxes = random_boxes(300, gen), random_boxes(300, gen)
    ours = DeltaBoxCoder(stds=(0.1, 0.1, 0.2, 0.2))
    tv = TorchvisionBoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(ours.encode(anchors, boxes), tv.encode_single(boxes, anchors), atol=1e-4, rtol=1e-5)
    deltas = torch.randn(300, 4, generator=gen)
    torch.testing.assert_close(ours.decode(anchors, deltas), tv.decode_single(deltas, anchors), atol=1e-3, rtol=1e-5)


def test_decode_clamps_dw_dh_like_torchvision():
    anchor = torch.tensor([[0.0, 0, 16, 16]])
    huge = torch.tensor([[0.0, 0, 1e4, -1e4]])
    box = DeltaBoxCoder().decode(anchor, huge)
    assert torch.isfinite(box).all()
    # dw clamps at log(1000 / 16): width 16 * 1000 / 16 = 1000; dh = -1e4 is not clamped, height -> 0.
    torch.testing.assert_close(box[0, 2] - box[0, 0], torch.tensor(1000.0), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(box[0, 3] - box[0, 1], torch.tensor(0.0))
    assert math.isclose(DEFAULT_WH_CLIP, math.log(1000 / 16))


def test_degenerate_target_encodes_finite():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    boxes = torch.tensor([[3.0, 3, 3, 3], [2, 2, 8, 2]])
    deltas = DeltaBoxCoder().encode(anchors, boxes)
    assert torch.isfinite(deltas).all()
    # The centre offset is exact even when the size is clamped: centre (3, 3) vs (5, 5).
    torch.testing.assert_close(deltas[0, :2], torch.tensor([-0.2, -0.2]))


def test_broadcasting_and_gradient_through_decode():
    gen = torch.Generator().manual_seed(2)
    anchors = random_boxes(7, gen)
    deltas = torch.randn(3, 7, 4, generator=gen, requires_grad=True)
    boxes = DeltaBoxCoder().decode(anchors, deltas)
    assert boxes.shape == (3, 7, 4)
    boxes.sum().backward()
    assert torch.isfinite(deltas.grad).all() and deltas.grad.abs().sum() > 0
    torch.testing.assert_close(DeltaBoxCoder().encode(anchors, boxes.detach()), deltas.detach(), atol=1e-4, rtol=1e-4)


def test_half_inputs_compute_in_float32():
    anchors = torch.tensor([[0.0, 0, 100, 100]], dtype=torch.bfloat16)
    deltas = torch.tensor([[0.1, 0.2, 0.3, -0.3]], dtype=torch.bfloat16)
    out = DeltaBoxCoder().decode(anchors, deltas)
    assert out.dtype == torch.float32
    expected = DeltaBoxCoder().decode(anchors.float(), deltas.float())
    torch.testing.assert_close(out, expected)


def test_invalid_parameters():
    with pytest.raises(ValueError, match="4 values"):
        DeltaBoxCoder(means=(0.0, 0.0))
    with pytest.raises(ValueError, match="positive"):
        DeltaBoxCoder(stds=(1.0, 1.0, 0.0, 1.0))
