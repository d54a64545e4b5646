"""save_pretrained / local-dir: round trips, the config and card layout, and every refusal."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

import lossreg
from lossreg.engine.runs import load_model
from lossreg.hub import HubError, save_pretrained
from lossreg.hub.config import FORMAT_VERSION

TINY = {
    "backbone": "test_resnet",
    "neck": {"name": "fpn", "out_channels": 32},
    "head": {"name": "atss", "feat_channels": 32, "stacked_convs": 1},
}
NAMES = ["ellipse", "rectangle", "triangle"]


def tiny_model(arch: str = "atss", **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    args = {**TINY, "num_classes": 3, "label_names": NAMES, "cls_loss": "hcra_c", "assigner": "eatss", **kwargs}
    if arch == "faster_rcnn":
        args.pop("head")
        args.update(neck={"name": "fpn", "out_channels": 32}, cls_loss="ce", assigner=None)
    return lossreg.create_model(f"{arch}_resnet18_fpn", **args)


def detections(model: torch.nn.Module, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 3, 96, 128, generator=gen)
    model.eval()
    with torch.no_grad():
        return model(images)


def assert_same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for da, db in zip(detections(a), detections(b)):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(da[key], db[key]), key


@pytest.fixture
def saved(tmp_path) -> tuple[torch.nn.Module, Path]:
    model = tiny_model()
    with torch.no_grad():  # a trained-looking cls bias so that detections exist
        model.head.cls_out.bias.fill_(2.0)
    folder = save_pretrained(model, tmp_path / "model", metrics={"AP": 0.25, "AP50": 0.5, "per_class": {"ellipse": 0.3}})
    return model, folder


@pytest.mark.parametrize("arch", ["atss", "fcos", "faster_rcnn"])
def test_round_trip_identical_outputs(tmp_path, arch):
    model = tiny_model(arch)
    folder = save_pretrained(model, tmp_path / arch)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "recipe.yaml"]
    loaded = lossreg.create_model(f"local-dir:{folder}")
    assert type(loaded) is type(model) and loaded.label_names == NAMES
    assert loaded.model_args == json.loads(json.dumps(model.model_args))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert_same_outputs(model, loaded)


def test_outputs_nonempty_and_equal(saved):
    model, folder = saved
    loaded = lossreg.create_model(f"local-dir:{folder}")
    assert len(detections(model)[0]["boxes"]) > 0
    assert_same_outputs(model, loaded)


def test_config_layout(saved):
    model, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "atss" and config["num_classes"] == 3 and config["label_names"] == NAMES
    assert config["model_args"]["backbone"] == "test_resnet"
    assert config["pretrained_cfg"]["classifier"] == ["head.cls_out"]
    assert config["pretrained_cfg"]["mean"] == pytest.approx(model.image_mean.flatten().tolist(), abs=1e-6)
    block = config["lossreg"]
    assert block["format_version"] == FORMAT_VERSION and block["version"] == lossreg.__version__
    comps = block["components"]
    assert comps["head.cls_loss"] == {"name": "hcra_c", "params": lossreg.component_info("loss", "hcra_c")["params"]}
    assert comps["head.assigner"]["name"] == "eatss" and comps["head.assigner"]["params"]["extra"] == 3
    assert comps["neck"]["params"]["out_channels"] == 32 and comps["head"]["params"]["feat_channels"] == 32
    assert block["postprocess"] == {"score_thr": 0.05, "nms_thr": 0.6, "pre_nms_topk": 1000, "max_dets": 100}
    assert block["box_format"] == "xyxy" and block["backbone"]["strides"] == [8, 16, 32]
    assert block["metrics"] == {"AP": 0.25, "AP50": 0.5} and block["per_class"] == {"ellipse": 0.3}
    size = (folder / "model.safetensors").stat().st_size
    assert block["files"]["model.safetensors"]["size"] == size and len(block["files"]["model.safetensors"]["sha256"]) == 64


def test_model_card_front_matter_and_snippet(saved, tmp_path):
    _, folder = saved
    card = ModelCard.load(folder / "README.md")  # huggingface_hub's own parser
    data = card.data
    assert data.library_name == "lossreg" and data.pipeline_tag == "object-detection" and data.license == "apache-2.0"
    assert {"atss", "hcra_c", "eatss", "test_resnet"} <= set(data.tags)
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert results == {"mAP": 25.0, "AP50": 50.0}  # in %, as each metric's name says
    assert all(r.metric_name.endswith(", %") for r in data.eval_results)
    assert "| head.cls_loss | `hcra_c` |" in card.text and "VarifocalNet" not in card.text
    assert "Hybrid Classification-Regression Adaptive Loss" in card.text  # hcra_c's paper is cited
    snippet = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    scope: dict = {}
    exec(compile(snippet, "card", "exec"), scope)  # the usage snippet works as written
    assert scope["model"].label_names == NAMES


def test_recipe_is_saved_and_reloaded(saved):
    _, folder = saved
    recipe = lossreg.load_recipe(folder / "recipe.yaml", validate=False)
    assert recipe.model.arch == "atss" and recipe.model.args["label_names"] == NAMES
    assert lossreg.create_model(f"local-dir:{folder}").recipe == recipe


def test_finetune_transfer_by_label_names(saved):
    model, folder = saved
    tuned = lossreg.create_model(f"local-dir:{folder}", label_names=["triangle", "dog"])
    assert tuned.num_classes == 2 and tuned.label_names == ["triangle", "dog"]
    w_src, w_dst = model.head.cls_out.weight, tuned.head.cls_out.weight
    assert torch.equal(w_dst[0], w_src[2])  # triangle's row copied
    assert not torch.equal(w_dst[1], w_src[0]) and not torch.equal(w_dst[1], w_src[1])
    assert torch.equal(tuned.head.reg_out.weight, model.head.reg_out.weight)


def test_component_swap_at_load_drops_its_state(saved):
    _, folder = saved
    swapped = lossreg.create_model(f"local-dir:{folder}", cls_loss="focal")
    assert type(swapped.head.cls_loss).__name__ == "FocalLoss"
    assert not any(".cls_loss." in k for k in swapped.state_dict())


def test_instance_components_are_refused(tmp_path):
    model = tiny_model(cls_loss=lossreg.create_loss("focal"))
    with pytest.raises(HubError, match=r"model_args\.head\.cls_loss is a FocalLoss instance"):
        save_pretrained(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


def test_failed_save_keeps_previous_files(saved, monkeypatch):
    model, folder = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("lossreg.hub.save.save", boom)  # the weights' serialisation
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(model, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temp files left either


def _edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["lossreg"]["components"]["head.cls_loss"].update(name="hcra_z"),
         r"uses loss 'hcra_z' \(head.cls_loss\), which this installation does not have"),
        (lambda c: c.update(architecture="detr"), r"names detector architecture 'detr'"),
        (lambda c: c["lossreg"].update(version="99.0.0"), r"written by lossreg 99.0.0 .* newer than the installed"),
        (lambda c: c["lossreg"].update(format_version=FORMAT_VERSION + 1), r"newer than the installed"),
        (lambda c: c.pop("model_args"), r"no 'model_args' key"),
    ],
)
def test_bad_configs_are_refused(saved, edit, message):
    _, folder = saved
    _edit_config(folder, edit)
    with pytest.raises(HubError, match=message):
        lossreg.create_model(f"local-dir:{folder}")


def test_invalid_json_is_refused(saved):
    _, folder = saved
    (folder / "config.json").write_text('{"architecture": "at')
    with pytest.raises(HubError, match="not valid JSON"):
        lossreg.create_model(f"local-dir:{folder}")


def test_truncated_weights_are_refused(saved):
    _, folder = saved
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(HubError, match="truncated"):
        lossreg.create_model(f"local-dir:{folder}")
    _edit_config(folder, lambda c: c["lossreg"].pop("files"))  # without the record, safetensors itself fails
    with pytest.raises(HubError, match="not a readable safetensors file"):
        lossreg.create_model(f"local-dir:{folder}")


def test_modified_weights_fail_the_checksum(saved):
    _, folder = saved
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(HubError, match="sha256"):
        lossreg.create_model(f"local-dir:{folder}")


def test_mismatched_keys_and_shapes_are_refused(saved):
    from safetensors.torch import load_file, save_file

    _, folder = saved
    _edit_config(folder, lambda c: c["lossreg"].pop("files"))
    state = load_file(str(folder / "model.safetensors"))
    state["head.extra.weight"] = torch.zeros(1)
    state["head.reg_out.weight"] = torch.zeros(3, 3)
    del state["head.cls_out.bias"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(HubError) as exc:
        lossreg.create_model(f"local-dir:{folder}")
    text = str(exc.value)
    assert "missing: head.cls_out.bias" in text and "unexpected: head.extra.weight" in text
    assert "shape mismatch: head.reg_out.weight (3, 3)" in text


def test_legacy_pth_loads_with_weights_only(saved):
    model, folder = saved
    _edit_config(folder, lambda c: c["lossreg"].pop("files"))
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    assert_same_outputs(model, lossreg.create_model(f"local-dir:{folder}"))


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_legacy_pickle_with_code_is_refused(saved):
    _, folder = saved
    (folder / "model.safetensors").unlink()
    _edit_config(folder, lambda c: c["lossreg"].pop("files"))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Payload()}))
    with pytest.raises(HubError, match=r"weights_only=True"):
        lossreg.create_model(f"local-dir:{folder}")


def test_missing_folder_and_missing_weights(tmp_path, saved):
    with pytest.raises(HubError, match="no such folder"):
        lossreg.create_model(f"local-dir:{tmp_path / 'nope'}")
    _, folder = saved
    (folder / "model.safetensors").unlink()
    with pytest.raises(HubError, match="no weights"):
        lossreg.create_model(f"local-dir:{folder}")


def test_load_model_resolves_folders_and_names(saved, tmp_path):
    model, folder = saved
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    for p in folder.iterdir():
        (run / "model" / p.name).write_bytes(p.read_bytes())
    assert_same_outputs(model, load_model(run))
    assert_same_outputs(model, load_model(folder))
    with pytest.raises(FileNotFoundError, match="bare model name has no trained weights"):
        load_model("atss_resnet18_fpn")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        load_model(tmp_path / "empty")


def test_recipe_yaml_matches_training_recipe(tmp_path):
    recipe = lossreg.load_recipe("quickstart")
    model = lossreg.create_model("quickstart", backbone="test_resnet")
    folder = save_pretrained(model, tmp_path / "q")
    saved_recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
    assert saved_recipe["train"] == recipe.to_dict()["train"] and saved_recipe["model"]["cls_loss"] == "focal"
    card = ModelCard.load(folder / "README.md")
    assert card.data.datasets is None  # the synthetic set has no Hub dataset id: named in the config, not linked
    assert json.loads((folder / "config.json").read_text())["lossreg"]["dataset"] == "lossreg-synthetic-shapes"
