"""lossreg.ops.norm.GroupNorm: nn.GroupNorm's values, and single-value groups normalised instead of refused."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lossreg
from lossreg.ops.norm import GroupNorm


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 3),
    groups=st.sampled_from([1, 2, 4]),
    per_group=st.integers(1, 3),
    side=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_equals_torch_group_norm_where_groups_hold_several_values(batch, groups, per_group, side, seed):
    if per_group * side * side == 1:
        return  # one value per group: the next test
    torch.manual_seed(seed)
    ref = nn.GroupNorm(groups, groups * per_group)
    nn.init.normal_(ref.weight)
    nn.init.normal_(ref.bias)
    ours = GroupNorm(groups, groups * per_group)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(batch, groups * per_group, side, side, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    a, b = ref(x), ours(x2)
    torch.testing.assert_close(b, a)
    a.square().sum().backward()
    b.square().sum().backward()
    torch.testing.assert_close(x2.grad, x.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)


def test_single_value_groups_give_the_bias():
    ref = nn.GroupNorm(4, 4)
    with pytest.raises(ValueError, match="more than 1 value"):
        ref(torch.randn(1, 4, 1, 1))
    norm = GroupNorm(4, 4)
    nn.init.normal_(norm.bias)
    for batch in (1, 3):  # torch accepts a batch of 3, with its rounding noise; ours is exact
        x = (1e3 * torch.randn(batch, 4, 1, 1)).requires_grad_()
        out = norm(x)
        assert torch.equal(out, norm.bias.detach().view(1, 4, 1, 1).expand(batch, 4, 1, 1))
        out.sum().backward()
        assert torch.equal(x.grad, torch.zeros_like(x))
    assert torch.equal(GroupNorm(2, 2, affine=False)(torch.randn(2, 2, 1)), torch.zeros(2, 2, 1))
    with pytest.raises(ValueError, match=r"\[N, C, \.\.\.\]"):
        norm(torch.randn(4))


def test_head_with_one_channel_per_group_predicts_on_a_one_by_one_level():
    # 32 channels -> GroupNorm(32, 32); a 96 px image gives a 1 x 1 map at stride 128 (P7)
    model = lossreg.create_model(
        "atss_resnet50_fpn", backbone="test_resnet", num_classes=3,
        neck={"name": "fpn", "out_channels": 32}, head={"feat_channels": 32},
    ).eval()
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(isinstance(m, GroupNorm) and m.num_groups == m.num_channels == 32 for m in norms)
    with torch.inference_mode():
        (out,) = model([torch.rand(3, 96, 96)])
    assert set(out) >= {"boxes", "scores", "labels"} and torch.isfinite(out["scores"]).all()
