"""Two CPU processes under torchrun equal one process holding the whole batch.

DDP with the heads' normaliser (avg_factor summed over the ranks) and ``train.sync_bn``
(batch statistics over the ranks) trains the weights of one process with the whole
batch, trained batch norm included; with ``train.accumulate`` too (frozen batch norm).
The quicker 2-process test of the command line (sharded evaluation, SyncBatchNorm on
the CPU) is ``tests/engine/test_cli_train.py::test_torchrun_two_cpu_processes``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lossreg.engine.trainer import Trainer

WORKER = Path(__file__).with_name("ddp_worker.py")


def _recipe(tiny_recipe, **train):
    recipe = tiny_recipe(
        data={"val": None, "augment": []},
        train={"epochs": 2, "warmup_iters": 1, "schedule": "constant", "log_interval": 1,
               "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001}, **train},
    )
    recipe["data"]["train"]["params"]["num_images"] = 8
    return recipe


@pytest.mark.slow  # two torchrun trainings and their single-process references: ~1-2 min on 2 cores
def test_ddp_with_sync_bn_and_with_accumulation_equal_one_process(tiny_recipe, tmp_path):
    jobs = {
        # trained batch norm: equal only because SyncBatchNorm sees all 4 images of a step
        "sync_bn": _recipe(tiny_recipe, batch_size=4, sync_bn=True),
        # 2 processes x 2 micro-batches of 2 = one batch of 8 (frozen batch norm, GroupNorm head)
        "accumulate": {**_recipe(tiny_recipe, batch_size=8, accumulate=2),
                       "model": {**_recipe(tiny_recipe)["model"], "args": {"freeze_bn": True}}},
    }
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps([{"recipe": r, "output": str(tmp_path / f"ddp-{k}")} for k, r in jobs.items()]))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), str(spec)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, recipe in jobs.items():
        single = dict(recipe, train={**recipe["train"], "sync_bn": False, "accumulate": 1})
        reference = Trainer(single, output_dir=tmp_path / f"one-{name}")
        reference.train()
        ddp = load_file(str(tmp_path / f"ddp-{name}" / "checkpoints" / "last.safetensors"))
        expected = reference.model.state_dict()
        assert ddp.keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")
