"""Training checkpoints: weights as safetensors, the rest of the training state alongside.

A checkpoint ``NAME`` in a folder is a pair of files:

- ``NAME.safetensors``: the model's ``state_dict`` (parameters and buffers, so the
  balancer's and the stateful losses' running statistics too), loadable by any
  safetensors reader;
- ``NAME.state.pt``: everything else (``torch.save``; optimizer, scheduler,
  gradient scaler, EMA weights, iteration and epoch, RNG states), loadable with
  ``torch.load(weights_only=True)``.

Both carry the same random ``token`` (the safetensors metadata and the state's
``"token"``), so a mismatched pair is never loaded.

Writes are crash-safe: each file is written to a temporary file in the same
folder, flushed to disk and renamed to ``NAME.*.pending``; once both are complete
they are renamed over ``NAME.safetensors`` / ``NAME.state.pt``. A process killed at
any moment leaves a complete pair to load: the previous one (the new one was not
complete yet) or the new one (its pending files were complete; :func:`load_checkpoint`
picks the newest pair whose tokens match, without renaming anything, so readers on
other processes never race the writer).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from .._io import atomic_write, fsync_dir, tensors_for_safetensors

__all__ = [
    "CheckpointError",
    "checkpoint_paths",
    "load_checkpoint",
    "save_checkpoint",
    "tensors_for_safetensors",
]

logger = logging.getLogger(__name__)

WEIGHTS_SUFFIX = ".safetensors"
STATE_SUFFIX = ".state.pt"
PENDING = ".pending"
FORMAT = "lossreg-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or inconsistent (the message names the files)."""


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights, state)`` paths of a checkpoint given as its stem, either file, or a run folder.

    ``runs/x/checkpoints/last``, ``.../last.safetensors`` and ``.../last.state.pt`` all
    name the same checkpoint; a run folder (holding ``checkpoints/``) or a
    ``checkpoints`` folder means its ``last`` checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        p = (p / "checkpoints" / "last") if (p / "checkpoints").is_dir() else (p / "last")
    text = str(p)
    for suffix in (WEIGHTS_SUFFIX, STATE_SUFFIX):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    return Path(text + WEIGHTS_SUFFIX), Path(text + STATE_SUFFIX)


def save_checkpoint(
    folder: str | os.PathLike[str],
    name: str,
    weights: Mapping[str, Tensor],
    state: Mapping[str, Any],
) -> tuple[Path, Path]:
    """Write checkpoint ``name`` into ``folder`` crash-safely (see the module docstring).

    Args:
        folder: created if missing.
        name: the stem, e.g. ``"last"`` or ``"epoch_0003"``.
        weights: the model's ``state_dict`` (copied to CPU).
        state: the rest, made of tensors, numbers, strings, lists, tuples and dicts
            (what ``torch.load(weights_only=True)`` reads back); ``"token"`` is added.

    Returns the ``(weights, state)`` paths.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f".{name}.*.tmp"):  # temp files of a killed writer
        stale.unlink(missing_ok=True)
    weights_path, state_path = checkpoint_paths(folder / name)
    token = uuid.uuid4().hex
    tensors = tensors_for_safetensors(weights)
    payload = {**dict(state), "token": token, "format": FORMAT}
    pending_state = Path(str(state_path) + PENDING)
    pending_weights = Path(str(weights_path) + PENDING)
    atomic_write(pending_state, lambda tmp: torch.save(payload, tmp))
    atomic_write(pending_weights, lambda tmp: save_file(tensors, tmp, metadata={"token": token, "format": FORMAT}))
    fsync_dir(folder)
    # Both complete: commit. A crash between the two renames leaves (pending weights,
    # new state) with matching tokens, which load_checkpoint picks.
    os.replace(pending_state, state_path)
    os.replace(pending_weights, weights_path)
    fsync_dir(folder)
    logger.debug("saved checkpoint %s", weights_path.with_suffix(""))
    return weights_path, state_path


def _weights_token(path: Path) -> str | None:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get("token")
    except Exception:  # unreadable or truncated: not a candidate
        return None


def _read_state(path: Path, errors: list[str]) -> dict[str, Any] | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or truncated: not a candidate
        errors.append(f"{path.name}: {type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")
        return None
    if not isinstance(state, dict):
        errors.append(f"{path.name}: not a dict but a {type(state).__name__}")
        return None
    return state


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint (see :func:`checkpoint_paths` for ``path``): ``(weights, state)`` on the CPU.

    Picks the newest complete pair with matching tokens (a commit interrupted between
    its two renames is read as the new checkpoint). Changes no file. Raises
    :class:`CheckpointError` when there is none.
    """
    weights_path, state_path = checkpoint_paths(path)
    pending_w = Path(str(weights_path) + PENDING)
    pending_s = Path(str(state_path) + PENDING)
    if not weights_path.exists() and not pending_w.exists():
        raise CheckpointError(f"no checkpoint at {weights_path.with_suffix('')} ({weights_path.name} does not exist)")
    states: dict[Path, dict[str, Any] | None] = {}
    errors: list[str] = []
    for w, s in ((pending_w, pending_s), (pending_w, state_path), (weights_path, state_path)):
        if not (w.exists() and s.exists()):
            continue
        token = _weights_token(w)
        if token is None:
            continue
        if s not in states:
            states[s] = _read_state(s, errors)
        state = states[s]
        if state is not None and state.get("token") == token:
            try:
                weights = load_file(str(w), device="cpu")
            except Exception:  # pragma: no cover - a token was readable, the data not
                continue
            if w != weights_path or s != state_path:
                logger.warning("checkpoint %s: using the newer files of an interrupted write", weights_path)
            return weights, state
    why = f" ({'; '.join(errors)})" if errors else ""
    raise CheckpointError(
        f"checkpoint {weights_path.with_suffix('')} is incomplete or inconsistent: "
        f"{weights_path.name} and {state_path.name} do not belong together or cannot be read{why}"
    )
