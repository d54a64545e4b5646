"""train.tensorboard: every task loss, balancer weight, the learning rate and validation metrics as TensorBoard scalars."""

from __future__ import annotations

import pytest

from lossreg.engine.plots import read_metrics
from lossreg.engine.trainer import Trainer

pytest.importorskip("tensorboard")


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_beside_metrics_jsonl(tiny_recipe, tmp_path):
    recipe = tiny_recipe(model={"balancer": "uncertainty"}, train={"epochs": 1, "tensorboard": True})
    calls = []
    trainer = Trainer(recipe, output_dir=tmp_path)
    trainer.train(callbacks=[lambda t: calls.append(t.last_record["iter"])])
    assert calls == [1, 2, 3]  # user callbacks still run, after the writer
    scalars = _scalars(tmp_path / "tensorboard")
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "train"]  # metrics.jsonl stays
    assert [s for s, _ in scalars["loss"]] == [r["iter"] for r in records] == [1, 2, 3]
    for task in ("cls", "reg", "quality", "balancer"):
        assert [v for _, v in scalars[f"loss/{task}"]] == pytest.approx([r["losses"][task] for r in records])
    for task in ("cls", "reg", "quality"):
        assert [v for _, v in scalars[f"weight/{task}"]] == pytest.approx([r["weights"][task] for r in records])
        assert f"raw_loss/{task}" in scalars
    assert [v for _, v in scalars["lr"]] == pytest.approx([r["lr"] for r in records])
    final = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "eval"][-1]
    for key in ("AP", "AP50", "AP75"):
        assert scalars[f"val/{key}"] == [(3, pytest.approx(final[key]))]
    assert any(tag.startswith("val/AP_per_class/") for tag in scalars)
