"""TensorBoard logging of a training run (``train.tensorboard: true``; ``pip install "lossreg[tensorboard]"``).

:class:`TensorBoardCallback` is one of the trainer's callbacks (``Trainer.train(callbacks=...)``
takes any callable; a callback may also define ``on_eval(trainer, metrics)`` and
``on_train_end(trainer)``). With ``train.tensorboard`` the trainer adds one on rank 0
writing to ``<run>/tensorboard/``; ``metrics.jsonl`` is written as before. Scalars, by
tag, with the iteration (optimizer step) as step:

- ``loss``: the total trained; ``loss/<task>``: each task loss as the balancer weighted
  it (``loss/balancer``: a balancer's regulariser); ``raw_loss/<task>``: before weighting;
- ``weight/<task>``: the balancer's weights; ``lr``: the learning rate of the step
  (first parameter group); ``grad_norm`` with ``train.grad_clip``;
- ``val/<metric>``: every numeric metric of each evaluation (``AP``, ``AP50``, ...,
  ``voc07_mAP``: COCO's in 0-1) and ``val/AP_per_class/<class>``.

``tensorboard --logdir runs/`` shows every run. A resumed run continues the same event
files; events after the checkpoint it resumed from (a killed run's last steps) are
dropped (``SummaryWriter(purge_step=...)``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TensorBoardCallback", "require_tensorboard"]


def require_tensorboard() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or ``ImportError`` saying how to install it."""
    try:
        import tensorboard  # noqa: F401  (torch's writer needs the package)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(
            'train.tensorboard needs the tensorboard package: pip install "lossreg[tensorboard]" '
            "(or pip install tensorboard)"
        ) from None
    return SummaryWriter


class TensorBoardCallback:
    """Write a run's scalars to ``log_dir`` (see the module docstring).

    ``purge_step``: drop events at or after this step left by an earlier, killed run
    (the trainer passes ``iteration + 1`` on resume). ``flush_every``: iterations between flushes.
    """

    def __init__(self, log_dir: str | os.PathLike[str], purge_step: int | None = None, flush_every: int = 20) -> None:
        writer_cls = require_tensorboard()
        self.log_dir = Path(log_dir)
        self.writer = writer_cls(log_dir=str(self.log_dir), purge_step=purge_step)
        self.flush_every = max(int(flush_every), 1)

    def __call__(self, trainer: Any) -> None:
        record: Mapping[str, Any] | None = getattr(trainer, "last_record", None)
        if record is None:
            return
        step = int(record["iter"])
        add = self.writer.add_scalar
        add("loss", float(record["loss"]), step)
        for task, value in record.get("losses", {}).items():
            add(f"loss/{task}", float(value), step)
        for task, value in record.get("raw_losses", {}).items():
            add(f"raw_loss/{task}", float(value), step)
        for task, value in record.get("weights", {}).items():
            add(f"weight/{task}", float(value), step)
        add("lr", float(record["lr"]), step)
        if "grad_norm" in record:
            add("grad_norm", float(record["grad_norm"]), step)
        if step % self.flush_every == 0:
            self.writer.flush()

    def on_eval(self, trainer: Any, metrics: Mapping[str, Any]) -> None:
        step = int(trainer.iteration)
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"val/{key}", float(value), step)
        for name, value in (metrics.get("per_class") or {}).items():
            if value is not None:
                self.writer.add_scalar(f"val/AP_per_class/{name}", float(value), step)
        self.writer.flush()

    def on_train_end(self, trainer: Any) -> None:
        self.close()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
