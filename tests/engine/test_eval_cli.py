"""`lossreg eval MODEL_OR_RUN` on COCO JSON and VOC data, class matching, and `lossreg predict`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lossreg.cli import main
from lossreg.data import CLASS_NAMES, make_synthetic
from lossreg.engine.eval_folder import match_labels
from lossreg.engine.evaluate import METRIC_KEYS
from lossreg.engine.trainer import Trainer

EVAL_FILES = ["detections.json", "metrics.json", "pr_curve.png", "score_iou.png"]
METRICS = {*METRIC_KEYS, "per_class", "score_iou_correlation", "score_iou_spearman", "score_iou_pairs", "score_thr",
           "num_images", "num_detections", "model", "data", "image_size", "amp"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_root) -> Path:
    """A run folder trained for 3 iterations; a low score threshold so the young model reports detections."""
    from .conftest import make_recipe

    recipe = make_recipe(synthetic_root, train={"epochs": 1, "warmup_iters": 1},
                         eval={"batch_size": 3, "score_thr": 0.001, "max_dets": 20})
    out = tmp_path_factory.mktemp("run")
    Trainer(recipe, output_dir=out, device="cpu").train()
    return out


@pytest.fixture(scope="module")
def val_coco(synthetic_root) -> tuple[Path, Path]:
    """The run's validation split (3 images of 64 px) as written on disk: annotations.json and images/."""
    return make_synthetic(synthetic_root, split="val", num_images=3, image_size=64)


def _check_metrics(folder: Path, num_images: int, score_thr: float = 0.05, voc: bool = False) -> dict:
    assert sorted(p.name for p in folder.iterdir()) == EVAL_FILES
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) - {"weights", "weights_ema"} == METRICS | ({"voc07_mAP", "voc12_mAP", "voc_per_class"} if voc else set())
    assert all(metrics[k] is None or 0.0 <= metrics[k] <= 1.0 for k in METRIC_KEYS)
    assert metrics["num_images"] == num_images and metrics["image_size"] == 64
    detections = json.loads((folder / "detections.json").read_text())
    assert len(detections) == metrics["num_detections"] > 0
    assert metrics["score_thr"] == score_thr
    assert metrics["score_iou_pairs"] == sum(d["score"] >= score_thr for d in detections)
    if metrics["score_iou_pairs"] >= 2:
        assert -1.0 <= metrics["score_iou_correlation"] <= 1.0
    for png in ("pr_curve.png", "score_iou.png"):
        assert (folder / png).read_bytes()[:4] == b"\x89PNG"
    return metrics


def test_eval_run_folder_on_a_coco_json(run, val_coco, capsys):
    ann_file, _ = val_coco  # images/ next to the JSON: found without --images
    assert main(["eval", str(run), "--data", str(ann_file), "--device", "cpu", "--score-thr", "0.001"]) == 0
    printed = capsys.readouterr().out
    metrics = _check_metrics(run / "eval-annotations", 3, score_thr=0.001)
    assert metrics["score_iou_pairs"] == metrics["num_detections"] > 10  # every detection scores >= 0.001
    assert -1.0 <= metrics["score_iou_correlation"] <= 1.0 and -1.0 <= metrics["score_iou_spearman"] <= 1.0
    assert metrics["data"] == "annotations" and metrics["model"] == str(run)
    assert sorted(metrics["per_class"]) == sorted(CLASS_NAMES)
    # the same split as training's final evaluation, with the same model: the same numbers
    final = json.loads((run / "metrics.json").read_text())
    assert {k: metrics[k] for k in ("AP", "AP50", "per_class")} == {k: final[k] for k in ("AP", "AP50", "per_class")}
    assert f"  AP50   {metrics['AP50']:.4f}" in printed
    assert (f"score-IoU consistency of {metrics['num_detections']} detections with score >= 0.001: "
            f"Pearson r = {metrics['score_iou_correlation']:.4f}, Spearman rho = {metrics['score_iou_spearman']:.4f}") in printed
    assert f"wrote {run / 'eval-annotations'}/" in printed


def test_eval_default_split_and_the_old_weights_form(run, tmp_path, capsys):
    assert main(["eval", str(run), "--device", "cpu"]) == 0  # the recipe's data.val
    default = _check_metrics(run / "eval-val", 3)
    assert default["data"] == "val"
    out = tmp_path / "old"
    assert main(["eval", str(run / "recipe.yaml"), "--weights", str(run), "--output", str(out), "--device", "cpu"]) == 0
    old = _check_metrics(out, 3)
    # a run folder with --weights: a checkpoint of the run, evaluated into a folder of its own
    assert main(["eval", str(run), "--weights", str(run / "checkpoints" / "last"), "--device", "cpu"]) == 0
    checkpoint = _check_metrics(run / "eval-val-last", 3)
    assert checkpoint["weights"].endswith("last.safetensors") and checkpoint["weights_ema"] is False
    final = json.loads((run / "metrics.json").read_text())
    for metrics in (default, old, checkpoint):
        assert {k: metrics[k] for k in ("AP", "AP50", "per_class")} == {k: final[k] for k in ("AP", "AP50", "per_class")}
    assert old["score_iou_correlation"] == pytest.approx(default["score_iou_correlation"])
    capsys.readouterr()


def _write_voc(root: Path, ann_file: Path, image_dir: Path) -> list[str]:
    """A VOC folder of the COCO set (1-based inclusive pixels), val.txt listing all and train.txt two images.

    (Not one: at 64 px the tiny model's coarsest level is 1 x 1, and GroupNorm needs more than one value.)"""
    coco = json.loads(ann_file.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    stems = []
    for img in coco["images"]:
        stem = Path(img["file_name"]).stem
        stems.append(stem)
        shutil.copy(image_dir / img["file_name"], root / "JPEGImages" / img["file_name"])
        objects = "".join(
            f"<object><name>{names[a['category_id']]}</name><difficult>0</difficult><bndbox>"
            f"<xmin>{a['bbox'][0] + 1}</xmin><ymin>{a['bbox'][1] + 1}</ymin>"
            f"<xmax>{a['bbox'][0] + a['bbox'][2]}</xmax><ymax>{a['bbox'][1] + a['bbox'][3]}</ymax></bndbox></object>"
            for a in coco["annotations"] if a["image_id"] == img["id"]
        )
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><size><width>{img['width']}</width><height>{img['height']}</height><depth>3</depth></size>"
            f"{objects}</annotation>"
        )
    (root / "ImageSets" / "Main" / "val.txt").write_text("\n".join(stems) + "\n")
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(stems[:2]) + "\n")
    return stems


def test_eval_on_a_voc_folder(run, val_coco, tmp_path, capsys):
    voc = tmp_path / "VOCtiny"
    _write_voc(voc, *val_coco)
    out = tmp_path / "voc-eval"
    assert main(["eval", str(run), "--data", str(voc), "--output", str(out), "--device", "cpu"]) == 0
    metrics = _check_metrics(out, 3, voc=True)  # val.txt (3 images) chosen over train.txt (2)
    assert 0.0 <= metrics["voc07_mAP"] <= 1.0 and 0.0 <= metrics["voc12_mAP"] <= 1.0  # VOC data: the devkit's mAP
    assert metrics["data"] == "VOCtiny-val"
    present = {c["name"] for c in json.loads(val_coco[0].read_text())["categories"]
               if any(a["category_id"] == c["id"] for a in json.loads(val_coco[0].read_text())["annotations"])}
    assert set(metrics["per_class"]) == present  # a VOC split names the classes it holds
    # the same boxes as the COCO file: the same AP over all sizes
    final = json.loads((run / "metrics.json").read_text())
    assert metrics["AP"] == pytest.approx(final["AP"]) and metrics["AP50"] == pytest.approx(final["AP50"])
    assert main(["eval", str(run), "--data", str(voc), "--split", "train", "--output", str(tmp_path / "t"),
                 "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["num_images"] == 2
    capsys.readouterr()


def test_class_mismatch_is_a_one_line_error_naming_the_classes(run, val_coco, tmp_path, capsys):
    ann_file, image_dir = val_coco
    coco = json.loads(ann_file.read_text())
    coco["categories"][0]["name"] = "circle"  # ellipse renamed
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(coco))
    assert main(["eval", str(run), "--data", str(renamed), "--images", str(image_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lossreg eval: error: the dataset's classes do not match the model's: ['circle']")
    assert "'ellipse'" in err and err.count("\n") == 1 and not (tmp_path / "renamed").exists()
    # without --images, a JSON whose images are elsewhere says where it looked
    assert main(["eval", str(run), "--data", str(renamed), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "cannot find the images of" in err and "--images DIR" in err
    assert main(["eval", "quickstart"]) == 2
    assert "'quickstart' is a recipe: evaluate weights trained from it with --weights PATH" in capsys.readouterr().err


def test_match_labels():
    assert match_labels(["a", "b", "c"], 3, ["c", "a"]) == [1, -1, 0]  # by name; b is not in the dataset
    assert match_labels(None, 2, ["x", "y"]) == [0, 1]
    with pytest.raises(ValueError, match=r"\['z'\] are not classes of the model \(model: \['a', 'b'\]; dataset: \['a', 'z'\]\)"):
        match_labels(["a", "b"], 2, ["a", "z"])
    with pytest.raises(ValueError, match="the model has 3 unnamed classes but the dataset has 2 \\(x, y\\)"):
        match_labels(None, 3, ["x", "y"])


def test_predict_a_folder_of_two_images(run, val_coco, tmp_path, capsys):
    ann_file, image_dir = val_coco
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(image_dir / "000000.png", folder / "a.png")  # image_id 1
    Image.open(image_dir / "000002.png").convert("RGB").resize((96, 48)).save(folder / "b.jpg", quality=95)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "preds"
    argv = ["--image-size", "96", "--device", "cpu"]  # 64 px images enlarged 1.5 times: boxes must come back
    assert main(["predict", str(run), str(folder), "--out", str(out), "--score-thr", "0.001", *argv]) == 0
    assert "2 images" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.json", "b.jpg", "b.json", "predictions.json"]
    records = json.loads((out / "predictions.json").read_text())
    assert [json.loads((out / f"{s}.json").read_text()) for s in "ab"] == records  # one JSON per image (frame)
    assert [(Path(r["file"]).name, r["width"], r["height"], r["output"]) for r in records] == [
        ("a.png", 64, 64, "a.jpg"), ("b.jpg", 96, 48, "b.jpg")
    ]
    for r in records:
        assert 0 < len(r["detections"]) <= 20
        scores = [d["score"] for d in r["detections"]]
        assert scores == sorted(scores, reverse=True) and min(scores) >= 0.001
        for d in r["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= r["width"] and 0 <= y1 <= y2 <= r["height"]
            assert d["label_name"] == CLASS_NAMES[d["label"]]
        with Image.open(out / r["output"]) as im:
            assert im.size == (r["width"], r["height"])
    drawn = np.asarray(Image.open(out / "a.jpg").convert("RGB")).astype(int)
    plain = np.asarray(Image.open(folder / "a.png").convert("RGB")).astype(int)
    assert np.abs(drawn - plain).max() > 100  # boxes were drawn
    # a.png is image 1 of the validation split: predict maps boxes back as evaluation does
    assert main(["eval", str(run), "--data", str(ann_file), "--output", str(tmp_path / "ev"), *argv]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["image_size"] == 96
    evaluated = [d for d in json.loads((tmp_path / "ev" / "detections.json").read_text()) if d["image_id"] == 1]
    expected = sorted(([d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]], d["score"])
                      for d in evaluated)
    got = sorted((d["box"], d["score"]) for d in records[0]["detections"])
    assert len(got) == len(expected)
    for (box, score), (want_box, want_score) in zip(got, expected):
        assert box == pytest.approx(want_box, abs=0.01) and score == pytest.approx(want_score, abs=1e-4)
    capsys.readouterr()


def test_predict_and_eval_under_bf16_autocast(run, val_coco, tmp_path, capsys):
    """--amp bf16 runs the forward in bf16: close to fp32's detections, not bit-identical, recorded in metrics.json."""
    _, image_dir = val_coco
    out = {}
    for amp in ("fp32", "bf16"):
        out[amp] = tmp_path / amp
        # the folder's 3 images in one batch: the tiny head's GroupNorm (1 channel a group) on its 1x1 level
        # needs more than one value, which torch counts over the batch
        argv = ["predict", str(run), str(image_dir), "--out", str(out[amp]), "--score-thr", "0.001",
                "--device", "cpu", "--amp", amp]
        assert main(argv) == 0
    fp32, bf16 = (json.loads((out[a] / "predictions.json").read_text())[0]["detections"] for a in ("fp32", "bf16"))
    assert fp32 and bf16 and fp32 != bf16  # autocast was on
    assert bf16[0]["score"] == pytest.approx(fp32[0]["score"], abs=0.02)
    assert main(["eval", str(run), "--device", "cpu", "--amp", "bf16", "--output", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["amp"] == "bf16" and 0.0 <= metrics["AP"] <= 1.0
    with pytest.raises(SystemExit):
        main(["eval", str(run), "--amp", "int8"])
    capsys.readouterr()


def test_predict_names_missing_and_unreadable_images(run, tmp_path, capsys):
    assert main(["predict", str(run), str(tmp_path / "gone.jpg"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"lossreg predict: error: image file {str(tmp_path / 'gone.jpg')!r} does not exist\n"
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a jpeg")
    assert main(["predict", str(run), str(bad), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lossreg predict: error: {bad}: cannot read image") and err.count("\n") == 1
    assert not (tmp_path / "o" / "predictions.json").exists()
    assert main(["predict", str(run), str(tmp_path / "*.png"), "--out", str(tmp_path / "o")]) == 2
    assert "no image file matches" in capsys.readouterr().err


@pytest.mark.parametrize("command,pieces", [
    ("eval", ["MODEL_OR_RUN", "--data", "--ann", "--images", "--split", "--image-size", "pr_curve.png",
              "score_iou.png", "metrics.json", "--weights", "examples:"]),
    ("predict", ["IMAGES", "--out", "--score-thr", "predictions.json", "examples:"]),
])
def test_help_explains(command, pieces, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert all(piece in text for piece in pieces), [p for p in pieces if p not in text]
