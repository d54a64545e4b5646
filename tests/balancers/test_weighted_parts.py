"""Balancer.weighted_parts: the total split into its terms (a detector's loss dict)."""

from __future__ import annotations

import pytest
import torch

import lossreg


@pytest.mark.parametrize("name", sorted(lossreg.list_components("balancer")))
def test_parts_sum_to_the_total_with_the_same_gradients(name):
    torch.manual_seed(0)
    balancer = lossreg.create_balancer(name).train()
    twin = lossreg.create_balancer(name).train()
    twin.load_state_dict(balancer.state_dict())
    for _ in range(4):
        raw = torch.rand(3, dtype=torch.float64) + 0.1
        x1, x2 = raw.clone().requires_grad_(), raw.clone().requires_grad_()
        losses1 = {"cls": x1[0] * 2, "reg": x1[1], "quality": x1[2] ** 2}
        losses2 = {"cls": x2[0] * 2, "reg": x2[1], "quality": x2[2] ** 2}
        total, weights = balancer(losses1)
        parts, weights2 = twin.weighted_parts(losses2)
        assert weights == weights2  # one iteration each, the same state
        assert set(parts) - set(losses2) <= {"balancer"}
        for task, w in weights.items():
            assert float(parts[task].detach()) == pytest.approx(w * float(losses2[task].detach()), rel=1e-12)
        summed = sum(parts.values())
        assert float(summed.detach()) == pytest.approx(float(total.detach()), rel=1e-9, abs=1e-12)
        params1, params2 = list(balancer.parameters()), list(twin.parameters())
        grads1 = torch.autograd.grad(total, [x1, *params1], allow_unused=True)
        grads2 = torch.autograd.grad(summed, [x2, *params2], allow_unused=True)
        for g1, g2 in zip(grads1, grads2):
            assert (g1 is None) == (g2 is None)
            if g1 is not None:
                torch.testing.assert_close(g1.double(), g2.double(), rtol=1e-6, atol=1e-9)
    assert torch.equal(balancer.steps, twin.steps)


def test_uncertainty_regulariser_is_its_own_part():
    balancer = lossreg.create_balancer("uncertainty")
    with torch.no_grad():
        balancer.log_vars["cls"].fill_(0.4)
    parts, weights = balancer.weighted_parts({"cls": torch.tensor(2.0), "reg": torch.tensor(0.0), "other": torch.tensor(1.0)})
    assert set(parts) == {"cls", "reg", "other", "balancer"}
    assert float(parts["balancer"].detach()) == pytest.approx(0.5 * 0.4)  # the zero 'reg' loss adds no regulariser
    assert float(parts["cls"].detach()) == pytest.approx(0.5 * torch.exp(torch.tensor(-0.4)).item() * 2.0)
    assert float(parts["other"].detach()) == 1.0 and weights["other"] == 1.0
    with pytest.raises(ValueError, match="reserved"):
        balancer.weighted_parts({"balancer": torch.tensor(1.0)})
