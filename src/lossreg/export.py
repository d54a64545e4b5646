"""Export a detector as a static graph: ONNX (run with onnxruntime) or a ``torch.export`` ExportedProgram.

>>> model = lossreg.load_model("runs/quickstart")                                  # doctest: +SKIP
>>> lossreg.export_model(model, "atss.onnx", image_size=(128, 128), batch_size=8)  # doctest: +SKIP
>>> detect = lossreg.export.load_onnx("atss.onnx")                                 # doctest: +SKIP
>>> out = detect(images)              # images: float [8, 3, 128, 128] in 0-1       # doctest: +SKIP
>>> out["boxes"], out["scores"], out["labels"], out["num_detections"]              # doctest: +SKIP

The graph takes a fixed-size batch ``images`` (``float32 [B, 3, H, W]``, RGB in 0-1; the
model normalises it inside, as in PyTorch) and returns fixed-shape padded outputs, NMS
included:

========================  =================  ==================================================
``boxes``                 ``float [B, K, 4]``  x1, y1, x2, y2 in the input image's pixels
``scores``                ``float [B, K]``     best first; 0 in empty slots
``labels``                ``int64 [B, K]``     ``0..num_classes-1`` (no background slot); -1 in empty slots
``num_detections``        ``int64 [B]``        how many of the K slots of each image hold a detection
========================  =================  ==================================================

``K`` is the model's ``max_dets``. The graph is the detector's own :meth:`detect` (batched
post-processing of :mod:`lossreg.ops.postprocess`), so it gives the same detections as
``model(images)`` in eval mode; every architecture exports (Faster R-CNN with its RoIAlign,
VFNet with its deformable convolutions as ONNX ``DeformConv``). ONNX needs the ``export``
extra (``pip install "lossreg[export]"``: onnx, onnxruntime, onnxscript); the ONNX file's
metadata holds the class names, the input size and the post-processing settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["EXPORT_FORMATS", "OUTPUT_NAMES", "DetectionGraph", "export_model", "load_onnx", "resolve_image_size"]

#: ``format=`` values of :func:`export_model`.
EXPORT_FORMATS = ("onnx", "exported-program")
#: Names of the exported graph's outputs, in order.
OUTPUT_NAMES = ("boxes", "scores", "labels", "num_detections")
_EXTRA_HINT = 'ONNX export needs the export extra: pip install "lossreg[export]" (onnx, onnxruntime, onnxscript)'


class DetectionGraph(nn.Module):
    """What is exported: ``images [B, 3, H, W]`` -> ``(boxes, scores, labels, num_detections)`` of ``model.detect``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(model, "detect", None)):
            raise TypeError(f"{type(model).__name__} has no detect(images) method; only lossreg detectors export")
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(self.model.detect(images))  # type: ignore[return-value]


_NMS_FAKE_FIXED = False


def _fix_nms_fake() -> None:
    """Give ``torchvision::nms`` a fake (meta) kernel whose output may hold 0 or 1 boxes.

    torchvision's registers the kept count with ``create_unbacked_symint()``, whose lower
    bound is 2, so a traced graph asserts at run time that NMS kept at least two boxes (and,
    through the sizes derived from it, that at least two candidates passed the score
    threshold): an ExportedProgram then fails on an image with fewer. Only tracing uses this
    kernel; eager NMS is untouched.
    """
    global _NMS_FAKE_FIXED
    if _NMS_FAKE_FIXED:
        return
    import torchvision  # noqa: F401  (registers torchvision::nms)

    def nms_fake(dets: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        torch._check(dets.dim() == 2 and dets.size(1) == 4, lambda: f"boxes should be [N, 4], got {tuple(dets.shape)}")
        torch._check(scores.dim() == 1 and scores.size(0) == dets.size(0), lambda: "boxes and scores disagree")
        num_to_keep = torch.library.get_ctx().new_dynamic_size(min=0)
        return dets.new_empty(num_to_keep, dtype=torch.long)

    torch.library.register_fake("torchvision::nms", nms_fake, allow_override=True)
    _NMS_FAKE_FIXED = True


def resolve_image_size(model: nn.Module, image_size: int | Sequence[int] | None) -> tuple[int, int]:
    """``(H, W)`` from an int (square), a pair, or ``None`` (the model's recipe ``data.image_size``)."""
    if image_size is None:
        from .engine.eval_folder import model_image_size

        image_size = model_image_size(model)
        if image_size is None:
            raise ValueError("the model does not say which image size it was trained at; give image_size=(H, W)")
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
        if len(size) == 1:
            size = (size[0], size[0])
    if len(size) != 2 or any(isinstance(s, bool) or s < 32 for s in size):
        raise ValueError(f"image_size must be H or (H, W) with sides of at least 32 px, got {image_size!r}")
    return size  # type: ignore[return-value]


def _metadata(model: nn.Module, size: tuple[int, int], batch_size: int) -> dict[str, str]:
    head = getattr(model, "roi_head", None) or getattr(model, "head", None)
    meta = {
        "producer": "lossreg",
        "architecture": str(getattr(model, "arch", "") or type(model).__name__),
        "num_classes": str(getattr(model, "num_classes", "")),
        "label_names": json.dumps(getattr(model, "label_names", None)),
        "input": "images: float32 [B, 3, H, W] RGB in 0-1 (normalised inside)",
        "image_size": json.dumps(list(size)),
        "batch_size": str(batch_size),
        "outputs": "boxes [B, K, 4] xyxy px; scores [B, K]; labels [B, K] (0..C-1, -1 empty); num_detections [B]",
    }
    for key in ("score_thr", "nms_thr", "max_dets"):
        if head is not None and hasattr(head, key):
            meta[key] = str(getattr(head, key))
    return meta


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporter's progress prints and torchvision's deprecation warnings, silenced."""
    import io
    import logging
    from contextlib import redirect_stderr, redirect_stdout

    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def export_model(
    model: nn.Module | str | os.PathLike[str],
    path: str | os.PathLike[str],
    format: str = "onnx",
    image_size: int | Sequence[int] | None = None,
    batch_size: int = 1,
    opset: int | None = None,
) -> Path:
    """Export ``model``'s detection graph for a fixed batch ``[batch_size, 3, H, W]`` to ``path``.

    Args:
        model: a lossreg detector, or anything :func:`lossreg.load_model` takes (a run
            folder, a saved model folder, ``hf-hub:owner/repo``, a pretrained ``name.tag``).
        path: the file written (``.onnx``; ``.pt2`` for an ExportedProgram).
        format: ``"onnx"`` or ``"exported-program"`` (``torch.export.save``; load it back
            with ``torch.export.load(path).module()``, torchvision imported).
        image_size: ``H`` (square) or ``(H, W)`` of the input [the recipe's ``data.image_size``].
        batch_size: images per call, fixed in the graph.
        opset: ONNX opset [the exporter's default; at least 19, for ``DeformConv``].

    Returns the path. The model's mode and weights are left as they were. Raises
    ``ValueError`` on a bad format, size or batch, ``ImportError`` without the ONNX
    packages (``lossreg[export]``).
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(model, nn.Module):
        from .engine.runs import load_model

        model = load_model(model)
    size = resolve_image_size(model, image_size)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example = (torch.rand(batch_size, 3, *size, device=device),)
    graph = DetectionGraph(model)
    was_training = model.training
    model.eval()
    _fix_nms_fake()
    try:
        with _quiet(), torch.no_grad():
            program = torch.export.export(graph, example, strict=False)
            if format == "exported-program":
                torch.export.save(program, out)
                return out
            try:
                import onnx  # noqa: F401
                import onnxscript  # noqa: F401
            except ImportError as exc:
                raise ImportError(f"{_EXTRA_HINT} ({exc})") from None
            kwargs: dict[str, Any] = {"opset_version": max(opset or 20, 19)}
            onnx_program = torch.onnx.export(
                program,
                example,
                dynamo=True,
                input_names=["images"],
                output_names=list(OUTPUT_NAMES),
                verbose=False,
                **kwargs,
            )
            onnx_program.model.metadata_props.update(_metadata(model, size, batch_size))
            onnx_program.save(str(out))
        return out
    finally:
        model.train(was_training)


def load_onnx(
    path: str | os.PathLike[str], threads: int | None = None, providers: Sequence[str] = ("CPUExecutionProvider",)
) -> Callable[[Any], dict[str, Any]]:
    """An onnxruntime session of an exported detector as a function ``images -> {output name: numpy array}``.

    ``images`` is a float ``[B, 3, H, W]`` array or tensor in 0-1 of the exported batch and
    size; ``threads`` sets onnxruntime's intra-op threads [its default]. The function's
    ``session`` and ``metadata`` attributes give the session and the file's metadata.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError(f"{_EXTRA_HINT} ({exc})") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=list(providers))
    name = session.get_inputs()[0].name

    def run(images: Any) -> dict[str, Any]:
        array = images.detach().cpu().numpy() if isinstance(images, Tensor) else images
        values = session.run(None, {name: array.astype("float32", copy=False)})
        return dict(zip([o.name for o in session.get_outputs()], values))

    run.session = session  # type: ignore[attr-defined]
    run.metadata = dict(session.get_modelmeta().custom_metadata_map)  # type: ignore[attr-defined]
    return run
