"""Category F: dataset readers and ``lossreg check``.

COCO files without annotations, non-numeric boxes, repeated ids and names are refused
naming the file and the entry; ``lossreg check`` refuses recipes whose data paths are
missing on this machine, whose ``max_images`` is not positive or whose augmentations
take unknown parameters, and says "folder" when a folder is given for a file.
"""

from __future__ import annotations

import json

import pytest
import yaml
from robust_helpers import one_line_error, raises, tiny_recipe, write_coco, write_image

from lossreg.cli import main
from lossreg.data import read_coco, read_voc
from lossreg.recipe import RecipeError, load_recipe

# --------------------------------------------------------------------------- COCO


def test_coco_without_annotations_key_is_refused(tmp_path):
    path = write_coco(tmp_path / "ann.json", drop=("annotations",))
    with raises(ValueError, "ann.json", "no 'annotations' list", '"annotations": []'):
        read_coco(path, tmp_path)


def test_coco_with_an_empty_annotation_list_reads_images_without_boxes(tmp_path):
    ds = read_coco(write_coco(tmp_path / "ann.json", annotations=[]), tmp_path)
    assert len(ds) == 2 and ds.num_boxes == 0


@pytest.mark.parametrize(
    "bbox,shown",
    [
        (["a", 4, 20, 20], "has a non-numeric bbox ['a', 4, 20, 20]"),
        ([4, None, 20, 20], "has a non-numeric bbox"),
        ([4, 4, {"w": 1}, 20], "has a non-numeric bbox"),
        ([True, 4, 20, 20], "has a non-numeric bbox"),
        ([4, 4, 20], "has no [x, y, w, h] bbox"),
        ("4 4 20 20", "has no [x, y, w, h] bbox"),
    ],
)
def test_bad_bbox_names_the_file_and_the_annotation(tmp_path, bbox, shown):
    ann = [{"id": 7, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0}]
    with raises(ValueError, "ann.json: annotation 7", shown):
        read_coco(write_coco(tmp_path / "ann.json", annotations=ann), tmp_path)


def test_numeric_strings_are_still_numbers(tmp_path):
    ann = [{"id": 7, "image_id": 1, "category_id": 1, "bbox": ["4", "4", "20", "20"], "iscrowd": 0}]
    ds = read_coco(write_coco(tmp_path / "ann.json", annotations=ann), tmp_path)
    assert ds.records[0].boxes.tolist() == [[4.0, 4.0, 24.0, 24.0]]


def test_repeated_image_id(tmp_path):
    images = [{"id": 5, "file_name": "a.png", "width": 64, "height": 48}, {"id": 5, "file_name": "b.png", "width": 64, "height": 48}]
    with raises(ValueError, "ann.json: image id 5 is used by images[0] and images[1]", "needs its own id"):
        read_coco(write_coco(tmp_path / "ann.json", images=images, annotations=[]), tmp_path)


def test_repeated_category_name(tmp_path):
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}]
    with raises(ValueError, "category name 'cat' is used by ids 1 and 2", "rename one or merge them"):
        read_coco(write_coco(tmp_path / "ann.json", categories=cats), tmp_path)


def test_repeated_category_id(tmp_path):
    cats = [{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}]
    with raises(ValueError, "category id 1 is used by categories[0] and categories[1]"):
        read_coco(write_coco(tmp_path / "ann.json", categories=cats), tmp_path)


@pytest.mark.parametrize("cat", ["cat", 3, {"name": "cat"}])
def test_malformed_category(tmp_path, cat):
    with raises(ValueError, "categories[0] must be an object with an 'id' and a 'name'"):
        read_coco(write_coco(tmp_path / "ann.json", categories=[cat], annotations=[]), tmp_path)


def test_annotation_file_is_a_folder(tmp_path):
    (tmp_path / "ann.json").mkdir()
    with raises(ValueError, "is a folder; give the JSON file inside it"):
        read_coco(tmp_path / "ann.json", tmp_path)


def test_missing_annotation_file(tmp_path):
    with raises(FileNotFoundError, "COCO annotation file", "does not exist"):
        read_coco(tmp_path / "none.json", tmp_path)


@pytest.mark.parametrize("text,shown", [("{", "not a valid COCO JSON file"), ("[1, 2]", "must hold a JSON object"),
                                        ('{"images": {}, "categories": []}', "needs a list under 'images'")])
def test_malformed_coco_files(tmp_path, text, shown):
    (tmp_path / "ann.json").write_text(text)
    with raises(ValueError, "ann.json", shown):
        read_coco(tmp_path / "ann.json", tmp_path)


def test_unknown_category_and_image(tmp_path):
    ann = [{"id": 7, "image_id": 1, "category_id": 9, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    with raises(ValueError, "annotation 7 has unknown category_id 9"):
        read_coco(write_coco(tmp_path / "ann.json", annotations=ann), tmp_path)
    ann = [{"id": 7, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    with raises(ValueError, "annotations refer to image ids not in 'images': [99]"):
        read_coco(write_coco(tmp_path / "ann.json", annotations=ann), tmp_path)


# --------------------------------------------------------------------------- VOC


def test_voc_root_is_a_file(tmp_path):
    (tmp_path / "voc").write_text("")
    with raises(ValueError, "VOC root", "is a file; give the folder that holds Annotations/"):
        read_voc(tmp_path / "voc", None)


def test_voc_root_missing(tmp_path):
    with raises(FileNotFoundError, "VOC folder", "does not exist"):
        read_voc(tmp_path / "voc", None)


def test_voc_repeated_class_names(tmp_path):
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    with raises(ValueError, "class_names repeats 'cat'"):
        read_voc(tmp_path / "voc", None, class_names=["cat", "dog", "cat"])


# --------------------------------------------------------------------------- the trainer


def test_training_on_a_set_without_a_single_box_is_refused(tmp_path, synthetic_root):
    from lossreg.engine.trainer import Trainer

    ann = write_coco(tmp_path / "data" / "ann.json", annotations=[])
    recipe = tiny_recipe(synthetic_root, data={"train": {"format": "coco", "ann_file": str(ann), "root": str(ann.parent)}})
    with raises(ValueError, "data.train", "has 2 images but not one box", "check the annotation file"):
        Trainer(recipe, output_dir=tmp_path / "run")


# --------------------------------------------------------------------------- lossreg check


def _recipe_file(tmp_path, synthetic_root, **data):
    recipe = tiny_recipe(synthetic_root)
    recipe["data"] = {**recipe["data"], **data}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_check_passes_a_recipe_whose_data_exists(tmp_path, synthetic_root, capsys):
    assert main(["check", str(_recipe_file(tmp_path, synthetic_root))]) == 0
    assert "is valid and its data paths exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "make,train,shown",
    [
        (None, {"format": "coco", "ann_file": "missing.json", "root": "."},
         "data.train.ann_file: the COCO annotation file 'missing.json' does not exist"),
        ("dir:ann", {"format": "coco", "ann_file": "{tmp}/ann", "root": "{tmp}"}, "is a folder, not the COCO annotation file"),
        ("file:ann.json", {"format": "coco", "ann_file": "{tmp}/ann.json", "root": "{tmp}/images"},
         "data.train.root: the image folder"),
        ("file:ann.json", {"format": "coco", "ann_file": "{tmp}/ann.json", "root": "{tmp}/ann.json"},
         "is a file, not the image folder"),
        (None, {"format": "voc", "root": "{tmp}/VOC"}, "data.train.root: the VOC folder"),
        ("dir:VOC", {"format": "voc", "root": "{tmp}/VOC"}, "has no Annotations/ folder"),
        ("dir:VOC/Annotations", {"format": "voc", "root": "{tmp}/VOC", "split": "trainval"},
         "data.train.split: VOC split file ImageSets/Main/trainval.txt does not exist"),
        ("file:cache", {"format": "synthetic", "root": "{tmp}/cache"}, "is a file, not the synthetic set's cache folder"),
    ],
)
def test_check_refuses_data_that_is_not_here(tmp_path, synthetic_root, capsys, make, train, shown):
    if make:
        kind, name = make.split(":")
        target = tmp_path / name
        if kind == "dir":
            target.mkdir(parents=True)
        else:
            target.write_text("{}")
    train = {k: (v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v) for k, v in train.items()}
    path = _recipe_file(tmp_path, synthetic_root, train=train)
    assert main(["check", str(path)]) == 2
    one_line_error(capsys, "lossreg check: error:", shown.replace("{tmp}", str(tmp_path)))


def test_check_no_data_skips_the_paths(tmp_path, synthetic_root, capsys):
    path = _recipe_file(tmp_path, synthetic_root, train={"format": "coco", "ann_file": "missing.json", "root": "."})
    assert main(["check", str(path), "--no-data"]) == 0
    assert main(["check", str(path), "--schema-only"]) == 0


@pytest.mark.parametrize("value", [-3, 0])
def test_check_refuses_max_images_below_one(tmp_path, synthetic_root, capsys, value):
    path = _recipe_file(tmp_path, synthetic_root)
    assert main(["check", str(path), "--set", f"data.train.max_images={value}"]) == 2
    one_line_error(capsys, "data.train.max_images: must be >= 1", f"got {value}")


@pytest.mark.parametrize(
    "augment,shown",
    [
        ([{"name": "HorizontalFlip", "pp": 0.5}], "data.augment[0]: transform 'HorizontalFlip' has no parameter 'pp'; did you mean 'p'"),
        ([{"name": "HorizontalFlip"}, {"name": "RandomBrightnessContrast", "brightnes_limit": 0.2}],
         "data.augment[1]: transform 'RandomBrightnessContrast' has no parameter 'brightnes_limit'"),
        ([{"name": "HorizontalFlp"}], "data.augment[0].name: unknown albumentations transform 'HorizontalFlp'"),
        ([{"name": "OneOf", "transforms": []}], "data.augment[0]: 'OneOf' needs a non-empty 'transforms' list"),
    ],
)
def test_check_refuses_augmentations_that_would_fail_at_training(tmp_path, synthetic_root, capsys, augment, shown):
    path = _recipe_file(tmp_path, synthetic_root, augment=augment)
    assert main(["check", str(path)]) == 2
    one_line_error(capsys, shown)


def test_check_refuses_unknown_dataset_params(tmp_path, synthetic_root, capsys):
    path = _recipe_file(tmp_path, synthetic_root)
    assert main(["check", str(path), "--set", "data.train.params.num_imgs=3"]) == 2
    one_line_error(capsys, "data.train.params: synthetic dataset params: unknown parameter 'num_imgs'", "did you mean 'num_images'")


def test_check_of_a_folder_says_folder(tmp_path, capsys):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "a.yaml").write_text("model: {arch: atss}\n")
    assert main(["check", str(tmp_path / "recipes")]) == 2
    one_line_error(capsys, "is a folder, not a recipe file; give a .yaml file", "a.yaml")


def test_check_of_a_missing_file_says_does_not_exist(tmp_path, capsys):
    assert main(["check", str(tmp_path / "none.yaml")]) == 2
    one_line_error(capsys, "recipe file", "does not exist")


def test_recipe_that_is_not_utf8(tmp_path):
    (tmp_path / "r.yaml").write_bytes(b"model: {arch: \xff\xfe}\n")
    with raises(RecipeError, "not a UTF-8 text file", "r.yaml"):
        load_recipe(tmp_path / "r.yaml")


@pytest.mark.parametrize("value,shown", [(-1, "data.num_workers: must be >= 0"), (16, "data.image_size: must be >= 32")])
def test_other_data_numbers(value, shown):
    key = "num_workers" if value == -1 else "image_size"
    with raises(RecipeError, shown):
        load_recipe({"model": {"arch": "atss"}, "data": {key: value}})


def test_coco_json_is_valid_when_written_by_the_synthetic_generator(synthetic_root):
    """The generator's own files pass every new reader check (no false alarms on real data)."""
    from lossreg.data import make_synthetic

    ann, images = make_synthetic(synthetic_root, num_images=4, image_size=64)
    ds = read_coco(ann, images)
    assert len(ds) == 4 and ds.num_boxes > 0
    assert json.loads(ann.read_text())["annotations"]


def test_coco_image_files_still_checked(tmp_path):
    path = write_coco(tmp_path / "ann.json")
    (tmp_path / "b.png").unlink()
    write_image(tmp_path / "c.png")
    with raises(FileNotFoundError, "b.png", "does not exist"):
        read_coco(path, tmp_path)
