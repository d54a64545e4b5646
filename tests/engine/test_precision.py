"""train.amp / train.channels_last resolution, and what the trainer does with them."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lossreg.engine import precision
from lossreg.engine.precision import resolve_precision


@pytest.fixture
def native_bf16(monkeypatch):
    def set_(value: bool) -> None:
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: value)

    return set_


def test_auto_on_a_cpu_follows_native_bf16(native_bf16):
    native_bf16(True)
    p = resolve_precision("auto", "cpu")
    assert p.dtype is torch.bfloat16 and not p.grad_scaler and not p.channels_last and "native" in p.reason
    native_bf16(False)
    p = resolve_precision("auto", "cpu")
    assert p.dtype is None and p.name == "fp32" and not p.autocast


def test_forced_bf16_on_a_cpu_without_native_bf16_warns(native_bf16, caplog):
    native_bf16(False)
    with caplog.at_level("WARNING", logger="lossreg.engine.precision"):
        p = resolve_precision("bf16", "cpu")
    assert p.dtype is torch.bfloat16 and "emulated" in p.reason
    assert any("without native bfloat16" in r.getMessage() for r in caplog.records)
    caplog.clear()
    native_bf16(True)
    with caplog.at_level("WARNING", logger="lossreg.engine.precision"):
        p = resolve_precision("bf16", "cpu")
    assert p.dtype is torch.bfloat16 and "emulated" not in p.reason and not caplog.records


def test_auto_on_cuda(monkeypatch):
    monkeypatch.setattr(precision, "_cuda_bf16", lambda device: True)
    p = resolve_precision("auto", "cuda")
    assert p.dtype is torch.bfloat16 and not p.grad_scaler and p.channels_last
    monkeypatch.setattr(precision, "_cuda_bf16", lambda device: False)
    p = resolve_precision("auto", "cuda")
    assert p.dtype is torch.float16 and p.grad_scaler  # older GPUs: fp16 needs the scaler


@pytest.mark.parametrize(
    ("amp", "device", "dtype", "scaler"),
    [
        ("bf16", "cpu", torch.bfloat16, False),
        ("fp16", "cuda", torch.float16, True),
        ("fp16", "cpu", torch.float16, False),  # no GradScaler off CUDA
        ("fp32", "cuda", None, False),
        (True, "cpu", torch.bfloat16, False),  # the old boolean switch keeps its meaning
        (True, "cuda", torch.float16, True),
        (False, "cuda", None, False),
    ],
)
def test_explicit_settings(amp, device, dtype, scaler):
    p = resolve_precision(amp, device)
    assert p.dtype is dtype and p.grad_scaler is scaler


def test_channels_last_setting():
    assert resolve_precision("fp32", "cpu", True).channels_last
    assert not resolve_precision("fp32", "cuda", False).channels_last
    with pytest.raises(ValueError, match="train.channels_last must be auto, true or false"):
        resolve_precision("fp32", "cpu", "yes")
    with pytest.raises(ValueError, match="train.amp must be one of auto, bf16, fp16, fp32"):
        resolve_precision("half", "cpu")


def test_cpu_flags_are_read(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16\n")
    precision.cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(precision, "Path", lambda _: info)
    try:
        assert precision.cpu_has_native_bf16()
        info.write_text("processor : 0\nflags : fpu sse avx2\n")
        precision.cpu_has_native_bf16.cache_clear()
        assert not precision.cpu_has_native_bf16()
    finally:
        precision.cpu_has_native_bf16.cache_clear()


def test_recipe_accepts_the_settings():
    import lossreg

    recipe = lossreg.load_recipe("quickstart", overrides=["train.amp=bf16", "train.channels_last=true"])
    assert recipe.train.amp == "bf16" and recipe.train.channels_last is True
    assert lossreg.load_recipe("quickstart").train.amp == "auto"
    with pytest.raises(lossreg.RecipeError, match="train.amp"):
        lossreg.load_recipe("quickstart", overrides=["train.amp=half"])


def test_trainer_runs_bf16_channels_last(synthetic_root, tmp_path):
    from lossreg.engine.trainer import Trainer

    from .conftest import make_recipe

    recipe = make_recipe(synthetic_root, train={"amp": "bf16", "channels_last": True, "epochs": 1})
    trainer = Trainer(recipe, output_dir=tmp_path, progress=False)
    assert trainer.precision.dtype is torch.bfloat16 and trainer.amp
    convs = [m.weight for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    trainer.train(max_iterations=2)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["type"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert all(p.dtype is torch.float32 for p in trainer.model.parameters())  # autocast: weights stay fp32
