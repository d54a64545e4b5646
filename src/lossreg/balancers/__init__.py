"""Loss balancers: per-task loss weights, one call per training iteration."""

from .._autoimport import import_submodules

import_submodules(__name__, __path__)
