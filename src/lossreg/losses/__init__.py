"""Loss functions: classification (task 'cls') and regression (task 'reg'). Each file registers its own entries."""

from .._autoimport import import_submodules
from ._base import ClsLoss, RegLoss, apply_weight, reduce_loss

#: The base classes plugins subclass (docs/api.md, "Writing a plugin").
__all__ = ["ClsLoss", "RegLoss", "apply_weight", "reduce_loss"]

import_submodules(__name__, __path__)
