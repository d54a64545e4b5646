"""Training and evaluation: the loop behind ``lossreg train``.

- :mod:`.trainer`: :class:`Trainer` (a recipe in, a run folder out);
- :mod:`.schedule`: optimizers and warm-up + step / cosine / constant schedules;
- :mod:`.checkpoint`: crash-safe safetensors checkpoints with the training state alongside;
- :mod:`.evaluate`: COCO metrics (pycocotools) of a detector on a dataset split;
- :mod:`.plots`: loss, balancer-weight and learning-rate plots from ``metrics.jsonl``;
- :mod:`.distributed`: ``torchrun`` / DDP helpers; :mod:`.sampler`: resumable data order;
  :mod:`.ema`: the weights' moving average.
"""

from __future__ import annotations

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .evaluate import evaluate
from .trainer import Trainer

__all__ = ["CheckpointError", "Trainer", "evaluate", "load_checkpoint", "save_checkpoint"]
