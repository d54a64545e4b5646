"""The 80 COCO object classes, and how torchvision's 91-slot layout maps onto them.

COCO's annotation files number the 80 classes with category ids 1-90, leaving 10 ids
unused (12, 26, 29, 30, 45, 66, 68, 69, 71, 83). torchvision's COCO detectors have one
output per id plus slot 0 (``"__background__"``), 91 in all, the unused ones named
``"N/A"``: its label ``k`` is COCO category id ``k``. mmdetection's detectors have the
80 classes contiguous, in category-id order, as lossreg does: label ``i`` is
``COCO_CLASSES[i]``, category id ``COCO_CATEGORY_IDS[i]``.
"""

from __future__ import annotations

from ..data.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES

__all__ = ["COCO_CATEGORY_IDS", "COCO_CLASSES", "TORCHVISION_COCO_SLOTS", "torchvision_label_names"]

#: torchvision's slot of each lossreg class: lossreg label ``i`` is torchvision label ``TORCHVISION_COCO_SLOTS[i]``.
TORCHVISION_COCO_SLOTS: tuple[int, ...] = COCO_CATEGORY_IDS


def torchvision_label_names() -> list[str]:
    """torchvision's 91 slot names: ``"__background__"``, the classes at their category ids, ``"N/A <id>"`` elsewhere.

    torchvision names every unused slot ``"N/A"``; lossreg's class names must be unique
    (fine-tuning and evaluation match classes by name), so each carries its id.
    """
    names = ["__background__"] + [f"N/A {i}" for i in range(1, 91)]
    for name, cid in zip(COCO_CLASSES, COCO_CATEGORY_IDS):
        names[cid] = name
    return names
