"""Detection heads (dense one-stage heads, RPN, RoI box head)."""

from .._autoimport import import_submodules

import_submodules(__name__, __path__)
