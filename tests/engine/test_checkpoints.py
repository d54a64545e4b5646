"""Checkpoints people can manage: train.keep_last, the best checkpoint by a metric, resuming a finished run."""

from __future__ import annotations

import json

import pytest

import lossreg
from lossreg.cli import main
from lossreg.engine.checkpoint import load_checkpoint
from lossreg.engine.evaluate import METRIC_KEYS
from lossreg.engine.runs import RunFolder
from lossreg.engine.trainer import Trainer


def _recipe(tiny_recipe, **train):
    recipe = tiny_recipe(train={"epochs": 3, "batch_size": 2, "warmup_iters": 1, "checkpoint_interval": 1, **train})
    recipe["data"]["train"]["params"]["num_images"] = 2  # one iteration per epoch
    return recipe


def _scripted(monkeypatch, values):
    """Trainer.evaluate returns AP = values[k] at its k-th call."""
    calls = iter(values)

    def fake(self):
        if not self.is_main:
            return None
        ap = next(calls)
        return {**{k: ap for k in METRIC_KEYS}, "per_class": {}}

    monkeypatch.setattr(Trainer, "evaluate", fake)


def test_keep_last_and_best_checkpoint(tiny_recipe, tmp_path, monkeypatch):
    _scripted(monkeypatch, [0.1, 0.3, 0.2])  # epochs 1, 2 and the final evaluation
    out = tmp_path / "run"
    metrics = Trainer(_recipe(tiny_recipe, keep_last=1, best_metric="AP"), output_dir=out).train()
    run = RunFolder(out)
    assert [epoch for epoch, _ in run.epoch_checkpoints()] == [3]  # epochs 1 and 2 pruned
    names = sorted(p.name for p in run.checkpoints.iterdir())
    assert names == ["best.safetensors", "best.state.pt", "epoch_0003.safetensors", "epoch_0003.state.pt",
                     "last.safetensors", "last.state.pt"]
    assert load_checkpoint(run.best_checkpoint)[1]["iteration"] == 2  # the epoch-2 evaluation was the best
    assert metrics["best"] == {"metric": "AP", "value": 0.3, "epoch": 2, "iteration": 2}
    assert json.loads(run.metrics.read_text())["best"]["epoch"] == 2


def test_the_final_evaluation_can_be_the_best_and_keep_last_null_keeps_all(tiny_recipe, tmp_path, monkeypatch):
    _scripted(monkeypatch, [0.1, 0.2, 0.3])
    out = tmp_path / "run"
    Trainer(_recipe(tiny_recipe, best_metric="AP50"), output_dir=out).train()
    run = RunFolder(out)
    assert [epoch for epoch, _ in run.epoch_checkpoints()] == [1, 2, 3]
    best = run.best_checkpoint.with_suffix(".safetensors")
    assert best.samefile(run.last_checkpoint.with_suffix(".safetensors"))  # a hard link: no extra space
    assert json.loads(run.metrics.read_text())["best"] == {"metric": "AP50", "value": 0.3, "epoch": 3, "iteration": 3}


def test_resuming_a_finished_run_leaves_it_untouched(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "run"
    recipe = _recipe(tiny_recipe, epochs=1)
    first = Trainer(recipe, output_dir=out).train()

    def snapshot():
        return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}

    before = snapshot()
    trainer = Trainer(recipe, output_dir=out, resume=True)
    assert trainer.finished_before
    assert trainer.train() == first
    assert snapshot() == before  # metrics.json, metrics.jsonl, recipe.yaml, model/, plots: not rewritten
    path = tmp_path / "tiny.yaml"
    import yaml

    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path), "--output", str(out), "--resume", "--no-progress"]) == 0
    assert f"{out / 'metrics.json'}: AP=" in capsys.readouterr().out
    assert snapshot() == before


def test_keep_last_must_be_positive(tiny_recipe):
    with pytest.raises(lossreg.RecipeError, match="train.keep_last"):
        lossreg.load_recipe(_recipe(tiny_recipe, keep_last=0))
    with pytest.raises(lossreg.RecipeError, match="train.best_metric"):
        lossreg.load_recipe(_recipe(tiny_recipe, best_metric="mAP"))


def test_eval_of_a_checkpoint_says_its_weights_are_not_the_ema(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "run"
    recipe = _recipe(tiny_recipe, epochs=1, ema=True, ema_decay=0.5)
    recipe["data"]["val"]["params"]["num_images"] = 2
    Trainer(recipe, output_dir=out).train()
    capsys.readouterr()
    assert main(["eval", str(out), "--weights", str(out / "checkpoints" / "last"), "--output", str(tmp_path / "e")]) == 0
    printed = capsys.readouterr().out
    assert "holds the raw trained weights" in printed and "model/ holds their exponential moving average" in printed
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["weights_ema"] is False
    assert main(["eval", str(out), "--output", str(tmp_path / "f")]) == 0  # model/: the EMA weights, no note
    assert "raw trained weights" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "not the EMA average" in " ".join(capsys.readouterr().out.split())  # --help says so too
