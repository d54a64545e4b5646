"""Loss balancers: per-task loss weights, one call per training iteration."""

from .._autoimport import import_submodules
from ._base import Balancer

#: The base class plugins subclass (docs/api.md, "Writing a plugin").
__all__ = ["Balancer"]

import_submodules(__name__, __path__)
