"""One rank of tests/engine/test_ddp_normalizer.py: a DDP forward and backward of its share of a batch.

Run as ``python ddp_normalizer_worker.py RANK WORLD PORT OUT_DIR`` (two of them, gloo on the
CPU). For each split of the 4-image batch (two images per rank) and each normaliser (``sync``: the trainer's
:class:`~lossreg.heads.normalizer.SyncNormalizer`; ``own``: none, each rank its own positives)
the rank writes its loss parts, its positive count and the DDP-averaged gradients.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_ddp_normalizer import SPLITS, make_batch, make_model  # noqa: E402

from lossreg.heads.normalizer import SyncNormalizer, use_normalizer  # noqa: E402


class CountingSync(SyncNormalizer):
    """SyncNormalizer that keeps this rank's own value of each factor (the positives it saw)."""

    def __init__(self, model):
        super().__init__(model)
        self.local: dict[str, float] = {}

    def factor(self, owner, term, value, floor, loss):
        self.local[term] = value
        return super().factor(owner, term, value, floor, loss)


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = make_model()
        ddp = DistributedDataParallel(model, broadcast_buffers=False)
        images, targets = make_batch()
        results = {}
        for split_name, shares in SPLITS.items():
            mine = shares[rank]
            for mode in ("sync", "own"):
                norm = CountingSync(model) if mode == "sync" else None
                model.zero_grad(set_to_none=True)
                with use_normalizer(norm):
                    out_dict = ddp(images[mine], [targets[i] for i in mine])
                sum(out_dict.values()).backward()
                results[(split_name, mode)] = {
                    "losses": {k: float(v.detach()) for k, v in out_dict.items()},
                    "positives": norm.local.get("cls") if norm is not None else None,
                    "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
                }
        torch.save(results, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
