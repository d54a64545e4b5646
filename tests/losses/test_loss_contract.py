"""The call convention every registered loss promises (docs/api.md, "Registries and plugins",
"Classification losses" and "Regression losses").

The cases are generated from the registry at collection time, split by
``component_info(...)["task"]``, so a loss registered later is covered by adding
its file, nothing else. A loss that deviates from the convention must say so in
its docstring and be listed in one of the tables below.
"""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lossreg
from lossreg.ops.box_coder import DeltaBoxCoder

ALL = lossreg.list_components("loss")
INFO = {name: lossreg.component_info("loss", name) for name in ALL}
CLS = [n for n in ALL if INFO[n]["task"] == "cls"]
REG = [n for n in ALL if INFO[n]["task"] == "reg"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Documented deviations from docs/api.md, "Classification losses" (each stated in the loss's own docstring):
# normalisation built into the loss, so "mean" ignores avg_factor (GHM's code; DR is an expectation).
AVG_FACTOR_BUILT_IN = {"ghm_c", "hcra_c", "dr"}
# What reduction="none" returns when it is not the [N, C] elements: "rows" [N] (softmax ce),
# "groups" [G] per group (dr: G = 1 with its default batch grouping, the authors' loss).
NONE_SHAPE = {"ce": "rows", "dr": "groups"}

NUM_CLASSES = 3


def _cls(name: str) -> type:
    return lossreg.get_registry("loss").get(name)


def make(name: str, **kwargs) -> torch.nn.Module:
    return lossreg.create_loss(name, **kwargs)


# --------------------------------------------------------------------------- inputs


def num_logits(name: str) -> int:
    """Softmax losses with a background column (``background_column = True``) take C + 1 logits."""
    return NUM_CLASSES + 1 if getattr(_cls(name), "background_column", False) else NUM_CLASSES


def cls_inputs(name: str, n: int = 16, seed: int = 0, scale: float = 2.0) -> dict[str, torch.Tensor]:
    """Logits, labels (every kind: positive, background ``C``, ignored ``-1``) and quality in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, num_logits(name), generator=gen) * scale
    labels = torch.randint(-1, NUM_CLASSES + 1, (n,), generator=gen)
    labels[: min(n, 4)] = torch.tensor([0, 1, NUM_CLASSES, -1])[: min(n, 4)]
    quality = torch.rand(n, generator=gen)
    return {"logits": logits, "labels": labels, "quality": quality}


def box_pairs(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Even rows overlap their target (jittered copies), odd rows are independent boxes."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * 200
    wh = torch.rand(n, 2, generator=gen) * 60 + 4
    target = torch.cat([xy, xy + wh], 1)
    jitter = target + torch.randn(n, 4, generator=gen) * 6
    jitter = torch.cat([jitter[:, :2], torch.maximum(jitter[:, 2:], jitter[:, :2] + 1)], 1)
    xy2 = torch.rand(n, 2, generator=gen) * 300
    other = torch.cat([xy2, xy2 + wh.flip(1)], 1)
    return torch.where(torch.arange(n)[:, None] % 2 == 0, jitter, other), target


def to_loss_space(name: str, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode boxes as deltas for ``space = "delta"`` losses, as a head does (32 x 32 anchors on the targets)."""
    if getattr(_cls(name), "space", "box") != "delta":
        return pred, target
    ctr = (target[:, :2] + target[:, 2:]) / 2
    anchors = torch.cat([ctr - 16, ctr + 16], 1)
    coder = DeltaBoxCoder()
    return coder.encode(anchors, pred), coder.encode(anchors, target)


def reg_inputs(name: str, n: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    pred, target = to_loss_space(name, *box_pairs(n, seed))
    scores = torch.rand(n, generator=torch.Generator().manual_seed(seed + 1))
    return {"pred": pred, "target": target, "scores": scores}


def call(loss: torch.nn.Module, inputs: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
    return loss(**inputs, **kwargs)


def with_grad(inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A copy of ``inputs`` whose prediction (logits or pred) requires grad, and that leaf."""
    key = "logits" if "logits" in inputs else "pred"
    leaf = inputs[key].clone().requires_grad_(True)
    return {**inputs, key: leaf}, leaf


# --------------------------------------------------------------------------- registry metadata


def test_required_losses_are_registered():
    required_cls = {"bce", "focal", "ghm_c", "qfl", "vfl", "dr", "hcra_c", "ce"}
    required_reg = {"l1", "smooth_l1", "iou", "giou", "diou", "ciou", "eiou", "focal_eiou", "alpha_iou", "hcra_r"}
    assert required_reg <= set(REG)
    missing = required_cls - set(CLS)
    if missing:  # written in parallel; the reg half of the contract must not wait for it
        pytest.skip(f"classification losses not registered yet: {sorted(missing)}")


@pytest.mark.parametrize("name", ALL)
def test_metadata_docstring_and_paper(name):
    info = INFO[name]
    assert info["task"] in ("cls", "reg")
    doc = info["doc"]
    assert doc and doc.splitlines()[0].strip(), f"{name}: needs a docstring with a one-line description"
    assert info["paper"], f"{name}: component_info 'paper' is empty"
    assert re.search(r"Paper|\b(19|20)\d\d\b", doc), f"{name}: docstring cites no paper"
    params = info["params"]
    assert params.get("reduction") == "mean" and params.get("loss_weight") == 1.0
    for pname in params:
        if pname not in ("reduction", "loss_weight"):
            assert re.search(rf"\b{re.escape(pname)}\b", doc), f"{name}: docstring does not state {pname!r}"
    assert isinstance(make(name), torch.nn.Module)


@pytest.mark.parametrize("name", sorted(AVG_FACTOR_BUILT_IN | set(NONE_SHAPE)))
def test_deviations_are_documented(name):
    if name not in ALL:
        pytest.skip(f"{name} not registered yet")
    doc = INFO[name]["doc"]
    if name in AVG_FACTOR_BUILT_IN:
        assert "avg_factor" in doc
    if name in NONE_SHAPE:
        assert '"none"' in doc


@pytest.mark.parametrize("name", ALL)
def test_invalid_reduction_raises(name):
    with pytest.raises((ValueError, TypeError), match="reduction"):
        make(name, reduction="avg")


@pytest.mark.parametrize("name", ALL)
def test_state_lives_in_state_dict(name):
    # A training step may change the state; a fresh copy loaded from state_dict must then agree exactly.
    inputs = cls_inputs(name) if name in CLS else reg_inputs(name)
    trained = make(name, reduction="none")
    for seed in range(3):
        call(trained, cls_inputs(name, seed=seed + 10) if name in CLS else reg_inputs(name, seed=seed + 10))
    restored = make(name, reduction="none")
    restored.load_state_dict(trained.state_dict())
    trained.eval()
    restored.eval()
    torch.testing.assert_close(call(restored, inputs), call(trained, inputs), atol=0, rtol=0)


# --------------------------------------------------------------------------- classification


def _cls_expected_none_shape(name: str, n: int) -> tuple[int, ...]:
    kind = NONE_SHAPE.get(name, "elements")
    return {"elements": (n, NUM_CLASSES), "rows": (n,), "groups": (1,)}[kind]


def _cls_mean_denominator(name: str, labels: torch.Tensor) -> float:
    n_valid = int((labels >= 0).sum())
    kind = NONE_SHAPE.get(name, "elements")
    return {"elements": n_valid * NUM_CLASSES, "rows": n_valid, "groups": 1}[kind]


@pytest.mark.parametrize("name", CLS)
def test_cls_reductions(name):
    inputs = cls_inputs(name)
    n, ignored = len(inputs["labels"]), inputs["labels"] < 0
    none = call(make(name, reduction="none"), inputs)
    assert none.shape == _cls_expected_none_shape(name, n)
    if NONE_SHAPE.get(name) != "groups":
        assert (none[ignored] == 0).all(), "ignored rows must be 0 in reduction='none'"
    total = call(make(name, reduction="sum"), inputs)
    torch.testing.assert_close(total, none.sum())
    mean = call(make(name), inputs)
    torch.testing.assert_close(mean, none.sum() / _cls_mean_denominator(name, inputs["labels"]))
    with_avg = call(make(name), inputs, avg_factor=7.0)
    expected = mean if name in AVG_FACTOR_BUILT_IN else none.sum() / 7.0
    torch.testing.assert_close(with_avg, expected)
    torch.testing.assert_close(call(make(name, loss_weight=2.5), inputs), 2.5 * mean)


@pytest.mark.parametrize("name", CLS)
def test_cls_per_sample_weight(name):
    inputs = cls_inputs(name)
    weight = torch.rand(len(inputs["labels"]), generator=torch.Generator().manual_seed(3))
    none = call(make(name, reduction="none"), inputs)
    weighted = call(make(name, reduction="none"), inputs, weight=weight)
    if NONE_SHAPE.get(name) != "groups":  # dr uses weight as a membership mask only (its docstring)
        torch.testing.assert_close(weighted, none * (weight[:, None] if none.dim() == 2 else weight))
    zero, leaf = with_grad(inputs)
    out = call(make(name), zero, weight=torch.zeros_like(weight))
    assert out.item() == 0.0
    out.backward()
    assert torch.isfinite(leaf.grad).all() and (leaf.grad == 0).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", CLS)
def test_cls_empty_input(name, reduction):
    inputs, leaf = with_grad(cls_inputs(name, n=0))
    out = call(make(name, reduction=reduction), inputs)
    assert torch.isfinite(out).all() and (out == 0).all()
    if reduction != "none":
        assert out.requires_grad, "an empty batch must still give a graph-connected 0"
        out.backward()
        assert leaf.grad is not None and leaf.grad.shape == leaf.shape


@pytest.mark.parametrize("name", CLS)
def test_cls_all_ignored(name):
    inputs = cls_inputs(name)
    inputs["labels"] = torch.full_like(inputs["labels"], -1)
    inputs, leaf = with_grad(inputs)
    for reduction in ("mean", "sum"):
        out = call(make(name, reduction=reduction), inputs)
        assert out.item() == 0.0
    out.backward()
    assert (leaf.grad == 0).all()


@pytest.mark.parametrize("name", CLS)
def test_cls_ignored_rows_get_no_gradient(name):
    inputs, leaf = with_grad(cls_inputs(name))
    call(make(name), inputs).backward()
    ignored = inputs["labels"] < 0
    assert (leaf.grad[ignored] == 0).all() and leaf.grad[~ignored].abs().sum() > 0


@pytest.mark.parametrize("name", CLS)
def test_cls_extreme_logits_are_finite(name):
    inputs = cls_inputs(name, n=24)
    signs = torch.where(torch.arange(inputs["logits"].numel()) % 3 == 0, -1.0, 1.0).view_as(inputs["logits"])
    inputs["logits"] = 100.0 * signs  # saturated both ways, right and wrong
    inputs["quality"][::2] = torch.tensor([0.0, 1.0]).repeat(6)  # quality at its bounds too
    for reduction in ("mean", "none"):
        batch, leaf = with_grad(inputs)
        out = call(make(name, reduction=reduction), batch)
        assert torch.isfinite(out).all()
        out.sum().backward()
        assert torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("name", CLS)
def test_cls_bf16_autocast_computes_in_fp32(name):
    inputs = cls_inputs(name)
    low = {**inputs, "logits": inputs["logits"].bfloat16()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = call(make(name), low)
    assert out.dtype == torch.float32
    reference = call(make(name), {**inputs, "logits": low["logits"].float()})
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, call(make(name), inputs), rtol=5e-2, atol=1e-3)


@pytest.mark.parametrize("name", CLS)
def test_cls_quality_contract(name):
    inputs = cls_inputs(name)
    if getattr(_cls(name), "uses_quality", False):
        with pytest.raises(ValueError, match="quality"):
            call(make(name), {**inputs, "quality": None})
    else:  # losses that do not use quality ignore it
        torch.testing.assert_close(call(make(name), {**inputs, "quality": None}), call(make(name), inputs))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 12), scale=st.floats(0.1, 30))
def test_cls_losses_finite_and_non_negative(seed, n, scale):
    for name in CLS:
        out = call(make(name, reduction="none"), cls_inputs(name, n=n, seed=seed, scale=scale))
        assert torch.isfinite(out).all() and (out >= 0).all(), name


# --------------------------------------------------------------------------- regression


@pytest.mark.parametrize("name", REG)
def test_reg_space_and_scores_contract(name):
    cls = _cls(name)
    assert getattr(cls, "space", None) in ("box", "delta")
    inputs = reg_inputs(name)
    if getattr(cls, "uses_scores", False):
        with pytest.raises(ValueError, match="scores"):
            call(make(name), {**inputs, "scores": None})
    else:
        torch.testing.assert_close(call(make(name), {**inputs, "scores": None}), call(make(name), inputs))


@pytest.mark.parametrize("name", REG)
def test_reg_reductions(name):
    inputs = reg_inputs(name)
    none = call(make(name, reduction="none"), inputs)
    assert none.shape == (len(inputs["pred"]),)
    torch.testing.assert_close(call(make(name, reduction="sum"), inputs), none.sum())
    torch.testing.assert_close(call(make(name), inputs), none.mean())
    torch.testing.assert_close(call(make(name), inputs, avg_factor=5.0), none.sum() / 5.0)
    torch.testing.assert_close(call(make(name), inputs, avg_factor=torch.tensor(5.0)), none.sum() / 5.0)
    torch.testing.assert_close(call(make(name, loss_weight=2.5), inputs), 2.5 * none.mean())


@pytest.mark.parametrize("name", REG)
def test_reg_weights(name):
    inputs = reg_inputs(name)
    weight = torch.rand(len(inputs["pred"]), generator=torch.Generator().manual_seed(4))
    none = call(make(name, reduction="none"), inputs)
    torch.testing.assert_close(call(make(name, reduction="none"), inputs, weight=weight), none * weight)
    batch, leaf = with_grad(inputs)
    out = call(make(name), batch, weight=torch.zeros_like(weight))
    assert out.item() == 0.0
    out.backward()
    assert (leaf.grad == 0).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", REG)
def test_reg_empty_input(name, reduction):
    inputs, leaf = with_grad(reg_inputs(name, n=0))
    loss = make(name, reduction=reduction)
    out = call(loss, inputs)
    assert out.shape == ((0,) if reduction == "none" else ())
    assert torch.isfinite(out).all() and (out == 0).all()
    if reduction != "none":
        assert out.requires_grad
        out.backward()
        assert leaf.grad is not None and leaf.grad.shape == (0, 4)
    for buf in loss.buffers():
        assert torch.isfinite(buf).all(), "an empty batch must not poison running statistics"


DEGENERATE = {
    # name: (pred boxes, target boxes)
    "zero_width": ([[10.0, 10, 10, 30]], [[5.0, 5, 20, 40]]),
    "zero_height": ([[10.0, 10, 30, 10]], [[5.0, 5, 20, 40]]),
    "zero_area_target": ([[10.0, 10, 30, 30]], [[20.0, 20, 20, 20]]),
    "both_points": ([[7.0, 7, 7, 7]], [[7.0, 7, 7, 7]]),
    "identical": ([[3.0, 4, 50, 60]], [[3.0, 4, 50, 60]]),
    "far_apart": ([[0.0, 0, 1, 1]], [[1e5, 1e5, 1e5 + 1, 1e5 + 1]]),
    "huge": ([[0.0, 0, 1e6, 1e6]], [[1.0, 1, 2, 2]]),
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("name", REG)
def test_reg_degenerate_boxes_finite(name, case):
    pred, target = (torch.tensor(x) for x in DEGENERATE[case])
    pred, target = to_loss_space(name, pred, target)
    batch, leaf = with_grad({"pred": pred, "target": target, "scores": torch.tensor([0.7])})
    out = call(make(name, reduction="none"), batch)
    assert torch.isfinite(out).all() and (out >= -1e-6).all(), f"{name} on {case}: {out}"
    out.sum().backward()
    assert torch.isfinite(leaf.grad).all(), f"{name} on {case}: gradient {leaf.grad}"
    if case == "identical":
        torch.testing.assert_close(out, torch.zeros_like(out), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", REG)
def test_reg_perfect_prediction_is_not_beaten(name):
    inputs = reg_inputs(name)
    perfect = call(make(name, reduction="none"), {**inputs, "pred": inputs["target"]})
    other = call(make(name, reduction="none"), inputs)
    assert (perfect <= other + 1e-6).all()


@pytest.mark.parametrize("name", REG)
def test_reg_bf16_autocast_computes_in_fp32(name):
    inputs = reg_inputs(name, n=64)
    low = {**inputs, "pred": inputs["pred"].bfloat16(), "target": inputs["target"].bfloat16()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = call(make(name), low)
    assert out.dtype == torch.float32
    reference = call(make(name), {**low, "pred": low["pred"].float(), "target": low["target"].float()})
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, call(make(name), inputs), rtol=5e-2, atol=1e-2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", REG)
def test_reg_runs_on_device(name, device):
    inputs = {k: v.to(device) for k, v in reg_inputs(name).items()}
    batch, leaf = with_grad(inputs)
    out = call(make(name).to(device), batch)
    assert out.device.type == device
    out.backward()
    assert torch.isfinite(leaf.grad).all()


_coord = st.floats(-500, 500, allow_nan=False, width=32)
_size = st.floats(0, 300, allow_nan=False, width=32)  # zero sizes included: degenerate boxes
_box = st.tuples(_coord, _coord, _size, _size).map(lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]])


@settings(max_examples=30, deadline=None)
@given(pairs=st.lists(st.tuples(_box, _box), min_size=1, max_size=8), score=st.floats(0, 1))
def test_reg_losses_finite_and_non_negative(pairs, score):
    pred = torch.tensor([p for p, _ in pairs])
    target = torch.tensor([t for _, t in pairs])
    for name in REG:
        p, t = to_loss_space(name, pred, target)
        out = call(make(name, reduction="none"), {"pred": p, "target": t, "scores": torch.full((len(p),), score)})
        assert torch.isfinite(out).all() and (out >= -1e-6).all(), f"{name}: {out}"
