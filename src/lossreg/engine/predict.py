"""Detections on image files, drawn and saved: the library side of ``lossreg predict``.

>>> model = lossreg.load_model("runs/quickstart")                               # doctest: +SKIP
>>> paths = expand_images(["photos/", "extra/*.png", "one.jpg"])               # doctest: +SKIP
>>> records = write_predictions(model, paths, "out", image_size=256)           # doctest: +SKIP

Images are resized exactly as evaluation resizes them
(:func:`~lossreg.data.build_transforms` with ``train=False``), the detector runs in
eval mode, and its boxes are mapped back to the original pixels with
:func:`~lossreg.data.unscale_boxes`.
"""

from __future__ import annotations

import glob
import io
import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._io import atomic_write_bytes, atomic_write_text
from ..data import build_transforms, unscale_boxes
from .precision import resolve_precision
from .video import VideoWriter, output_suffix, read_video

__all__ = [
    "IMAGE_SUFFIXES",
    "draw_detections",
    "expand_images",
    "iter_frame_predictions",
    "iter_predictions",
    "read_image",
    "write_predictions",
    "write_video_predictions",
]

logger = logging.getLogger(__name__)

#: Files a folder argument contributes (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

_PALETTE = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0),
]


def expand_images(items: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image paths from files, folders (their ``.jpg``/``.jpeg``/``.png`` files, sorted, not
    recursive) and glob patterns (``*``, ``?``, ``[``; ``**`` recurses), in argument order,
    each path once.

    Raises ``FileNotFoundError`` naming a missing file, a pattern matching no file, or a
    folder without images.
    """
    out: list[Path] = []
    for item in items:
        text = os.fspath(item)
        path = Path(os.path.expanduser(text))
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"folder {text!r} holds no {'/'.join(IMAGE_SUFFIXES)} images")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        elif any(ch in text for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True) if Path(p).is_file())
            if not found:
                raise FileNotFoundError(f"no image file matches {text!r}")
            out.extend(found)
        else:
            raise FileNotFoundError(f"image file {text!r} does not exist")
    return list(dict.fromkeys(out))


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The file as ``uint8 [H, W, 3]`` RGB; ``FileNotFoundError`` / ``ValueError`` naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {str(path)!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image: {exc}") from None


def _check_readable(paths: Sequence[Path]) -> None:
    """Open every file's header, so a bad one is named before any work is done."""
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        try:
            with Image.open(path):
                pass
        except FileNotFoundError:
            raise FileNotFoundError(f"image file {str(path)!r} does not exist") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read image: {exc}") from None


@torch.no_grad()
def iter_predictions(
    model: nn.Module,
    paths: Sequence[str | os.PathLike[str]],
    image_size: int | Sequence[int],
    score_thr: float = 0.3,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    progress: bool = False,
    amp: str | bool = "fp32",
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Per image, ``(rgb, record)``: the ``uint8 [H, W, 3]`` image and
    ``{"file", "width", "height", "detections": [{"box" [x1, y1, x2, y2] px, "score", "label",
    "label_name"}]}`` with the detections scoring at least ``score_thr``, best first.

    ``model`` runs in eval mode on ``device`` (its mode is restored afterwards), under the
    autocast that ``amp`` names (``fp32`` [default]: none; ``bf16``, ``fp16``, or ``auto``:
    bf16 where the device runs it natively, as ``train.amp``; :mod:`lossreg.engine.precision`).
    """
    bar = tqdm(total=len(paths), desc="predict", disable=not progress, leave=False)
    frames = ((str(Path(p)), read_image(p)) for p in paths)
    for rgb, record in iter_frame_predictions(model, frames, image_size, score_thr, device, batch_size, amp):
        bar.update(1)
        yield rgb, record
    bar.close()


@torch.no_grad()
def iter_frame_predictions(
    model: nn.Module,
    frames: Iterable[tuple[str, np.ndarray]],
    image_size: int | Sequence[int],
    score_thr: float = 0.3,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    amp: str | bool = "fp32",
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """:func:`iter_predictions` of in-memory frames: ``(name, uint8 [H, W, 3] RGB)`` pairs, read
    lazily ``batch_size`` at a time (a video's frames, a folder's images); ``record["file"]`` is the name."""
    device = torch.device(device)
    precision = resolve_precision(amp, device)
    transform = build_transforms((), image_size, train=False)
    names = getattr(model, "label_names", None)
    was_training = model.training
    model.eval()
    try:
        frames = iter(frames)
        while True:
            chunk = list(itertools.islice(frames, batch_size))
            if not chunk:
                break
            tensors, scales = [], []
            for _, rgb in chunk:
                sample = transform(rgb, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))
                tensors.append(torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1))).float().div_(255.0))
                scales.append(sample["scale"])
            with torch.autocast(device.type, dtype=precision.dtype or torch.float32, enabled=precision.autocast):
                dets = model([t.to(device) for t in tensors])
            for (name, rgb), scale, det in zip(chunk, scales, dets):
                h, w = rgb.shape[:2]
                boxes = unscale_boxes(det["boxes"].float().cpu(), scale, (h, w))
                scores = det["scores"].float().cpu()
                labels = det["labels"].cpu()
                keep = scores >= score_thr
                order = torch.argsort(scores[keep], descending=True)
                detections = [
                    {
                        "box": [round(float(v), 2) for v in box],
                        "score": round(float(score), 4),
                        "label": int(label),
                        "label_name": names[int(label)] if names else str(int(label)),
                    }
                    for box, score, label in zip(boxes[keep][order].tolist(), scores[keep][order].tolist(),
                                                 labels[keep][order].tolist())
                ]
                yield rgb, {"file": name, "width": int(w), "height": int(h), "detections": detections}
    finally:
        model.train(was_training)


def draw_detections(rgb: np.ndarray, detections: Sequence[dict[str, Any]], width: int = 2) -> np.ndarray:
    """``rgb`` (``uint8 [H, W, 3]``) with each detection's box and ``"label_name score"`` drawn
    (:func:`torchvision.utils.draw_bounding_boxes`, one colour per label); a new array."""
    from torchvision.utils import draw_bounding_boxes

    if not detections:
        return rgb.copy()
    image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    boxes = torch.tensor([d["box"] for d in detections], dtype=torch.float32)
    texts = [f"{d['label_name']} {d['score']:.2f}" for d in detections]
    colors = [_PALETTE[int(d["label"]) % len(_PALETTE)] for d in detections]
    drawn = draw_bounding_boxes(image, boxes, labels=texts, colors=colors, width=width)
    return drawn.permute(1, 2, 0).numpy()


def _unique_name(stem: str, taken: set[str]) -> str:
    name, n = f"{stem}.jpg", 1
    while name in taken:
        name, n = f"{stem}-{n}.jpg", n + 1
    taken.add(name)
    return name


def write_predictions(
    model: nn.Module,
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    image_size: int | Sequence[int],
    score_thr: float = 0.3,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    progress: bool = False,
    videos: Sequence[str | os.PathLike[str]] = (),
    max_frames: int | None = None,
    amp: str | bool = "fp32",
) -> list[dict[str, Any]]:
    """Run :func:`iter_predictions` and write ``out_dir/predictions.json`` (the records, each
    with ``"output"``: its drawn image), and per image ``out_dir/<stem>.jpg`` (drawn) and
    ``out_dir/<stem>.json`` (its record; ``<stem>-1.*`` when two inputs share a stem): a
    folder of a video's frames gives annotated frames and a JSON per frame. Every image
    file's header is checked before the model runs.

    ``videos``: video files (:func:`write_video_predictions`), each
    written as an annotated video ``<stem>.mp4`` (``.gif`` for a GIF) and a JSON per frame
    in ``<stem>/``; their records in predictions.json say where (``"type": "video"``).
    ``max_frames`` caps the frames read from each video; ``amp`` as :func:`iter_predictions`.
    Returns the records.
    """
    from PIL import Image

    paths = [Path(p) for p in paths]
    _check_readable(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, taken = [], set()
    for rgb, record in iter_predictions(model, paths, image_size, score_thr, device, batch_size, progress, amp):
        name = _unique_name(Path(record["file"]).stem, taken)
        buf = io.BytesIO()
        Image.fromarray(draw_detections(rgb, record["detections"])).save(buf, format="JPEG", quality=90)
        atomic_write_bytes(out / name, buf.getvalue())
        records.append({**record, "output": name})
        atomic_write_text(out / f"{Path(name).stem}.json", json.dumps(records[-1], indent=2) + "\n")
        logger.debug("%s: %d detections", record["file"], len(record["detections"]))
    for video in videos:
        records.append(write_video_predictions(model, video, out, image_size, score_thr, device, batch_size,
                                               progress, taken=taken, max_frames=max_frames, amp=amp))
    atomic_write_text(out / "predictions.json", json.dumps(records, indent=2) + "\n")
    return records


@torch.no_grad()
def write_video_predictions(
    model: nn.Module,
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    image_size: int | Sequence[int],
    score_thr: float = 0.3,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    progress: bool = False,
    taken: set[str] | None = None,
    max_frames: int | None = None,
    amp: str | bool = "fp32",
) -> dict[str, Any]:
    """Detect objects in every frame of a video; write the annotated video and a JSON per frame.

    Writes ``out_dir/<stem>.mp4`` (or ``.gif``; same frame rate and size, boxes and
    ``label_name score`` drawn) and ``out_dir/<stem>/<frame:06d>.json`` per frame: ``file``,
    ``frame`` (0-based), ``time`` (s), ``width``, ``height`` and ``detections`` as
    :func:`~lossreg.engine.predict.iter_predictions` gives them. ``taken`` holds output names
    already used in ``out_dir`` (``<stem>-1`` when taken). Returns the video's record:
    ``{"file", "type": "video", "fps", "frames", "width", "height", "num_detections" (their
    total), "output", "frames_dir"}``.
    """
    path = Path(path)
    fps, count, frames = read_video(path)
    if max_frames is not None:
        import itertools

        frames = itertools.islice(frames, int(max_frames))
        count = min(count, int(max_frames)) if count else int(max_frames)
    out = Path(out_dir)
    stem = Path(_unique_name(path.stem, taken if taken is not None else set())).stem
    suffix = output_suffix(path)
    frames_dir = out / stem
    frames_dir.mkdir(parents=True, exist_ok=True)
    writer = VideoWriter(out / f"{stem}{suffix}", fps)
    n, total, size = 0, 0, (0, 0)
    bar = tqdm(total=count, desc=f"predict {path.name}", disable=not progress, leave=False)
    try:
        named = ((f"{path}#{i}", frame) for i, frame in enumerate(frames))
        for rgb, record in iter_frame_predictions(model, named, image_size, score_thr, device, batch_size, amp):
            writer.write(draw_detections(rgb, record["detections"]))
            frame_record = {"file": str(path), "frame": n, "time": round(n / fps, 4), **{k: v for k, v in record.items()
                                                                                         if k != "file"}}
            atomic_write_text(frames_dir / f"{n:06d}.json", json.dumps(frame_record, indent=2) + "\n")
            size = (record["width"], record["height"])
            n += 1
            total += len(record["detections"])
            bar.update(1)
    finally:
        writer.close()
        bar.close()
    if n == 0:
        raise ValueError(f"{path}: the video has no frame that could be read")
    logger.debug("%s: %d frames, %d detections", path, n, total)
    return {
        "file": str(path),
        "type": "video",
        "fps": round(fps, 3),
        "frames": n,
        "width": size[0],
        "height": size[1],
        "num_detections": total,
        "output": f"{stem}{suffix}",
        "frames_dir": f"{stem}/",
    }
