"""Label assigners: anchors/points -> ground truths. Each file registers its own entries."""

from .._autoimport import import_submodules
from ._base import AssignInputs, AssignOutput, BaseAssigner
from .result import AssignResult

#: The base class plugins subclass, the types of its _assign and its result (docs/api.md, "Writing a plugin").
__all__ = ["AssignInputs", "AssignOutput", "AssignResult", "BaseAssigner"]

import_submodules(__name__, __path__)
