"""Training, evaluation and prediction: the loops behind ``lossreg train``, ``eval`` and ``predict``.

- :mod:`.trainer`: :class:`Trainer` (a recipe in, a run folder out);
- :mod:`.schedule`: optimizers and warm-up + step / cosine / constant schedules;
- :mod:`.checkpoint`: crash-safe safetensors checkpoints with the training state alongside;
- :mod:`.evaluate`: COCO metrics (pycocotools) of a detector on a dataset split;
- :mod:`.eval_folder`: ``lossreg eval``'s data, class matching and evaluation folder;
- :mod:`.consistency`: score-IoU pairs and their correlation (the HCRAL paper's figure 3a);
- :mod:`.predict`: detections on image files, drawn (``lossreg predict``);
- :mod:`.plots`: loss, balancer-weight and learning-rate plots from ``metrics.jsonl``, and
  the precision-recall and score-IoU figures of an evaluation;
- :mod:`.ablate`: ``lossreg ablate``: every combination of swapped recipe settings over
  several seeds, trained into run folders and summarised as the papers' ablation tables;
- :mod:`.distributed`: ``torchrun`` / DDP helpers; :mod:`.sampler`: resumable data order;
  :mod:`.ema`: the weights' moving average.
"""

from __future__ import annotations

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .evaluate import evaluate
from .trainer import Trainer

__all__ = ["CheckpointError", "Trainer", "evaluate", "load_checkpoint", "save_checkpoint"]
