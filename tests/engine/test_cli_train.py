"""`lossreg train`: a run from the command line, resuming by checkpoint path, one-line errors, DDP on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from lossreg.cli import main
from lossreg.engine.checkpoint import load_checkpoint
from lossreg.engine.plots import read_metrics
from lossreg.engine.schedule import WarmupSchedule


@pytest.fixture
def recipe_file(tiny_recipe, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(train={"epochs": 1, "batch_size": 2, "warmup_iters": 1, "schedule": "cosine"})))
    return path


def test_train_then_extend_by_resuming_from_a_checkpoint_path(recipe_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(recipe_file), "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"{out / 'metrics.json'}: AP=" in printed
    final = json.loads((out / "metrics.json").read_text())
    assert final["iterations"] == 3
    # `lossreg eval` of the run's model/ reproduces the final evaluation (no EMA: the same weights)
    assert main(["eval", str(out), "--output", str(tmp_path / "ev")]) == 0
    assert f"AP50   {final['AP50']:.4f}" in capsys.readouterr().out
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {k: evaluated[k] for k in ("AP", "AP50", "per_class")} == {k: final[k] for k in ("AP", "AP50", "per_class")}
    # --resume PATH finds the run folder itself; the recipe now asks for 2 epochs
    assert main(["train", str(recipe_file), "--resume", str(out / "checkpoints" / "last.safetensors"),
                 "--set", "train.epochs=2"]) == 0
    assert json.loads((out / "metrics.json").read_text())["iterations"] == 6
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "train"]
    assert [r["iter"] for r in train] == [1, 2, 3, 4, 5, 6]
    factor = WarmupSchedule("cosine", total_iters=6, iters_per_epoch=3, warmup_iters=1)
    assert [r["lr"] for r in train[3:]] == pytest.approx([0.01 * factor(i) for i in (3, 4, 5)])  # the new schedule
    assert load_checkpoint(out / "checkpoints" / "epoch_0002")[1]["iteration"] == 6


def test_train_errors_are_one_line(recipe_file, tmp_path, capsys):
    assert main(["train", str(recipe_file), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lossreg train: error: --resume without a PATH continues the run in --output DIR; give one of them"
    assert main(["train", str(recipe_file), "--set", "train.epochs=many", "--output", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("lossreg train: error: train.epochs: expected int, got str 'many'")
    assert main(["train", str(recipe_file), "--resume", str(tmp_path / "nothing"), "--output", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lossreg train: error: no checkpoint at") and "\n" not in err
    assert main(["eval", str(recipe_file), "--weights", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("lossreg eval: error: no weights at")


def test_train_help_describes_the_run_folder(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for piece in ("--output", "--resume", "--set", "--device", "metrics.json", "checkpoints/", "torchrun"):
        assert piece in text


def test_torchrun_two_cpu_processes(tiny_recipe, tmp_path):
    recipe = tiny_recipe(train={"epochs": 1, "batch_size": 4, "warmup_iters": 1})  # 2 images per process
    recipe["data"]["train"]["params"]["num_images"] = 8
    recipe["model"]["balancer"] = {"name": "dwa", "interval": 1}  # lazily created balancer state under DDP
    recipe["train"]["sync_bn"] = True  # SyncBatchNorm on the CPU (engine/sync_bn.py)
    recipe["data"]["val"]["params"]["num_images"] = 4  # sharded evaluation: 2 images per process
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    work = tmp_path / "cwd"
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lossreg", "train", str(path), "--output", "out", "--no-progress"]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 processes" in proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["out"]  # one run folder, nothing else written
    out = work / "out"
    assert proc.stdout.count("metrics.json: AP=") == 1  # only rank 0 reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 2  # 8 images, 4 per iteration: each process saw its half
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "train"]
    assert [r["iter"] for r in train] == [1, 2]  # written once, by rank 0
    assert load_checkpoint(out / "checkpoints" / "last")[1]["world_size"] == 2
    assert not list((out / "checkpoints").glob("*.pending"))
    # the evaluation was sharded over the 2 processes and gathered: one process scoring model/ agrees
    from safetensors.torch import load_file

    from lossreg._factory import build_from_recipe
    from lossreg.data import build_dataset
    from lossreg.engine.evaluate import evaluate
    from lossreg.recipe import load_recipe

    run_recipe = load_recipe(out / "recipe.yaml")
    val = build_dataset(run_recipe.data.val, run_recipe.data, train=False)
    model = build_from_recipe(run_recipe, label_names=list(val.class_names))
    model.load_state_dict(load_file(str(out / "model" / "model.safetensors")))  # dwa's lazy state: not via config.json
    single = evaluate(model, val, batch_size=2)  # 2 per batch, as each process had (GroupNorm on 1x1 maps needs 2)
    assert {k: single[k] for k in ("AP", "AP50", "per_class")} == {k: metrics[k] for k in ("AP", "AP50", "per_class")}
