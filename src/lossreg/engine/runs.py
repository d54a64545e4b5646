"""The run folder of ``lossreg train``: its layout, finding its weights, and loading the model of a run.

One module owns the layout, so the trainer, ``lossreg eval``/``predict``/``push``
and ``lossreg ablate`` agree on it::

    <run>/
        recipe.yaml        the resolved recipe (a comment header gives seed and versions)
        metrics.jsonl      one JSON record per iteration and evaluation
        metrics.json       the final evaluation, when training ends
        checkpoints/       last.*, epoch_NNNN.* (the newest train.keep_last of them) and best.*
                           (train.best_metric), each safetensors + training state
        model/             the final (EMA) model, a save_pretrained folder
        plots/             loss, learning-rate and balancer-weight plots
        tensorboard/       TensorBoard event files (train.tensorboard)

:func:`load_model` turns anything a user can point at (a run, a saved model,
``hf-hub:``, a pretrained tag) into a detector.

A run folder belongs to one training run at a time: the run holds ``<run>/.lock``
(:class:`RunLock`, created with ``O_EXCL``; it records the owner's pid, host and start
time) from the moment it is set up until it ends, and a second ``lossreg train`` into the
same folder stops with :class:`RunFolderLocked` before it touches any file there. A lock
whose process is gone (same host, pid not alive) is stale and taken over; a lock from
another host cannot be checked and is reported with the file to delete.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .._factory import build_from_recipe, create_model
from .._registry import parse_model_name
from ..hub.load import check_state_dict, load_folder, read_weights
from ..hub.save import CONFIG_NAME, RECIPE_NAME, WEIGHTS_NAME
from ..recipe import load_recipe
from .checkpoint import checkpoint_paths

__all__ = [
    "LOCK_NAME",
    "RunFolder",
    "RunFolderLocked",
    "RunLock",
    "default_run_dir",
    "find_weights",
    "is_run_folder",
    "load_model",
    "load_recipe_weights",
    "run_folder_of",
]

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
MODEL = "model"
LOCK_NAME = ".lock"
#: An unreadable lock file (its writer died between creating and filling it) older than this is stale.
_UNREADABLE_LOCK_GRACE_S = 10.0
#: Locks this process holds: lock file -> number of RunLock objects holding it.
_HELD: dict[str, int] = {}


class RunFolderLocked(RuntimeError):
    """The run folder is owned by another training run that is still alive (the message names it)."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError as exc:  # pragma: no cover - platforms without signal 0
        return exc.errno != errno.ESRCH
    return True


class RunLock:
    """``<run>/.lock``: the run folder's owner (see the module docstring).

    ``acquire()`` creates the file with ``O_CREAT | O_EXCL`` holding ``{"pid", "host",
    "started", "argv"}``; it succeeds again in the process that holds it (re-entrant),
    takes over a stale lock (same host, process gone; or an unreadable file older than
    10 s) and raises :class:`RunFolderLocked` otherwise. ``release()`` removes the file
    when this process owns it. Also a context manager.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = Path(root) / LOCK_NAME
        self.held = False

    @staticmethod
    def _record() -> dict[str, Any]:
        import sys

        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "argv": sys.argv[:8],
        }

    def owner(self) -> dict[str, Any] | None:
        """The lock's record, ``{}`` when the file is unreadable, None when there is no lock."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            record = json.loads(text)
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def _stale(self, record: dict[str, Any]) -> bool:
        if not record:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return True
            return age > _UNREADABLE_LOCK_GRACE_S
        if record.get("host") != socket.gethostname():
            return False  # another machine's process: cannot be checked from here
        pid = record.get("pid")
        return not isinstance(pid, int) or not _pid_alive(pid)

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                record = self.owner()
                if record is None:
                    continue  # released meanwhile: try again
                if record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
                    # this process owns it already (a second Trainer on the same folder, one after the other)
                    return self._hold()
                if self._stale(record):
                    logger.warning(
                        "%s: taking over a stale lock of pid %s on %s (that process is gone)",
                        self.path.parent, record.get("pid", "?"), record.get("host", "?"),
                    )
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunFolderLocked(self._message(record)) from None
            try:
                os.write(fd, (json.dumps(self._record()) + "\n").encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            return self._hold()
        raise RunFolderLocked(self._message(self.owner() or {}))

    def _hold(self) -> RunLock:
        if not self.held:
            key = str(self.path.resolve())
            _HELD[key] = _HELD.get(key, 0) + 1
            self.held = True
        return self

    def _message(self, record: dict[str, Any]) -> str:
        folder = self.path.parent
        if not record:
            who = "a run that is starting up"
        else:
            who = f"pid {record.get('pid', '?')} on {record.get('host', '?')} (since {record.get('started', '?')})"
        fix = "wait for it to finish, or train into another --output folder"
        if record and record.get("host") != socket.gethostname():
            fix += f"; if that run is gone, delete {self.path}"
        return f"{folder} is in use by another training run, {who}; {fix}"

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        key = str(self.path.resolve())
        _HELD[key] = _HELD.get(key, 1) - 1
        if _HELD[key] > 0:
            return  # another RunLock of this process still holds it
        del _HELD[key]
        record = self.owner()
        if record and record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (nothing is created or read by constructing it)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def recipe(self) -> Path:
        return self.root / RECIPE_NAME

    @property
    def metrics_log(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        """The stem ``checkpoints/last`` (see :func:`~.checkpoint.checkpoint_paths`)."""
        return self.checkpoints / "last"

    @property
    def best_checkpoint(self) -> Path:
        """The stem ``checkpoints/best``: the evaluation with the best ``train.best_metric``."""
        return self.checkpoints / "best"

    @property
    def tensorboard(self) -> Path:
        """``tensorboard/``: the event files of ``train.tensorboard``."""
        return self.root / "tensorboard"

    def epoch_checkpoint(self, epoch: int) -> Path:
        """The stem ``checkpoints/epoch_NNNN`` of the checkpoint after ``epoch`` epochs."""
        return self.checkpoints / f"epoch_{epoch:04d}"

    def epoch_checkpoints(self) -> list[tuple[int, Path]]:
        """``(epoch, stem)`` of every ``epoch_NNNN`` checkpoint whose weights exist, oldest first."""
        found = []
        for weights in self.checkpoints.glob("epoch_*.safetensors"):
            digits = weights.name[len("epoch_") : -len(".safetensors")]
            if digits.isdigit():
                found.append((int(digits), weights.with_suffix("")))
        return sorted(found)

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def lock_file(self) -> Path:
        """``<run>/.lock`` (see :class:`RunLock`)."""
        return self.root / LOCK_NAME

    def lock(self) -> RunLock:
        """A :class:`RunLock` on this folder (not yet acquired)."""
        return RunLock(self.root)

    def has_checkpoint(self) -> bool:
        """A ``last`` checkpoint exists (or is being written: its ``.pending`` marker)."""
        weights, _ = checkpoint_paths(self.last_checkpoint)
        return weights.is_file() or Path(str(weights) + ".pending").is_file()

    def is_finished(self) -> bool:
        return self.metrics.is_file()


def default_run_dir(recipe_name: str, root: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<recipe>-<YYYYmmdd-HHMMSS>`` (with ``-2``, ``-3``, ... if taken)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{recipe_name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


def is_run_folder(path: str | os.PathLike[str]) -> bool:
    """``path`` is a run folder: a ``recipe.yaml`` and a ``model/`` or ``checkpoints/``."""
    run = RunFolder(path)
    return run.root.is_dir() and run.recipe.is_file() and (run.model.is_dir() or run.checkpoints.is_dir())


def run_folder_of(checkpoint: str | os.PathLike[str]) -> Path | None:
    """The run folder a ``--resume PATH`` belongs to (``PATH`` itself, or ``<run>/checkpoints/<file>``'s run)."""
    path = Path(checkpoint)
    if path.is_dir():
        return path.parent if path.name == CHECKPOINTS else path
    if path.parent.name == CHECKPOINTS:
        return path.parent.parent
    return None


def find_weights(path: str | os.PathLike[str]) -> Path:
    """The safetensors file ``path`` means: a run folder's ``model/model.safetensors`` (else its last
    checkpoint), a ``model/`` folder, a checkpoint (stem or either file) or a ``.safetensors`` file.

    Raises ``FileNotFoundError`` naming what was looked for.
    """
    p = Path(path)
    candidates = []
    if p.is_dir():
        candidates += [p / MODEL / WEIGHTS_NAME, p / WEIGHTS_NAME]
    if p.suffix == ".safetensors":
        candidates.append(p)
    candidates.append(checkpoint_paths(p)[0])
    for cand in candidates:
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no weights at {str(p)!r} (looked for {', '.join(str(c) for c in dict.fromkeys(candidates))})")


def model_folder(path: str | os.PathLike[str]) -> Path:
    """The ``save_pretrained`` folder ``path`` means: itself, or a run folder's ``model/``."""
    p = Path(path)
    if not (p / CONFIG_NAME).is_file() and (p / MODEL / CONFIG_NAME).is_file():
        return p / MODEL
    return p


def load_recipe_weights(recipe: Any, weights: str | os.PathLike[str], **kwargs: Any) -> nn.Module:
    """The detector of ``recipe`` with the weights file ``weights`` (a checkpoint or ``model.safetensors``).

    The recipe's ``model.weights`` starting point is not fetched: every weight is
    replaced. ``kwargs`` go to the recipe's builder (``num_classes``, ``label_names``).
    Raises :class:`~lossreg.hub.HubError` when the weights do not fit, before any is copied.
    """
    recipe = load_recipe(recipe)
    recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, weights=None))
    model = build_from_recipe(recipe, **kwargs)
    state = read_weights(weights)
    check_state_dict(model, state, str(weights), target="the recipe's detector")
    model.load_state_dict(state, strict=True)
    return model


def load_model(spec: str | os.PathLike[str], **kwargs: Any) -> nn.Module:
    """Any trained model a user can point at, as the ``MODEL_OR_RUN`` of ``lossreg eval``/``predict``.

    - a run folder of ``lossreg train`` (its ``model/``, else its recipe and last checkpoint);
    - a folder written by :func:`~lossreg.hub.save_pretrained` (or ``local-dir:PATH``);
    - ``hf-hub:owner/repo[@rev]`` or a pretrained ``model.tag`` (downloaded).

    Raises :class:`~lossreg.hub.HubError` / ``FileNotFoundError`` saying what was looked for.
    """
    text = os.fspath(spec)
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        run = RunFolder(path)
        if (path / CONFIG_NAME).is_file():
            return load_folder(path, **kwargs)
        if (run.model / CONFIG_NAME).is_file():
            return load_folder(run.model, f"run {path}", **kwargs)
        if run.recipe.is_file():  # a run stopped before its final model/
            weights = find_weights(path)
            model = load_recipe_weights(run.recipe, weights, **kwargs)
            logger.info("%s has no final model/ yet; loaded its checkpoint %s", path, weights)
            return model
        raise FileNotFoundError(
            f"{path} is neither a run folder (recipe.yaml, model/) nor a saved model ({CONFIG_NAME} + {WEIGHTS_NAME})"
        )
    parsed = parse_model_name(text)
    if parsed.source == "name" and parsed.tag is None:
        raise FileNotFoundError(
            f"{text!r} is not a folder, and a bare model name has no trained weights; give a run folder, "
            "a saved model folder, hf-hub:owner/repo or a pretrained name.tag (`lossreg list pretrained`)"
        )
    return create_model(text, pretrained=parsed.source == "name", **kwargs)
