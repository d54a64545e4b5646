"""Videos for ``lossreg predict``: frames in, an annotated video and a JSON per frame out.

Reading: animated GIFs with PIL; other containers (``.mp4``, ``.avi``, ``.mov``, ``.mkv``,
``.webm``, ``.m4v``) with OpenCV's ``cv2.VideoCapture`` (OpenCV comes with albumentations;
torchvision 0.22+ no longer reads videos itself). Writing: ``<stem>.mp4`` with OpenCV
(``mp4v``), or an animated ``<stem>.gif`` with PIL for a GIF input or where OpenCV is
missing. Frames are read and detected a batch at a time, so a long video never sits in
memory. A folder of frames needs nothing of this: ``lossreg predict`` reads it as images.

>>> record = write_video_predictions(model, "clip.mp4", "out", image_size=512)   # doctest: +SKIP
>>> record["output"], record["frames_dir"], record["frames"]                     # doctest: +SKIP
('clip.mp4', 'clip/', 250)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["VIDEO_SUFFIXES", "VideoWriter", "is_video", "output_suffix", "read_video"]

logger = logging.getLogger(__name__)

#: Inputs ``lossreg predict`` reads as videos (case-insensitive).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif")
_PIL_SUFFIXES = (".gif",)


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a video by its suffix (:data:`VIDEO_SUFFIXES`)."""
    return Path(os.fspath(path)).suffix.lower() in VIDEO_SUFFIXES


def _pil_frames(path: Path) -> tuple[float, int | None, Iterator[np.ndarray]]:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        duration = float(im.info.get("duration") or 100.0)  # ms per frame
        count = int(getattr(im, "n_frames", 1))

    def frames() -> Iterator[np.ndarray]:
        with Image.open(path) as im:
            for frame in ImageSequence.Iterator(im):
                yield np.asarray(frame.convert("RGB"))

    return 1000.0 / max(duration, 1.0), count, frames()


def _cv2_frames(path: Path) -> tuple[float, int | None, Iterator[np.ndarray]]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot read video (OpenCV could not open it)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                yield np.ascontiguousarray(bgr[:, :, ::-1])
        finally:
            cap.release()

    return fps, count, frames()


def read_video(path: str | os.PathLike[str]) -> tuple[float, int | None, Iterator[np.ndarray]]:
    """``(fps, frame count or None, frames)``: the frames as ``uint8 [H, W, 3]`` RGB arrays, read lazily.

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` for one no reader can
    open, ``ImportError`` when OpenCV is missing for a non-GIF video.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file {str(path)!r} does not exist")
    if path.suffix.lower() in _PIL_SUFFIXES:
        return _pil_frames(path)
    try:
        return _cv2_frames(path)
    except ImportError:
        raise ImportError(f"{path}: reading this video needs OpenCV (pip install opencv-python-headless)") from None


class VideoWriter:
    """An annotated video: ``.mp4`` through OpenCV, else an animated GIF through PIL."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps, self.cv2_writer, self.gif_frames = path, fps, None, None
        if path.suffix == ".gif":
            self.gif_frames = []

    def write(self, rgb: np.ndarray) -> None:
        if self.gif_frames is not None:
            from PIL import Image

            self.gif_frames.append(Image.fromarray(rgb))
            return
        import cv2

        if self.cv2_writer is None:
            h, w = rgb.shape[:2]
            self.cv2_writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.cv2_writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write an mp4v video here")
        self.cv2_writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))

    def close(self) -> None:
        if self.cv2_writer is not None:
            self.cv2_writer.release()
        if self.gif_frames:
            duration = int(round(1000.0 / max(self.fps, 1e-3)))
            self.gif_frames[0].save(self.path, save_all=True, append_images=self.gif_frames[1:], duration=duration,
                                    loop=0)


def output_suffix(path: Path) -> str:
    if path.suffix.lower() in _PIL_SUFFIXES:
        return ".gif"
    try:
        import cv2  # noqa: F401
    except ImportError:
        return ".gif"
    return ".mp4"
