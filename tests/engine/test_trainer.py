"""The training loop on a tiny model: exact resume, the run folder, balancers, schedules, AMP."""

from __future__ import annotations

import json

import pytest
import torch

import lossreg
from lossreg.engine.checkpoint import load_checkpoint
from lossreg.engine.plots import read_metrics
from lossreg.engine.schedule import WarmupSchedule
from lossreg.engine.trainer import Trainer

# a stateful balancer whose per-task buffers appear lazily, EMA and augmentation: all must resume exactly
RESUME = {"balancer": {"name": "dwa", "interval": 2}}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"differ after resuming: {different[:5]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, synthetic_root):
    """A 2-epoch run (3 iterations per epoch) saving an extra checkpoint after iteration 2."""
    from .conftest import make_recipe

    recipe = make_recipe(synthetic_root, model=RESUME, train={"ema": True, "ema_decay": 0.9})
    out = tmp_path_factory.mktemp("uninterrupted")

    def save_at_2(trainer: Trainer) -> None:
        if trainer.iteration == 2:
            trainer.save_checkpoint("iter2")

    trainer = Trainer(recipe, output_dir=out)
    metrics = trainer.train(callbacks=[save_at_2])
    return {"recipe": recipe, "dir": out, "metrics": metrics, "state": _state(trainer.model),
            "ema": _state(trainer.ema.module), "optimizer": trainer.optimizer.state_dict()}


def test_resume_mid_epoch_gives_identical_weights(uninterrupted, tmp_path):
    assert "sum__cls" in " ".join(uninterrupted["state"])  # dwa's lazily created state is in the weights
    trainer = Trainer(uninterrupted["recipe"], output_dir=tmp_path, resume=uninterrupted["dir"] / "checkpoints" / "iter2")
    assert trainer.iteration == 2
    trainer.train()
    assert trainer.iteration == 6
    _assert_same_state(uninterrupted["state"], _state(trainer.model))
    _assert_same_state(uninterrupted["ema"], _state(trainer.ema.module))
    moments = trainer.optimizer.state_dict()["state"]
    assert all(torch.equal(moments[i]["momentum_buffer"], uninterrupted["optimizer"]["state"][i]["momentum_buffer"])
               for i in moments)


def test_stopped_run_resumes_in_its_folder_from_the_epoch_checkpoint(uninterrupted, tmp_path):
    first = Trainer(uninterrupted["recipe"], output_dir=tmp_path)
    assert first.train(max_iterations=4) is None  # stopped early: no final evaluation
    assert not (tmp_path / "metrics.json").exists()
    assert [r["iter"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "train"] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="already holds a training run"):
        Trainer(uninterrupted["recipe"], output_dir=tmp_path)
    resumed = Trainer(uninterrupted["recipe"], output_dir=tmp_path, resume=True)
    assert resumed.iteration == 3  # the last checkpoint is the end of epoch 1; iteration 4 is redone
    metrics = resumed.train()
    _assert_same_state(uninterrupted["state"], _state(resumed.model))
    train_iters = [r["iter"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "train"]
    assert train_iters == [1, 2, 3, 4, 5, 6]  # the history past the checkpoint was dropped, not duplicated
    assert {k: metrics[k] for k in ("AP", "AP50")} == {k: uninterrupted["metrics"][k] for k in ("AP", "AP50")}


def test_run_folder_contents(uninterrupted):
    out = uninterrupted["dir"]
    text = (out / "recipe.yaml").read_text()
    assert text.startswith("# lossreg training run") and "seed 0" in text and f"torch {torch.__version__}" in text
    for lib in ("lossreg", "torchvision", "timm"):
        assert f"{lib} " in text.splitlines()[0]
    recipe = lossreg.load_recipe(out / "recipe.yaml")  # still a loadable recipe
    assert recipe.model.num_classes == 4 and recipe.train.seed == 0 and recipe.model.balancer.name == "dwa"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class", "train_seconds"} <= set(metrics)
    assert all(metrics[k] is None or 0.0 <= metrics[k] <= 1.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
    assert set(metrics["per_class"]) == {"ellipse", "rectangle", "triangle", "cross"}
    assert metrics["train_seconds"] > 0 and metrics["iterations"] == 6
    for name in ("last", "epoch_0001", "epoch_0002", "iter2"):
        assert (out / "checkpoints" / f"{name}.safetensors").is_file() and (out / "checkpoints" / f"{name}.state.pt").is_file()
    assert load_checkpoint(out / "checkpoints" / "epoch_0001")[1]["iteration"] == 3
    for plot in ("losses", "balancer_weights", "lr", "val_ap"):
        assert (out / "plots" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architecture"] == "atss" and config["label_names"] == ["ellipse", "rectangle", "triangle", "cross"]
    assert config["model_args"]["num_classes"] == 4 and config["model_args"]["backbone"] == "test_resnet"
    assert config["lossreg"]["metrics"]["AP"] == metrics["AP"] and (out / "model" / "README.md").is_file()
    rebuilt = lossreg.create_model(f"local-dir:{out / 'model'}")  # the EMA weights, strictly loaded
    assert rebuilt.recipe.train.epochs == 2 and rebuilt.label_names == config["label_names"]
    records = read_metrics(out / "metrics.jsonl")
    train = [r for r in records if r["type"] == "train"]
    assert len(train) == 6 and all(set(r["losses"]) == {"cls", "reg", "quality"} == set(r["weights"]) for r in train)
    assert any(r["weights"]["cls"] != 1.0 for r in train)  # dwa (interval 2) moved the weights
    for r in train:
        assert r["raw_losses"] == pytest.approx({k: r["losses"][k] / r["weights"][k] for k in r["losses"]})
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2] and "per_class" in evals[0]


def test_metrics_json_has_each_epochs_mean_balancer_weight(uninterrupted):
    records = [r for r in read_metrics(uninterrupted["dir"] / "metrics.jsonl") if r["type"] == "train"]
    per_epoch = json.loads((uninterrupted["dir"] / "metrics.json").read_text())["loss_weights_per_epoch"]
    assert per_epoch == uninterrupted["metrics"]["loss_weights_per_epoch"]
    assert set(per_epoch) == set(records[0]["weights"]) and all(len(v) == 2 for v in per_epoch.values())
    for task, means in per_epoch.items():
        for epoch, mean in enumerate(means):
            values = [r["weights"][task] for r in records if r["epoch"] == epoch]
            assert mean == pytest.approx(sum(values) / len(values), abs=1e-6)
    assert len({v for means in per_epoch.values() for v in means}) > 1  # dwa (interval 2) moved the weights


def test_epoch_means_by_hand():
    from lossreg.engine.plots import epoch_means

    records = [
        {"type": "train", "iter": 1, "epoch": 0, "weights": {"cls": 1.0, "reg": 2.0}},
        {"type": "train", "iter": 2, "epoch": 0, "weights": {"cls": 0.5, "reg": None}},
        {"type": "eval", "epoch": 1, "weights": {"cls": 9.0}},  # not a training record
        {"type": "train", "iter": 5, "epoch": 2, "weights": {"cls": 0.25}},
    ]
    assert epoch_means(records) == {"cls": [0.75, None, 0.25], "reg": [2.0, None, None]}
    assert epoch_means([]) == {}


def test_learnable_balancer_parameters_are_optimised(tiny_recipe, tmp_path):
    recipe = tiny_recipe(model={"balancer": "uncertainty"},
                         train={"epochs": 1, "batch_size": 2, "warmup_iters": 0, "log_interval": 1,
                                "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 0.1}})
    trainer = Trainer(recipe, output_dir=tmp_path)
    log_vars = trainer.model.head.balancer.log_vars
    no_decay = trainer.optimizer.param_groups[1]
    assert no_decay["weight_decay"] == 0.0 and {id(p) for p in log_vars.values()} <= {id(p) for p in no_decay["params"]}
    trainer.train(max_iterations=2)
    assert all(float(p.detach()) != 0.0 for p in log_vars.values())
    last = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "train"][-1]
    expected = {k: 0.5 * torch.exp(-p.detach()).item() for k, p in log_vars.items()}
    logged = {k: v for k, v in last["weights"].items() if k in expected}
    assert logged != {k: 0.5 for k in expected}  # the weights moved after one step


def test_adamw_step_schedule_clipping_and_logged_lr(tiny_recipe, tmp_path):
    train = {"epochs": 2, "batch_size": 2, "warmup_iters": 2, "warmup_ratio": 0.1, "schedule": "step", "steps": [1],
             "gamma": 0.5, "grad_clip": 0.01, "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 0.05}}
    trainer = Trainer(tiny_recipe(train=train, data={"val": None}), output_dir=tmp_path)
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    metrics = trainer.train()
    assert metrics["AP"] is None and metrics["train_seconds"] > 0  # no validation split
    train_records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "train"]
    factor = WarmupSchedule("step", 6, 3, warmup_iters=2, warmup_ratio=0.1, steps=[1], gamma=0.5)
    assert [r["lr"] for r in train_records] == pytest.approx([0.001 * factor(i) for i in range(6)])
    assert all(r["grad_norm"] > 0 for r in train_records)


def test_same_seed_same_weights_and_amp_on_cpu(tiny_recipe, tmp_path):
    recipe = tiny_recipe(train={"epochs": 1, "batch_size": 2, "warmup_iters": 1, "seed": 3, "deterministic": True})
    a = Trainer(recipe, output_dir=tmp_path / "a")
    a.train(max_iterations=2)
    b = Trainer(recipe, output_dir=tmp_path / "b")
    b.train(max_iterations=2)
    _assert_same_state(_state(a.model), _state(b.model))
    amp = Trainer(tiny_recipe(train={"epochs": 1, "batch_size": 2, "amp": True}), output_dir=tmp_path / "amp")
    assert amp.amp_dtype == torch.bfloat16 and not amp.scaler.is_enabled()
    record = amp.train_step(*next(iter(amp.loader))[:2])
    assert torch.isfinite(torch.tensor(record["loss"]))


def test_recipe_errors_are_clear(tiny_recipe, tmp_path):
    with pytest.raises(ValueError, match="model.num_classes is 3 but the training set has 4 classes"):
        Trainer(tiny_recipe(model={"num_classes": 3}), output_dir=tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tiny_recipe, tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available"):
        Trainer(tiny_recipe(), output_dir=tmp_path, device="cuda")


def test_a_non_finite_loss_stops_training_with_advice(tiny_recipe, tmp_path):
    trainer = Trainer(tiny_recipe(), output_dir=tmp_path)
    images, targets, _ = next(iter(trainer.loader))
    before = _state(trainer.model)

    class Diverged(torch.nn.Module):
        def forward(self, images, targets):
            trainer.model(images, targets)
            return {"loss_cls": torch.tensor(float("nan"), requires_grad=True)}

    trainer.ddp_model = Diverged()
    with pytest.raises(FloatingPointError, match="the loss is nan at iteration 1 .*lower train.optimizer.lr"):
        trainer.train_step(images, targets)
    after = _state(trainer.model)
    assert all(torch.equal(before[k], after[k]) for k in before if "weight" in k)  # no step was taken


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    from lossreg.engine.checkpoint import save_checkpoint
    from lossreg.engine.trainer import _rng_state, _set_rng_state

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save_checkpoint(tmp_path, "rng", {"w": torch.zeros(1)}, {"rng": _rng_state()})
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    _set_rng_state(load_checkpoint(tmp_path / "rng")[1]["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and [random.random() for _ in range(3)] == expected[2]


def test_default_run_folder_is_named_after_the_recipe(tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = Trainer(tiny_recipe(), progress=False)
    trainer.train(max_iterations=1)
    (run,) = (tmp_path / "runs").iterdir()
    assert run == tmp_path / trainer.run_dir and run.name.startswith("tiny-20")
    assert (run / "recipe.yaml").is_file() and len(read_metrics(run / "metrics.jsonl")) == 1


def test_plots_redrawn_at_evaluations_checkpoints_and_the_end_only(tiny_recipe, tmp_path, monkeypatch):
    """Drawing the plots takes about a second: a short run must not pay it every epoch."""
    from lossreg.engine import trainer as trainer_module

    drawn: list[int] = []
    real = trainer_module.plot_metrics
    monkeypatch.setattr(trainer_module, "plot_metrics", lambda *a, **k: (drawn.append(trainer.iteration), real(*a, **k))[1])
    recipe = tiny_recipe(train={"epochs": 4, "checkpoint_interval": 3}, eval={"batch_size": 3, "interval": 2})
    trainer = Trainer(recipe, output_dir=tmp_path)
    trainer.train()
    # 3 iterations an epoch: evaluation after epoch 2, numbered checkpoint after 3, the end (finish)
    assert drawn == [6, 9, 12]
    assert (tmp_path / "plots" / "losses.png").is_file()
    drawn.clear()
    trainer = Trainer(recipe, output_dir=tmp_path / "timed")
    trainer.plot_every_seconds = 0.0  # between those epochs: at most once per plot_every_seconds
    trainer.train()
    assert drawn == [3, 6, 9, 12, 12]
