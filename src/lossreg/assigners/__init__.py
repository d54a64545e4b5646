"""Label assigners: anchors/points -> ground truths. Each file registers its own entries."""

from .._autoimport import import_submodules

import_submodules(__name__, __path__)
