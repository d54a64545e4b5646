"""Dataset, recipe wiring and collation, ending in a detector training step on synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lossreg
from lossreg.data import DetectionRecord, build_dataset, collate, load_image, read_dataset, unscale_boxes
from lossreg.recipe import ComponentSpec, DataCfg, DatasetCfg


def _synthetic_cfg(root, **params) -> DatasetCfg:
    return DatasetCfg(format="synthetic", root=str(root), params={"num_images": 2, "image_size": 64, **params})


def test_collate_pads_to_32_and_keeps_sizes():
    items = [
        (torch.rand(3, 50, 70), {"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "labels": torch.tensor([0])}),
        (torch.rand(3, 64, 33), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}),
    ]
    images, targets, sizes = collate(items)
    assert images.shape == (2, 3, 64, 96)
    assert sizes == [(50, 70), (64, 33)]
    assert targets[0] is items[0][1] and targets[1] is items[1][1]
    assert torch.equal(images[0, :, :50, :70], items[0][0]) and torch.equal(images[1, :, :64, :33], items[1][0])
    assert images[0, :, 50:].abs().sum() == 0 and images[0, :, :, 70:].abs().sum() == 0
    assert images[1, :, :, 33:].abs().sum() == 0
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_synthetic_dataset_items(tmp_path):
    data_cfg = DataCfg(image_size=96, augment=(ComponentSpec("HorizontalFlip", {"p": 0.5}),))
    ds = build_dataset(_synthetic_cfg(tmp_path), data_cfg, train=True)
    assert len(ds) == 2 and ds.class_names == list(lossreg.data.CLASS_NAMES)
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, 96, 96)
        assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.01
        boxes, labels = target["boxes"], target["labels"]
        assert boxes.dtype == torch.float32 and labels.dtype == torch.int64
        assert len(boxes) == len(labels) >= 1
        assert (boxes >= 0).all() and (boxes <= 96).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        assert labels.max() < ds.num_classes
        assert target["orig_size"] == (64, 64) and target["scale"] == (1.5, 1.5)
        assert target["image_id"] == ds.data[i].image_id


def test_detector_trains_one_step_on_a_collated_synthetic_batch(tmp_path):
    torch.manual_seed(0)
    ds = build_dataset(_synthetic_cfg(tmp_path), DataCfg(image_size=64), train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    images, targets, sizes = next(iter(loader))
    assert images.shape == (2, 3, 64, 64) and sizes == [(64, 64), (64, 64)]
    model = lossreg.create_model("atss_resnet18_fpn", num_classes=ds.num_classes, backbone="test_resnet")
    model.train()
    optim = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    total.backward()
    optim.step()
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_quickstart_recipe_data_section_builds(tmp_path):
    recipe = lossreg.load_recipe(
        "quickstart", overrides=[f"data.train.root={tmp_path}", "data.train.params.num_images=2"]
    )
    ds = build_dataset(recipe.data.train, recipe.data, train=True)
    image, target = ds[0]
    assert image.shape == (3, recipe.data.image_size, recipe.data.image_size)
    assert "synthetic:train-2x128-seed0" in ds.data.source


def test_read_dataset_rejects_bad_params_and_formats(tmp_path):
    with pytest.raises(TypeError, match="unknown parameter 'num_image'; did you mean 'num_images'"):
        read_dataset(DatasetCfg(format="synthetic", root=str(tmp_path), params={"num_image": 2}))
    with pytest.raises(TypeError, match="unknown parameter 'min_sise'"):
        read_dataset(DatasetCfg(format="coco", root=str(tmp_path), ann_file="x.json", params={"min_sise": 2}))
    with pytest.raises(ValueError, match="needs 'ann_file'"):
        read_dataset(DatasetCfg(format="coco", root=str(tmp_path)))
    with pytest.raises(ValueError, match="needs 'root'"):
        read_dataset(DatasetCfg(format="voc"))


def test_eval_dataset_on_coco128_maps_boxes_back(coco128):
    ann_file, image_root = coco128
    cfg = DatasetCfg(format="coco", ann_file=str(ann_file), root=str(image_root))
    ds = build_dataset(cfg, DataCfg(image_size=320, augment=(ComponentSpec("VerticalFlip", {"p": 1.0}),)), train=False)
    assert ds.num_classes == 80
    rec = ds.data[0]
    image, target = ds[0]
    assert image.shape == (3, 320, 320)
    assert target["orig_size"] == (rec.height, rec.width)
    assert target["scale"] == pytest.approx((320 / max(rec.height, rec.width),) * 2, rel=1e-2)
    back = unscale_boxes(target["boxes"], target["scale"], target["orig_size"])
    np.testing.assert_allclose(back.numpy(), rec.boxes, atol=0.05)  # evaluation: not flipped


def test_voc_dataset_on_bccd(bccd_root):
    cfg = DatasetCfg(format="voc", root=str(bccd_root), split="val")
    with pytest.warns(lossreg.data.DegenerateBoxWarning):
        ds = build_dataset(cfg, DataCfg(image_size=320), train=False)
    image, target = ds[0]
    assert image.shape == (3, 320, 320) and target["scale"] == (0.5, 0.5)
    assert ds.class_names == ["Platelets", "RBC", "WBC"]
    torch.testing.assert_close(target["boxes"], torch.from_numpy(ds.data[0].boxes) * 0.5)
    assert image[:, 240:].abs().sum() == 0  # letterbox padding below the 640x480 -> 320x240 image


def test_load_image_checks_the_annotated_size(tmp_path, write_image):
    path = write_image(tmp_path / "a.png", 20, 10)
    assert load_image(DetectionRecord(str(path), width=20, height=10)).shape == (10, 20, 3)
    with pytest.raises(ValueError, match=r"a\.png: image is 20x10 but its annotation says 10x20"):
        load_image(DetectionRecord(str(path), width=10, height=20))
    (tmp_path / "b.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"b\.png: cannot read image"):
        load_image(DetectionRecord(str(tmp_path / "b.png"), width=1, height=1))
