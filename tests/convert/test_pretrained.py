"""Converted pretrained tags: create_model(tag, pretrained=True) downloads the original file (hash-checked),
converts it once, caches the save_pretrained folder, and says what to do when offline.

The "original file" is a real torchvision RetinaNet state dict, tiny: torchvision's
RetinaNet class around timm's ``test_resnet`` (key layout ``backbone.body.*`` as for
torchvision's ResNet) with a 32-channel FPN and head, served from a loopback HTTP server.
The tag is registered for the test only, on a model name with that backbone.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import threading
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import lossreg
from lossreg._registry import models as registry_models
from lossreg.convert import COCO_CLASSES, TORCHVISION_COCO_SLOTS
from lossreg.detectors._models import register_arch_models
from lossreg.hub.converted import ConvertedWeightsError, converted_folder

_spec = importlib.util.spec_from_file_location("tv_helpers", Path(__file__).with_name("tv_helpers.py"))
tvh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tvh)

MODEL = "retinanet_test_resnet_fpn"
TAG = f"{MODEL}.tv_fake"
SLIM = {"backbone": "test_resnet", "neck": {"out_channels": 32}, "head": {"feat_channels": 32}}


def _tiny_torchvision_retinanet() -> torch.nn.Module:
    torch.manual_seed(0)
    body = timm.create_model("test_resnet")
    fpn = BackboneWithFPN(
        body, {"layer2": "0", "layer3": "1", "layer4": "2"}, [48, 192, 96], 32, extra_blocks=LastLevelP6P7(32, 32)
    )
    tv = torchvision.models.detection.RetinaNet(fpn, num_classes=91, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return tvh.no_resize(tvh.spread_(tv))


class _Server:
    """A loopback HTTP server of one folder, counting the requests."""

    def __init__(self, folder: Path) -> None:
        self.hits = 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(folder), **k)

            def do_GET(self):  # noqa: N802
                outer.hits += 1
                return super().do_GET()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The tiny torchvision model, its .pth file (named with its sha256 prefix) and a server of it."""
    folder = tmp_path_factory.mktemp("published")
    tv = _tiny_torchvision_retinanet()
    tmp = folder / "tmp.pth"
    torch.save(tv.state_dict(), tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"retinanet_tiny_coco-{digest[:8]}.pth"
    tmp.rename(path)
    server = _Server(folder)
    yield {"tv": tv, "path": path, "sha": digest[:8], "server": server}
    server.close()


def _register(url: str, sha: str) -> None:
    register_arch_models("retinanet", backbones=("test_resnet",)) if MODEL not in registry_models._MODELS else None
    lossreg.register_pretrained(
        lossreg.PretrainedCfg(
            model=MODEL, tag="tv_fake", num_classes=80, label_names=COCO_CLASSES, description="A tiny test RetinaNet.",
            license="bsd-3-clause", url=url, sha256=sha, source="torchvision (test fake)",
            converter="lossreg.convert.torchvision:from_torchvision",
            converter_args={"arch": "retinanet_resnet50_fpn", "bn_eps": 1e-5, **SLIM}, coco_ap=12.3,
        ),
        override=True,
    )


@pytest.fixture
def tag(source, tmp_path, monkeypatch):
    """The test tag served over HTTP, with an empty LOSSREG_HOME."""
    monkeypatch.setenv("LOSSREG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LOSSREG_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _register(f"http://127.0.0.1:{source['server'].port}/{source['path'].name}", source["sha"])
    yield lossreg.get_pretrained_cfg(MODEL, "tv_fake")
    registry_models._PRETRAINED.pop(TAG, None)
    registry_models._DEFAULT_TAGS.pop(MODEL, None)
    registry_models._MODELS.pop(MODEL, None)


def test_download_check_convert_once_and_cache(source, tag, monkeypatch):
    import lossreg.convert.torchvision as tvconv

    calls = []
    real = tvconv.from_torchvision
    monkeypatch.setattr(tvconv, "from_torchvision", lambda *a, **k: calls.append(a) or real(*a, **k))
    hits = source["server"].hits
    model = lossreg.create_model(TAG, pretrained=True).eval()
    assert source["server"].hits == hits + 1 and len(calls) == 1
    assert model.label_names == list(COCO_CLASSES)
    folder = converted_folder(tag)
    card = (folder / "README.md").read_text()
    assert "torchvision (test fake)" in card and "bsd-3-clause" in card and "12.3" in card and tag.url in card
    assert (Path(tag.url.split("/")[-1]).name in {p.name for p in (folder.parent.parent / "downloads").iterdir()})
    # the detections are torchvision's, through the whole route
    images = tvh_images()
    with torch.no_grad():
        ref, out = source["tv"](images), model(images)
    tvh.assert_same_detections(ref, out, TORCHVISION_COCO_SLOTS)
    # second time: neither downloaded nor converted again
    again = lossreg.create_model(TAG, pretrained=True)
    assert source["server"].hits == hits + 1 and len(calls) == 1
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def tvh_images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return [torch.rand(3, 100, 140, generator=g), torch.rand(3, 96, 128, generator=g)]


def test_fine_tune_by_class_name(tag):
    base = lossreg.create_model(TAG, pretrained=True)
    model = lossreg.create_model(TAG, pretrained=True, label_names=["car", "person", "unicorn"])
    assert model.num_classes == 3 and model.label_names == ["car", "person", "unicorn"]
    w, w0 = model.head.cls_out.weight, base.head.cls_out.weight  # rows a * C + c
    car, person = COCO_CLASSES.index("car"), COCO_CLASSES.index("person")
    for a in range(9):
        assert torch.equal(w[a * 3 + 0], w0[a * 80 + car]) and torch.equal(w[a * 3 + 1], w0[a * 80 + person])
        assert not torch.equal(w[a * 3 + 2], w0[a * 80 + car])


def test_offline_error_names_file_url_and_path(tag, monkeypatch):
    monkeypatch.setenv("LOSSREG_OFFLINE", "1")
    dest = Path(lossreg.hub.converted.lossreg_home()) / "downloads" / tag.file_name
    with pytest.raises(ConvertedWeightsError) as info:
        lossreg.create_model(TAG, pretrained=True)
    msg = str(info.value)
    assert tag.file_name in msg and tag.url in msg and str(dest) in msg and "\n" not in msg


def test_unreachable_url_then_a_file_put_by_hand(source, tag, monkeypatch, tmp_path):
    _register("http://127.0.0.1:9/" + source["path"].name, source["sha"])  # port 9 (discard): nothing listens
    cfg = lossreg.get_pretrained_cfg(MODEL, "tv_fake")
    dest = lossreg.hub.converted.lossreg_home() / "downloads" / cfg.file_name
    with pytest.raises(ConvertedWeightsError, match="cannot download") as info:
        lossreg.create_model(TAG, pretrained=True)
    assert str(dest) in str(info.value) and cfg.url in str(info.value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(source["path"].read_bytes())
    monkeypatch.setenv("LOSSREG_OFFLINE", "1")
    assert lossreg.create_model(TAG, pretrained=True).num_classes == 80


def test_hash_mismatch_is_refused(source, tag):
    dest = lossreg.hub.converted.lossreg_home() / "downloads" / tag.file_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(b"not the published file")
    with pytest.raises(ConvertedWeightsError, match="sha256"):
        lossreg.create_model(TAG, pretrained=True)
    assert not converted_folder(tag).exists()


TV_TAGS = {
    "retinanet_resnet50_fpn.tv_coco": 36.4,
    "retinanet_resnet50_fpn_v2.tv_coco": 41.5,
    "fcos_resnet50_fpn.tv_coco": 39.2,
    "faster_rcnn_resnet50_fpn.tv_coco": 37.0,
    "faster_rcnn_resnet50_fpn_v2.tv_coco": 46.7,
}


def test_torchvision_tags_are_declared():
    from torchvision.models import get_weight

    from lossreg.convert.torchvision import TORCHVISION_WEIGHTS

    for enum, (builder, name) in TORCHVISION_WEIGHTS.items():
        model, tag = name.split(".")
        cfg = lossreg.get_pretrained_cfg(model, tag)
        weights = get_weight(enum)  # torchvision's own record of the file
        assert cfg.url == weights.url and cfg.file_name in weights.url
        assert cfg.sha256 and weights.url.endswith(f"-{cfg.sha256}.pth")
        assert cfg.coco_ap == TV_TAGS[name] == weights.meta["_metrics"]["COCO-val2017"]["box_map"]
        assert cfg.converter == "lossreg.convert.torchvision:from_torchvision" and cfg.converter_args["arch"] == builder
        assert cfg.license and cfg.num_classes == 80 and tuple(cfg.label_names) == COCO_CLASSES


def test_weights_enum_name_offline(tmp_path, monkeypatch):
    """from_torchvision("<Enum>.COCO_V1") goes through the tag; offline it says where to put the file."""
    monkeypatch.setenv("LOSSREG_HOME", str(tmp_path))
    monkeypatch.setenv("LOSSREG_OFFLINE", "1")
    with pytest.raises(ConvertedWeightsError) as info:
        lossreg.convert.from_torchvision("FCOS_ResNet50_FPN_Weights.COCO_V1")
    msg = str(info.value)
    assert "fcos_resnet50_fpn_coco-99b0c9b7.pth" in msg and "https://download.pytorch.org/models/" in msg
    assert str(tmp_path / "downloads" / "fcos_resnet50_fpn_coco-99b0c9b7.pth") in msg


def test_cli_convert_a_tag_and_a_file(source, tag, tmp_path, capsys):
    from lossreg.cli import main

    out = tmp_path / "from_tag"
    assert main(["convert", TAG, "--output", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "torchvision (test fake)" in card and "bsd-3-clause" in card and "12.3" in card
    model = lossreg.create_model(f"local-dir:{out}").eval()
    images = tvh_images()
    with torch.no_grad():
        tvh.assert_same_detections(source["tv"](images), model(images), TORCHVISION_COCO_SLOTS)
    # a file: the card names it, its sha256 and what --license / --coco-ap say
    out2 = tmp_path / "from_file"
    args = ["convert", str(source["path"]), "--arch", "retinanet_resnet50_fpn", "--output", str(out2),
            "--license", "bsd-3-clause", "--coco-ap", "12.5"]
    capsys.readouterr()
    assert main(args) == 2  # the tiny file is not a ResNet-50 (the CLI builds the arch's own): one line, nothing written
    err = capsys.readouterr().err
    assert "torchvision retinanet_resnet50_fpn -> lossreg retinanet: missing" in err and not out2.exists()
    assert main(["convert", TAG, "--output", str(out)]) == 2  # refuses a non-empty folder
    assert "not empty" in capsys.readouterr().err


def test_convert_function_on_a_file(source, tmp_path):
    from lossreg.convert import convert

    folder = convert(str(source["path"]), tmp_path / "out", arch="retinanet_resnet50_fpn", license="mit",
                     coco_ap=1.0, bn_eps=1e-5, **SLIM)
    card = (folder / "README.md").read_text()
    assert source["path"].name in card and hashlib.sha256(source["path"].read_bytes()).hexdigest() in card
    assert "mit" in card and lossreg.create_model(f"local-dir:{folder}").num_classes == 80


@pytest.mark.parametrize(
    ("model", "tag"),
    [
        ("retinanet_resnet50_fpn", "tv_coco"),
        ("fcos_resnet50_fpn", "tv_coco"),
        ("faster_rcnn_resnet50_fpn", "tv_coco"),
        ("atss_resnet50_fpn", "mmdet_coco"),
        ("vfnet_resnet50_fpn", "mmdet_coco"),
    ],
)
def test_default_tag_is_declared_not_registration_order(model, tag):
    """A torchvision-named model without a tag means torchvision's weights, though mmdet's are registered too."""
    from lossreg._registry.models import get_pretrained_cfg

    assert get_pretrained_cfg(model).tag == tag
