"""The 80 COCO object classes, contiguous, in category-id order (lossreg's and mmdetection's labels 0-79).

COCO's annotation files number them with category ids 1-90, leaving 10 unused; label
``i`` is ``COCO_CLASSES[i]`` with category id ``COCO_CATEGORY_IDS[i]``.
:mod:`lossreg.convert.coco` maps torchvision's 91-slot layout onto them.
"""

from __future__ import annotations

__all__ = ["COCO_CATEGORY_IDS", "COCO_CLASSES"]

#: The 80 COCO object classes in category-id order (lossreg and mmdetection labels 0-79).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)

#: COCO category id of each of the 80 classes (= the class's torchvision output slot).
COCO_CATEGORY_IDS: tuple[int, ...] = tuple(i for i in range(1, 91) if i not in _UNUSED_IDS)

assert len(COCO_CLASSES) == len(COCO_CATEGORY_IDS) == 80
