"""Pretrained tags converted from another library's file: download once, check, convert once, cache.

``create_model("retinanet_resnet50_fpn.tv_coco", pretrained=True)`` for a tag whose
:class:`~lossreg.PretrainedCfg` has a ``url`` and a ``converter``:

1. the converted model is looked up in ``$LOSSREG_HOME/converted/<model>.<tag>/`` (a
   ``save_pretrained`` folder; ``LOSSREG_HOME`` defaults to ``~/.cache/lossreg``) and
   loaded from there when present: nothing is downloaded or converted again;
2. otherwise the original file is taken from ``$LOSSREG_HOME/downloads/<file name>``,
   downloaded there first if missing (``LOSSREG_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` forbid
   it), and its sha256 checked against the tag's (a full digest or a prefix);
3. the tag's ``converter`` (``"module:function"``, called as ``function(path,
   **converter_args)``) turns it into a lossreg detector, which is written with
   ``save_pretrained`` (its card states the source, the license and the source's COCO AP)
   and loaded back with the caller's overrides (fine-tuning ``num_classes`` /
   ``label_names``, swapped components), exactly as a Hub model is.

Offline without the file, :class:`ConvertedWeightsError` says in one line which file is
needed, its URL and the exact path to put it at by hand.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .config import HubError
from .load import CONFIG_NAME, load_folder, read_config
from .save import save_pretrained

__all__ = [
    "ConvertedWeightsError", "convert_to_folder", "converted_folder", "download_file", "load_converted_tag",
    "lossreg_home", "resolve_converter", "source_file", "write_converted",
]

logger = logging.getLogger(__name__)


class ConvertedWeightsError(HubError):
    """The original file of a converted tag could not be downloaded, or its hash is wrong."""


def lossreg_home() -> Path:
    """``$LOSSREG_HOME``, else ``~/.cache/lossreg``."""
    return Path(os.path.expanduser(os.environ.get("LOSSREG_HOME") or "~/.cache/lossreg"))


def converted_folder(cfg: Any) -> Path:
    """Where the converted model of ``cfg`` is cached (a ``save_pretrained`` folder)."""
    return lossreg_home() / "converted" / cfg.name


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("LOSSREG_OFFLINE", "HF_HUB_OFFLINE"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_hash(path: Path, expected: str | None, cfg: Any) -> None:
    if not expected:
        return
    digest = _sha256(path)
    if not digest.startswith(expected.lower()):
        raise ConvertedWeightsError(
            f"{cfg.name}: {path} has sha256 {digest[:16]}..., expected {expected}...; it is not the file published at "
            f"{cfg.url} (an interrupted or altered download): delete it and try again"
        )


def download_file(url: str, dest: Path, expected_sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (atomically: a partial file never has the final name), checking the sha256 prefix."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the tag's URL
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        digest = h.hexdigest()
        if expected_sha256 and not digest.startswith(expected_sha256.lower()):
            raise ConvertedWeightsError(
                f"{url}: downloaded file has sha256 {digest[:16]}..., expected {expected_sha256}...; refusing to use it"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def source_file(cfg: Any) -> Path:
    """The original file of ``cfg``: the cached copy, else downloaded now; hash-checked either way."""
    name = cfg.file_name
    if not name:
        raise HubError(f"{cfg.name}: no url to download the original weights from")
    dest = lossreg_home() / "downloads" / name
    if dest.is_file():
        _check_hash(dest, cfg.sha256, cfg)
        return dest
    by_hand = f"download {cfg.url} by hand and put it at {dest}"
    if _offline():
        raise ConvertedWeightsError(f"{cfg.name}: offline (LOSSREG_OFFLINE / HF_HUB_OFFLINE) and {name} is not cached; {by_hand}")
    logger.info("downloading %s from %s to %s", name, cfg.url, dest)
    try:
        return download_file(cfg.url, dest, cfg.sha256)
    except ConvertedWeightsError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConvertedWeightsError(f"{cfg.name}: cannot download {name} from {cfg.url} ({reason}); {by_hand}") from exc


def resolve_converter(reference: str) -> Callable[..., nn.Module]:
    module, _, attr = reference.partition(":")
    if not module or not attr:
        raise HubError(f"converter {reference!r} must be 'module:function'")
    fn = importlib.import_module(module)
    for part in attr.split("."):
        fn = getattr(fn, part)
    return fn  # type: ignore[return-value]


def _card_description(cfg: Any) -> str:
    ap = f"{cfg.coco_ap:.1f}" if cfg.coco_ap is not None else "not published"
    return (
        f"{cfg.description or cfg.name} Converted by lossreg from {cfg.source or 'another library'}: "
        f"[{cfg.file_name}]({cfg.url}) (sha256 `{cfg.sha256 or '-'}`), license {cfg.license or 'unknown'}; "
        f"the source's published COCO val2017 box AP is {ap}."
    )


def convert_to_folder(cfg: Any, path: Path, folder: Path) -> Path:
    """Convert the original file ``path`` of ``cfg`` and write it to ``folder`` (atomically, as a whole)."""
    return write_converted(resolve_converter(cfg.converter)(path, **dict(cfg.converter_args)), cfg, folder)


def write_converted(model: nn.Module, cfg: Any, folder: Path, model_ref: str | None = None) -> Path:
    """``save_pretrained`` of a converted ``model`` into ``folder`` (which must not exist yet), its card and
    ``pretrained_cfg`` stating ``cfg``'s source, URL, hash, license and COCO AP; written atomically."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise HubError(f"{folder} exists and is not empty; choose another --output or remove it")
    if folder.exists():
        folder.rmdir()
    metrics = {"AP": cfg.coco_ap / 100.0} if cfg.coco_ap is not None else None
    extra = {
        "tag": cfg.tag,
        "source": cfg.source,
        "source_url": cfg.url,
        "source_sha256": cfg.sha256,
        "converter": cfg.converter,
        "coco_ap": cfg.coco_ap,
        "license": cfg.license,
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        save_pretrained(
            model, staging, metrics=metrics, license=cfg.license, dataset="coco", model_ref=model_ref or cfg.name,
            pretrained_cfg=extra, description=_card_description(cfg),
        )
        if folder.exists():  # another process converted it meanwhile
            shutil.rmtree(staging)
        else:
            os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_converted_tag(cfg: Any, arch: str | None = None, **kwargs: Any) -> nn.Module:
    """``create_model("<model>.<tag>", pretrained=True)`` for a tag with ``url`` + ``converter`` (see the module docstring)."""
    if not cfg.url or not cfg.converter:
        raise HubError(f"pretrained weights {cfg.name!r} have neither hf_hub_id nor url + converter")
    folder = converted_folder(cfg)
    if not (folder / CONFIG_NAME).is_file():
        convert_to_folder(cfg, source_file(cfg), folder)
    config = read_config(folder / CONFIG_NAME)
    if arch is not None and config["architecture"] != arch:
        raise HubError(f"{cfg.name}: the converted weights are a {config['architecture']!r} detector, not {arch!r}")
    backbone = kwargs.pop("backbone", None)
    if backbone is not None and backbone != config["model_args"].get("backbone"):
        raise HubError(
            f"{cfg.name}: the converted weights have backbone {config['model_args'].get('backbone')!r}, not {backbone!r}"
        )
    model = load_folder(folder, cfg.name, **kwargs)
    model.pretrained_cfg = {**model.pretrained_cfg, "tag": cfg.tag}
    return model
