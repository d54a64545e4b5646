"""Component slots: the swappable parts a head or detector takes by name, declared once on its class.

A head class lists its slots in a ``slots`` class attribute::

    class DenseHead(nn.Module):
        slots = {"cls_loss": Slot("loss", "cls"), "reg_loss": Slot("loss", "reg"), ...}

and a detector class lists the heads and neck it is assembled from the same way.
Everything that needs the slot names (recipe fields and their checks, the
detectors' keyword arguments, ``config.json``'s component entries, the fresh
state of a swapped loss on load) derives them from these declarations, so a
head with a new slot is one file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .components import DETECTORS, HEADS, Registry

__all__ = ["STATEFUL_KINDS", "Slot", "component_slots", "declared_slots", "slots_of"]

#: Kinds whose buffers are training state (a loss's GHM histogram, a balancer's running
#: statistics), not network weights: a swapped one starts fresh.
STATEFUL_KINDS = ("loss", "assigner", "balancer")


@dataclass(frozen=True)
class Slot:
    """A named place for a component: its registry ``kind`` and, for losses, the ``task`` it must have."""

    kind: str
    task: str | None = None


def slots_of(obj: object) -> dict[str, Slot]:
    """The slots a head or detector class (or instance) declares (``{}`` when it declares none)."""
    found = getattr(obj, "slots", None)
    return dict(found) if isinstance(found, Mapping) else {}


def _union(reg: Registry) -> dict[str, Slot]:
    out: dict[str, Slot] = {}
    for name in reg.names():
        for key, slot in slots_of(reg.get(name)).items():
            known = out.setdefault(key, slot)
            if known.kind != slot.kind:
                raise TypeError(
                    f"{reg.kind} {name!r} declares slot {key!r} as a {slot.kind}, but another {reg.kind} "
                    f"declares it as a {known.kind}; one slot name must mean one kind"
                )
    return out


def declared_slots(kind: str) -> dict[str, Slot]:
    """Every slot the registered components of ``kind`` (``"head"`` or ``"detector"``) declare."""
    if kind not in ("head", "detector"):
        raise ValueError(f"only heads and detectors declare slots, not {kind!r}")
    return _union(HEADS if kind == "head" else DETECTORS)


def component_slots() -> dict[str, Slot]:
    """The slots a recipe's ``model`` section may set: the detectors' (``neck``, ``head``, ...), then the heads'."""
    return {**declared_slots("detector"), **declared_slots("head")}
