"""`lossreg predict` on videos (OpenCV for .mp4, PIL for .gif) and on a folder of frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import lossreg
from lossreg.cli import main
from lossreg.engine.video import is_video, read_video


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = lossreg.create_model(
        "atss_resnet18_fpn", num_classes=2, label_names=["disc", "bar"], score_thr=0.0, max_dets=5,
        neck={"name": "fpn", "out_channels": 32, "extra": "none"},
        head={"feat_channels": 64, "stacked_convs": 1, "strides": [8, 16, 32]},
    )
    folder = tmp_path_factory.mktemp("model")
    lossreg.save_pretrained(model, folder)
    return folder


def _frames(n=5, h=48, w=80):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        frame = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        frame[10:30, 5 + 8 * i : 25 + 8 * i] = 230  # a moving square
        out.append(frame)
    return out


def _check_frame_jsons(folder, stem, n, width, height, video):
    files = sorted((folder / stem).glob("*.json"))
    assert [f.name for f in files] == [f"{i:06d}.json" for i in range(n)]
    for i, f in enumerate(files):
        rec = json.loads(f.read_text())
        assert rec["file"] == str(video) and rec["frame"] == i and (rec["width"], rec["height"]) == (width, height)
        assert 0 < len(rec["detections"]) <= 5 and {"box", "score", "label", "label_name"} <= set(rec["detections"][0])


def test_predict_an_animated_gif(model_dir, tmp_path, capsys):
    frames = _frames()
    clip = tmp_path / "clip.gif"
    Image.fromarray(frames[0]).save(clip, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                    duration=100, loop=0)
    fps, count, read = read_video(clip)
    assert (fps, count) == (10.0, 5) and [f.shape for f in read] == [(48, 80, 3)] * 5
    out = tmp_path / "preds"
    assert main(["predict", str(model_dir), str(clip), "--out", str(out), "--score-thr", "0", "--image-size", "64",
                 "--device", "cpu"]) == 0
    assert "1 video (5 frames)" in capsys.readouterr().out
    record = json.loads((out / "predictions.json").read_text())[0]
    assert {k: record[k] for k in ("type", "frames", "width", "height", "output", "frames_dir")} == {
        "type": "video", "frames": 5, "width": 80, "height": 48, "output": "clip.gif", "frames_dir": "clip/"}
    with Image.open(out / "clip.gif") as im:
        assert im.n_frames == 5 and im.size == (80, 48)
    _check_frame_jsons(out, "clip", 5, 80, 48, clip)


def test_predict_an_mp4_video_and_max_frames(model_dir, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    frames = _frames(n=6, h=64, w=96)
    clip = tmp_path / "street.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (96, 64))
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write mp4v here")
    for f in frames:
        writer.write(f[:, :, ::-1].copy())
    writer.release()
    assert is_video(clip) and is_video("A.MOV") and not is_video("a.jpg")
    out = tmp_path / "preds"
    assert main(["predict", str(model_dir), str(clip), "--out", str(out), "--score-thr", "0", "--image-size", "64",
                 "--max-frames", "4", "--device", "cpu"]) == 0
    assert "1 video (4 frames)" in capsys.readouterr().out
    record = json.loads((out / "predictions.json").read_text())[0]
    assert record["fps"] == pytest.approx(12.0) and record["output"] == "street.mp4" and record["frames"] == 4
    cap = cv2.VideoCapture(str(out / "street.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 4 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 96
    _check_frame_jsons(out, "street", 4, 96, 64, clip)


def test_predict_a_folder_of_frames_and_a_missing_video(model_dir, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(_frames(n=3)):
        Image.fromarray(f).save(folder / f"{i:04d}.png")
    out = tmp_path / "preds"
    assert main(["predict", str(model_dir), str(folder), "--out", str(out), "--score-thr", "0", "--image-size", "64",
                 "--device", "cpu"]) == 0
    assert "3 images" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{i:04d}.{ext}" for i in range(3) for ext in ("jpg", "json")] + ["predictions.json"])
    assert json.loads((out / "0001.json").read_text())["file"] == str(folder / "0001.png")
    assert main(["predict", str(model_dir), str(tmp_path / "gone.mp4"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
