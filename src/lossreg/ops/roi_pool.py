"""Multi-scale RoIAlign that also runs inside ``torch.export`` graphs (Faster R-CNN's RoI head).

``torchvision.ops.MultiScaleRoIAlign`` turns the number of RoIs into a Python int, which a
graph with a data-dependent number of proposals cannot do. :func:`multiscale_roi_align`
computes the same thing (the FPN paper's level of each RoI, one ``roi_align`` per level,
the results put back in RoI order) with tensor operations only, using the pooler's own
scales and level mapper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _setup_scales

__all__ = ["multiscale_roi_align"]


def multiscale_roi_align(
    pooler: MultiScaleRoIAlign, feats: Sequence[Tensor], rois: Sequence[Tensor], image_shapes: Sequence[tuple[int, int]],
    aligned: bool = False,
) -> Tensor:
    """``pooler(dict(enumerate(feats)), rois, image_shapes)``: ``[sum R_i, C, *output_size]``.

    ``feats`` are the levels the pooler uses (finest first), ``rois`` the boxes ``[R_i, 4]``
    (xyxy, input pixels) of each image. The pooler's scales are set up on the first call,
    as torchvision does. ``aligned``: ``roi_align``'s half-pixel alignment (mmdetection's RoIAlign).
    """
    feats = list(feats)
    if pooler.scales is None or pooler.map_levels is None:
        pooler.scales, pooler.map_levels = _setup_scales(
            feats, [tuple(s) for s in image_shapes], pooler.canonical_scale, pooler.canonical_level
        )
    boxes = torch.cat(list(rois), dim=0)
    ids = torch.cat([torch.full_like(r[:, :1], i) for i, r in enumerate(rois)], dim=0)
    rois5 = torch.cat([ids, boxes], dim=1)
    size, ratio = pooler.output_size, pooler.sampling_ratio
    if len(feats) == 1:
        return roi_align(feats[0], rois5, size, pooler.scales[0], ratio, aligned)
    levels = pooler.map_levels([boxes])
    result = feats[0].new_zeros((rois5.shape[0], feats[0].shape[1], *size))
    for level, (feat, scale) in enumerate(zip(feats, pooler.scales)):
        idx = torch.where(levels == level)[0]
        result = result.index_put((idx,), roi_align(feat, rois5[idx], size, scale, ratio, aligned).to(result.dtype))
    return result
