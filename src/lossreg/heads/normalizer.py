"""The batch a head normalises its losses over: its own, every process's, or every accumulated micro-batch's.

A head divides each task loss by an ``avg_factor`` (dense heads: the number of
positives; ``rpn`` / ``roi_box``: the number of sampled anchors / RoIs; ``sum(q)`` with
quality-weighted regression; see docs/api.md, "Classification losses"). The heads ask
for it through :func:`avg_factor`, and hand their task losses to the balancer through
:func:`lossreg.heads.dense.balance_terms`, which consults :func:`active_normalizer`.
With no normaliser active (the default: direct calls, evaluation, tests) the factor is
the head's own batch, ``max(value, floor)``, as it has always been.

The trainer activates one per training step with :func:`use_normalizer`:

- :class:`SyncNormalizer` (DDP, one forward per step): each factor's value is summed
  over the processes inside the forward (one ``all_reduce`` per factor) and the head
  gets ``max(total, floor) / world_size``; DDP's gradient mean then yields exactly the
  loss normalised by the whole batch's positives (mmdetection's ``reduce_mean`` of
  ``num_pos``, with the floor applied to the total so that it equals one process
  holding the whole batch).
- :class:`AccumulationNormalizer` (``train.accumulate: N``): two passes per optimizer
  step. *Record*: a forward of every micro-batch under ``no_grad`` (the trainer keeps
  the model's buffers and the random state untouched, :mod:`lossreg.engine.accumulate`)
  where each head reports its factors' values and its unweighted task losses, and no
  balancer is called. :meth:`~AccumulationNormalizer.finalize` sums the factors over the
  micro-batches and processes and calls every head's balancer **once**, in training
  mode, with the whole batch's task losses (its state advances once per optimizer
  step, with the values one batch N times larger would give). *Apply*: the training
  forward of each micro-batch, which divides by the whole batch's factor and multiplies
  by those fixed weights, so the micro-batch losses *sum* to the whole batch's loss and
  their gradients to its gradient.

How a term combines over micro-batches depends on its loss (:func:`term_reduction`):
``"avg"`` (``reduction="mean"`` with ``avg_factor``: divided by the total factor, exact),
``"sum"`` (``reduction="sum"``: summed, exact) or ``"mean"`` (losses that normalise
themselves and ignore ``avg_factor``, ``uses_avg_factor = False``: ``ghm_c``, ``hcra_c``,
``dr``; averaged over the micro-batches, not the big batch's value). A balancer's own
regulariser (``loss_balancer``) is averaged too, so it counts once per step.

What accumulation cannot make equal to one big batch (documented in the README,
"Gradient accumulation"): batch normalisation that is trained (batch statistics of a
micro-batch; freeze it or use GroupNorm), losses with running statistics (``ghm_c``'s
and ``hcra_c``'s gradient-density EMA, ``hcra_r``'s running mean: updated once per
micro-batch) and the ``"mean"`` losses above.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn

from ..balancers._base import REGULARISER, Balancer

__all__ = [
    "AccumulationNormalizer",
    "LossNormalizer",
    "SyncNormalizer",
    "active_normalizer",
    "avg_factor",
    "term_reduction",
    "use_normalizer",
]

logger = logging.getLogger(__name__)

_ACTIVE: ContextVar[LossNormalizer | None] = ContextVar("lossreg_loss_normalizer", default=None)


def active_normalizer() -> LossNormalizer | None:
    """The normaliser of the current training step, or None (each head normalises over its own batch)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def use_normalizer(normalizer: LossNormalizer | None) -> Iterator[LossNormalizer | None]:
    """Make ``normalizer`` the active one inside the ``with`` block (None: none)."""
    token = _ACTIVE.set(normalizer)
    try:
        yield normalizer
    finally:
        _ACTIVE.reset(token)


def term_reduction(loss: nn.Module | None) -> str:
    """How a loss's value combines over micro-batches: ``"avg"``, ``"sum"`` or ``"mean"`` (module docstring)."""
    if loss is None:
        return "avg"
    if getattr(loss, "reduction", "mean") == "sum":
        return "sum"
    return "avg" if getattr(loss, "uses_avg_factor", True) else "mean"


def avg_factor(owner: nn.Module, term: str, value: float | Tensor, floor: float = 1.0, loss: nn.Module | None = None) -> float:
    """The ``avg_factor`` that ``owner`` (a head) divides its ``term`` loss by.

    ``value`` is this head's batch's count (positives, sampled rows, or the sum of
    quality weights) and ``floor`` its lower bound (1, or 1e-6 for a sum of weights);
    ``loss`` is the loss the factor is given to. Every head calls this for every term on
    every step, whatever its batch holds (under DDP the calls are collective).
    """
    value = float(value)
    norm = _ACTIVE.get()
    if norm is None:
        return max(value, floor)
    return norm.factor(owner, term, value, floor, loss)


class LossNormalizer:
    """Base class: the head's own batch (what a head does without a normaliser).

    ``model`` names the heads in messages and keys (``model.named_modules()``).
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        self._names = {id(m): name for name, m in model.named_modules()} if model is not None else {}

    def name_of(self, owner: nn.Module) -> str:
        return self._names.get(id(owner), f"{type(owner).__name__}@{id(owner):x}")

    def factor(self, owner: nn.Module, term: str, value: float, floor: float, loss: nn.Module | None) -> float:
        return max(value, floor)

    def balance(self, head: nn.Module, terms: dict[str, Tensor]) -> dict[str, Tensor] | None:
        """``{"loss_<task>": ...}`` in place of the head's own balancing, or None to let the head balance."""
        return None


class SyncNormalizer(LossNormalizer):
    """Factors summed over the DDP processes in the forward: ``max(sum over ranks, floor) / world_size``.

    ``device``: where the reduction tensor lives (a CUDA device under ``nccl``).
    """

    def __init__(self, model: nn.Module | None = None, device: torch.device | str = "cpu") -> None:
        super().__init__(model)
        self.device = torch.device(device)

    def factor(self, owner: nn.Module, term: str, value: float, floor: float, loss: nn.Module | None) -> float:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return max(value, floor)
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return max(float(t.item()), floor) / dist.get_world_size()


class AccumulationNormalizer(LossNormalizer):
    """Exact normalisation over ``num_micro_batches`` accumulated micro-batches (and the DDP processes).

    Use (what :mod:`lossreg.engine.accumulate` does each step)::

        norm = AccumulationNormalizer(model, len(micro_batches), device)
        with use_normalizer(norm), torch.no_grad():
            for mb in micro_batches:               # record (buffers and RNG restored afterwards)
                norm.begin_micro_batch(); model(*mb)
        norm.finalize()                            # sums over processes, one balancer call per head
        norm.start_apply()
        with use_normalizer(norm):
            for mb in micro_batches:
                norm.begin_micro_batch(); sum(model(*mb).values()).backward()

    After :meth:`finalize`, :attr:`batch_losses` holds each head's unweighted task
    losses of the whole (rank-local) batch, and :attr:`weights` the balancer weights.
    """

    def __init__(self, model: nn.Module, num_micro_batches: int, device: torch.device | str = "cpu") -> None:
        super().__init__(model)
        if num_micro_batches < 1:
            raise ValueError(f"num_micro_batches must be >= 1, got {num_micro_batches}")
        self.num_micro_batches = int(num_micro_batches)
        self.device = torch.device(device)
        self.phase = "record"
        self._raw: dict[tuple[str, str], float] = {}  # factor values summed over the recorded micro-batches
        self._floor: dict[tuple[str, str], float] = {}
        self._current: dict[tuple[str, str], tuple[float, str]] = {}  # this micro-batch: local factor, reduction
        self._avg_sums: dict[str, dict[str, float]] = {}  # head -> term -> sum_i loss_i * local factor_i
        self._plain_sums: dict[str, dict[str, float]] = {}  # head -> term -> sum_i loss_i ("sum" and "mean" terms)
        self._kinds: dict[str, dict[str, str]] = {}
        self._heads: dict[str, nn.Module] = {}
        self.totals: dict[tuple[str, str], float] = {}
        self.world_size = 1
        self.batch_losses: dict[str, dict[str, float]] = {}
        self.weights: dict[str, dict[str, float]] = {}
        self._warned: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ phases
    def begin_micro_batch(self) -> None:
        self._current = {}

    def finalize(self) -> None:
        """Total factors over micro-batches and processes; one balancer call per head with the whole batch."""
        import torch.distributed as dist

        keys = sorted(self._raw)
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.world_size = world
        values = [self._raw[k] for k in keys]
        if world > 1 and keys:
            t = torch.tensor(values, dtype=torch.float64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            values = t.tolist()
        self.totals = {k: max(v, self._floor[k]) / world for k, v in zip(keys, values)}
        n = self.num_micro_batches
        for head_name, head in self._heads.items():
            losses: dict[str, float] = {}
            for term, kind in self._kinds[head_name].items():
                if kind == "avg":
                    losses[term] = self._avg_sums[head_name][term] / self.totals[(head_name, term)]
                elif kind == "sum":
                    losses[term] = self._plain_sums[head_name][term]
                else:
                    losses[term] = self._plain_sums[head_name][term] / n
            self.batch_losses[head_name] = losses
            balancer = getattr(head, "balancer", None)
            if isinstance(balancer, Balancer):
                tensors = {k: torch.tensor(v, dtype=torch.float64, device=self.device) for k, v in losses.items()}
                with torch.no_grad():
                    _, weights = balancer.weighted_parts(tensors)
                self.weights[head_name] = dict(weights)

    def start_apply(self) -> None:
        if not self.totals and self._raw:
            raise RuntimeError("AccumulationNormalizer: finalize() before start_apply()")
        self.phase = "apply"

    # ------------------------------------------------------------------ what the heads call
    def factor(self, owner: nn.Module, term: str, value: float, floor: float, loss: nn.Module | None) -> float:
        key = (self.name_of(owner), term)
        local = max(value, floor)
        kind = term_reduction(loss)
        if self.phase == "record":
            self._raw[key] = self._raw.get(key, 0.0) + value
            self._floor[key] = floor
            self._current[key] = (local, kind)
            return local
        total = self.totals.get(key)
        if total is None:  # a factor the record pass did not see: this micro-batch's own, averaged
            if key not in self._warned:
                self._warned.add(key)
                logger.warning("%s: avg_factor of %r was not recorded; normalising it per micro-batch", key[0], term)
            self._current[key] = (local, "mean")
            return local
        self._current[key] = (local, kind)
        return total

    def _kind(self, head_name: str, term: str) -> str:
        cur = self._current.get((head_name, term))
        return cur[1] if cur is not None else "mean"  # a term without a factor normalises itself

    def balance(self, head: nn.Module, terms: dict[str, Tensor]) -> dict[str, Tensor] | None:
        name = self.name_of(head)
        n = self.num_micro_batches
        if self.phase == "record":
            self._heads[name] = head
            kinds = self._kinds.setdefault(name, {})
            avg, plain = self._avg_sums.setdefault(name, {}), self._plain_sums.setdefault(name, {})
            for term, value in terms.items():
                v = float(value.detach())
                kind = self._kind(name, term)
                kinds.setdefault(term, kind)
                if kind == "avg":
                    avg[term] = avg.get(term, 0.0) + v * self._current[(name, term)][0]
                else:
                    plain[term] = plain.get(term, 0.0) + v
            return {f"loss_{k}": v for k, v in terms.items()}  # not trained: no balancer call
        scaled = {k: (v if self._kind(name, k) in ("avg", "sum") else v / n) for k, v in terms.items()}
        weights = self.weights.get(name)
        balancer = getattr(head, "balancer", None)
        if weights is None or not isinstance(balancer, Balancer):
            return _call_balancer(head, scaled)  # a plain module balancer: one call per micro-batch
        parts = balancer.parts(balancer._check_losses(scaled), weights)
        if REGULARISER in parts:
            parts[REGULARISER] = parts[REGULARISER] / n
        setattr(head, "last_loss_weights", dict(weights))  # noqa: B010
        return {f"loss_{k}": v for k, v in parts.items()}


def _call_balancer(head: nn.Module, terms: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The heads' own balancing path for a balancer that is a plain ``total, weights = balancer(losses)`` module."""
    balancer: Any = getattr(head, "balancer")  # noqa: B009 - typed as Any: any module with that call
    total, weights = balancer(dict(terms))
    parts = {k: v * weights.get(k, 1.0) for k, v in terms.items()}
    rest = total - sum(parts.values())
    if bool(rest.detach() != 0) or any(p.requires_grad for p in balancer.parameters()):
        parts[REGULARISER] = rest
    setattr(head, "last_loss_weights", dict(weights))  # noqa: B010 - a Module attribute, not a submodule
    return {f"loss_{k}": v for k, v in parts.items()}
