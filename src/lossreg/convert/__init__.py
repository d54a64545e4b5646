"""Weight conversion: torchvision's and mmdetection's COCO detectors as lossreg detectors.

- :func:`from_torchvision` (``model_or_state_dict, arch=None``): RetinaNet v1/v2, FCOS and
  Faster R-CNN v1/v2 with a ResNet-50 FPN, from a model instance, its state dict, a
  ``.pth`` file or the name of torchvision's published weights.
- :func:`from_mmdet` (``checkpoint, arch``): mmdetection's RetinaNet, ATSS, FCOS (caffe R-50),
  VFNet and Faster R-CNN R-50 FPN 1x baselines from the ``.pth`` files mmdetection publishes (``weights_only=True``).
- COCO's classes: :mod:`lossreg.convert.coco` (80 contiguous names, torchvision's
  91-slot layout).

``lossreg convert SOURCE --output DIR`` writes the converted model as a
``save_pretrained`` folder.
"""

from __future__ import annotations

from .coco import COCO_CATEGORY_IDS, COCO_CLASSES, TORCHVISION_COCO_SLOTS, torchvision_label_names
from .command import convert
from .mmdet import from_mmdet
from .torchvision import TORCHVISION_WEIGHTS, from_torchvision

__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_CLASSES",
    "TORCHVISION_COCO_SLOTS",
    "TORCHVISION_WEIGHTS",
    "convert",
    "from_mmdet",
    "from_torchvision",
    "torchvision_label_names",
]
