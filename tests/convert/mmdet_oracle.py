"""mmdetection's own model code as the oracle of the mmdetection conversion tests (a test-only extra).

mmdetection 3.x imports its models with mmcv-lite (``pip install "lossreg[mmdet-oracle]"``:
mmdet, mmcv-lite, mmengine), except for mmcv's compiled kernels (``mmcv._ext``), which
mmcv-lite lacks. :func:`install_kernels` supplies the three an eval forward of these models
calls with torchvision's implementations of the same operations (both derive from the same
CUDA/C++ code): ``nms``, ``roi_align_forward`` and ``deform_conv_forward``; any other
kernel raises ``NotImplementedError``. Everything else (backbone, FPN, heads, priors, box
coders, post-processing, data preprocessing) is mmdetection's code as installed.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
import torchvision


def install_kernels() -> None:
    if "mmcv._ext" in sys.modules:
        return
    ext = types.ModuleType("mmcv._ext")

    def nms(boxes, scores, iou_threshold, offset=0):
        if offset != 0:
            raise NotImplementedError("nms with offset != 0")
        return torchvision.ops.nms(boxes, scores, float(iou_threshold))

    def roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height, aligned_width, spatial_scale,
                          sampling_ratio, pool_mode, aligned):
        if pool_mode != 1:
            raise NotImplementedError("roi_align max pooling")
        output.copy_(torchvision.ops.roi_align(input, rois, (aligned_height, aligned_width), spatial_scale,
                                               sampling_ratio, bool(aligned)))

    def deform_conv_forward(input, weight, offset, output, columns, ones, kW, kH, dW, dH, padW, padH, dilationW,
                            dilationH, group, deformable_group, im2col_step):
        output.copy_(torchvision.ops.deform_conv2d(input, offset, weight, stride=(dH, dW), padding=(padH, padW),
                                                   dilation=(dilationH, dilationW)))

    known = {"nms": nms, "roi_align_forward": roi_align_forward, "deform_conv_forward": deform_conv_forward}

    def missing(name):
        def fn(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext.{name}: a compiled mmcv kernel the tests do not supply")
        return fn

    def getattr_(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return known.get(name) or missing(name)

    ext.__getattr__ = getattr_
    sys.modules["mmcv._ext"] = ext


def config_path(name: str) -> Path:
    import mmdet

    root = Path(mmdet.__file__).parent / ".mim" / "configs"
    found = sorted(root.glob(f"*/{name}.py"))
    if not found:
        raise FileNotFoundError(f"mmdetection config {name} not found under {root}")
    return found[0]


def build(name: str) -> torch.nn.Module:
    """mmdetection's model of config ``name`` (random init, no pretrained backbone), in eval mode."""
    install_kernels()
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    cfg = Config.fromfile(str(config_path(name)))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def predict(model: torch.nn.Module, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """mmdetection's detections of RGB 0-1 images ``[3, H, W]``: fed as 0-255 images in the channel order its
    preprocessor expects, through its own data preprocessor (normalisation, padding to 32) and ``predict``."""
    from mmdet.structures import DetDataSample

    inputs = [im.flip(0) * 255.0 for im in images]  # mmdetection's pipeline loads images BGR, 0-255
    samples = [DetDataSample(metainfo={"img_shape": tuple(im.shape[-2:]), "ori_shape": tuple(im.shape[-2:]),
                                       "scale_factor": (1.0, 1.0)}) for im in images]
    with torch.no_grad():
        data = model.data_preprocessor({"inputs": inputs, "data_samples": samples}, False)
        results = model.predict(data["inputs"], data["data_samples"], rescale=False)
    return [{"boxes": r.pred_instances.bboxes, "scores": r.pred_instances.scores, "labels": r.pred_instances.labels}
            for r in results]
