"""Under DDP the loss does not depend on how the batch is split over the processes (issue 16).

Each process's head divides its losses by the positives of the *whole* batch (summed over
the processes in the forward, :class:`lossreg.heads.normalizer.SyncNormalizer`, which the
trainer activates under ``torchrun``), as mmdetection's ``reduce_mean(num_pos)`` does. Two
gloo processes on the CPU, each with two images of a 4-image batch holding 0, 1, 3 and 0
objects, give after DDP's gradient mean the gradients, and as the mean of their loss parts
the losses, of one process with the whole batch: for a split with unequal positive counts
(1 against 3 objects), and for one whose first process has no positive at all. Each process
normalising by its own positives (what the heads did before) would differ.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lossreg

WORKER = Path(__file__).with_name("ddp_normalizer_worker.py")
#: objects in each image of the batch
OBJECTS = (0, 1, 3, 0)
#: the images of rank 0 and of rank 1 (two each: GroupNorm on the 1x1 top level needs two)
SPLITS = {"unequal": ([0, 1], [2, 3]), "empty_rank": ([0, 3], [1, 2])}


def make_model():
    torch.manual_seed(0)
    return lossreg.create_model(
        "atss_resnet18_fpn", backbone="test_resnet", num_classes=3, freeze_bn=True,
        neck={"name": "fpn", "out_channels": 32}, head={"name": "atss", "feat_channels": 32, "stacked_convs": 1},
    ).train()


def make_batch(n=4, size=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    targets = []
    for i in range(n):
        k = OBJECTS[i % len(OBJECTS)]
        xy = torch.rand(k, 2, generator=g) * 30
        wh = 12 + torch.rand(k, 2, generator=g) * 20
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 3, (k,), generator=g)})
    return images, targets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    port = str(_free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(r), "2", port, str(out)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(2)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def whole_batch():
    model = make_model()
    images, targets = make_batch()
    out = model(images, targets)
    sum(out.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in out.items()}, grads


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_ddp_with_synced_positives_equals_one_process(ranks, whole_batch, split):
    losses, grads = whole_batch
    r0, r1 = ranks[0][(split, "sync")], ranks[1][(split, "sync")]
    # the shares hold different positive counts (none at all on rank 0 in the second split)
    assert r0["positives"] != r1["positives"]
    if split == "empty_rank":
        assert r0["positives"] == 0
    # DDP averages the ranks' gradients: the mean of their losses is what is trained
    mean = {k: (r0["losses"][k] + r1["losses"][k]) / 2 for k in losses}
    assert mean == pytest.approx(losses, rel=1e-5, abs=1e-7)
    assert r0["grads"].keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(r0["grads"][name], g, rtol=1e-4, atol=1e-7, msg=name)
        torch.testing.assert_close(r1["grads"][name], r0["grads"][name], msg=name)  # DDP: the same on every rank


def test_per_process_positives_would_depend_on_the_split(ranks, whole_batch):
    """Without the sync each rank divides by its own positives: another loss and gradient."""
    losses, grads = whole_batch
    r0, r1 = ranks[0][("unequal", "own")], ranks[1][("unequal", "own")]
    mean = {k: (r0["losses"][k] + r1["losses"][k]) / 2 for k in losses}
    assert mean["loss_cls"] != pytest.approx(losses["loss_cls"], rel=1e-3)
    assert not torch.allclose(r0["grads"]["head.cls_out.bias"], grads["head.cls_out.bias"], rtol=1e-3)


def test_sync_normalizer_without_a_process_group_is_the_own_batch():
    """One process (no process group): the factor is the head's own, floored."""
    from lossreg.heads.normalizer import SyncNormalizer, avg_factor, use_normalizer

    model = make_model()
    with use_normalizer(SyncNormalizer(model)):
        assert avg_factor(model.head, "cls", 0, 1.0) == 1.0
        assert avg_factor(model.head, "reg", 2.5, 1e-6) == 2.5
    images, targets = make_batch(2)  # 0 and 1 objects
    with use_normalizer(SyncNormalizer(model)):
        synced = {k: float(v.detach()) for k, v in model(images, targets).items()}
    plain = {k: float(v.detach()) for k, v in copy.deepcopy(model)(images, targets).items()}
    assert synced == pytest.approx(plain, rel=1e-6)
