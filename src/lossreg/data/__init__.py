"""Detection data: readers, the synthetic set, transforms, a torch dataset and collation.

>>> from lossreg.data import read_voc, build_dataset, collate        # doctest: +SKIP
>>> ds = read_voc("../shared/data/bccd/BCCD", "train")                # DetectionSet
>>> ds.class_names, ds.num_classes, ds.records[0].boxes               # float32 [G, 4] xyxy px
>>> train = build_dataset(recipe.data.train, recipe.data, train=True)  # torch Dataset
>>> loader = torch.utils.data.DataLoader(train, batch_size=8, shuffle=True, collate_fn=collate)

Modules: :mod:`.records` (the in-memory format), :mod:`.coco`, :mod:`.voc`,
:mod:`.synthetic`, :mod:`.transforms`, :mod:`.dataset`, :mod:`.collate`.
"""

from __future__ import annotations

from .coco import read_coco
from .collate import collate
from .dataset import DetectionDataset, build_dataset, load_image, read_dataset
from .records import DegenerateBoxWarning, DetectionRecord, DetectionSet
from .synthetic import CLASS_NAMES, make_synthetic, read_synthetic
from .transforms import DetectionTransforms, build_transforms, unscale_boxes
from .voc import read_voc

__all__ = [
    "CLASS_NAMES",
    "DegenerateBoxWarning",
    "DetectionDataset",
    "DetectionRecord",
    "DetectionSet",
    "DetectionTransforms",
    "build_dataset",
    "build_transforms",
    "collate",
    "load_image",
    "make_synthetic",
    "read_coco",
    "read_dataset",
    "read_synthetic",
    "read_voc",
    "unscale_boxes",
]
