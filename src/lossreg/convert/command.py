"""``lossreg convert SOURCE --output DIR``: another library's detector as a ``save_pretrained`` folder.

SOURCE is one of

- a converted pretrained tag (``retinanet_resnet50_fpn.tv_coco``; ``lossreg list pretrained``):
  its original file is downloaded (or taken from ``$LOSSREG_HOME/downloads``) and hash-checked;
- the name of torchvision's published weights (``RetinaNet_ResNet50_FPN_Weights.COCO_V1``): the same;
- a checkpoint file: a torchvision state dict (``--from torchvision``, the default; ``--arch``
  when its keys do not tell) or an mmdetection checkpoint (``--from mmdet --arch NAME``).

The folder's card states the source (file, URL, sha256), its license and its published COCO
AP (a tag's own; ``--license`` / ``--coco-ap`` for a file); ``create_model("local-dir:DIR")``
loads it, ``lossreg push DIR owner/repo`` publishes it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from .._registry import PretrainedCfg, UnknownComponentError, get_pretrained_cfg, parse_model_name
from ..hub.converted import resolve_converter, source_file, write_converted
from .torchvision import TORCHVISION_WEIGHTS

__all__ = ["convert"]


def _tag(source: str) -> PretrainedCfg | None:
    if source in TORCHVISION_WEIGHTS:
        source = TORCHVISION_WEIGHTS[source][1]
    if os.path.exists(source) or "." not in source or "/" in source:
        return None
    try:
        parsed = parse_model_name(source)
        cfg = get_pretrained_cfg(parsed.arch, parsed.tag) if parsed.source == "name" and parsed.tag else None
    except (ValueError, UnknownComponentError):
        return None
    return cfg if cfg is not None and cfg.url and cfg.converter else None


def convert(
    source: str,
    output: str | os.PathLike[str],
    *,
    library: str | None = None,
    arch: str | None = None,
    classes: str = "auto",
    license: str | None = None,
    coco_ap: float | None = None,
    **overrides: Any,
) -> Path:
    """Convert ``source`` (see the module docstring) into the ``save_pretrained`` folder ``output``; return it."""
    output = Path(output)
    cfg = _tag(source)
    if cfg is not None:
        if library not in (None, "torchvision", "mmdet") or arch or overrides or classes != "auto":
            raise ValueError(f"{cfg.name} is a published tag: it takes no --from / --arch / --classes")
        path = source_file(cfg)
        model = resolve_converter(cfg.converter)(path, **dict(cfg.converter_args))
        if license is not None or coco_ap is not None:
            raise ValueError(f"{cfg.name} states its own license and AP ({cfg.license}, {cfg.coco_ap})")
        return write_converted(model, cfg, output, model_ref=f"local-dir:{output}")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"{source}: not a file, a converted pretrained tag (`lossreg list pretrained`) nor one of torchvision's "
            f"weights names ({', '.join(TORCHVISION_WEIGHTS)})"
        )
    library = library or "torchvision"
    if library == "torchvision":
        from .torchvision import from_torchvision

        model = from_torchvision(path, arch, classes=classes, **overrides)
        converter = "lossreg.convert.torchvision:from_torchvision"
    elif library == "mmdet":
        from .mmdet import from_mmdet

        if not arch:
            raise ValueError("--from mmdet needs --arch (see lossreg.convert.mmdet.MMDET_ARCHS)")
        model = from_mmdet(path, arch, **overrides)
        converter = "lossreg.convert.mmdet:from_mmdet"
    else:
        raise ValueError(f"--from must be 'torchvision' or 'mmdet', got {library!r}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cfg = PretrainedCfg(
        model=path.stem.replace(".", "_"), tag="converted", url=path.resolve().as_uri(), sha256=digest,
        source=f"{library} checkpoint {path.name}" + (f" ({arch})" if arch else ""), converter=converter,
        converter_args={"arch": arch} if arch else {}, license=license, coco_ap=coco_ap,
        description=f"{type(model).__name__} converted from {path.name}.",
    )
    return write_converted(model, cfg, output, model_ref=f"local-dir:{output}")
