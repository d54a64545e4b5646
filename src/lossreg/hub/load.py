"""Loading published models: ``local-dir:PATH``, ``hf-hub:owner/repo[@rev]`` and ``model.tag``.

>>> lossreg.create_model("local-dir:runs/quick/model")                       # doctest: +SKIP
>>> lossreg.create_model("hf-hub:lossreg/atss_resnet18_fpn.synthetic")       # doctest: +SKIP
>>> lossreg.create_model("hf-hub:owner/repo", num_classes=2, label_names=["a", "b"])  # fine-tune

Every path ends in :func:`load_folder`: ``config.json`` is checked against the
installed registries (:func:`~.config.check_config`), the weights against the
sha256 and size ``config.json`` recorded, and their keys and shapes against the
rebuilt detector, all before a single weight is copied, so a bad file raises
:class:`HubError` and never leaves a half-loaded model. Weights are read from
safetensors; a legacy ``pytorch_model.bin``/``.pth`` only with
``torch.load(weights_only=True)``.

Hub downloads go through ``huggingface_hub`` (its cache, ``HF_ENDPOINT``,
``HF_TOKEN``, ``HF_HUB_OFFLINE``); with ``HF_HUB_OFFLINE=1`` a cached model
loads and an uncached one fails saying it is offline and not cached.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._limits import InputLimitError, load_json
from .._registry import STATEFUL_KINDS, component_slots, get_registry
from .._version import __version__
from .config import HubError, check_config
from .save import CONFIG_NAME, RECIPE_NAME, WEIGHTS_NAME

__all__ = [
    "build_model",
    "check_state_dict",
    "download_model",
    "load_folder",
    "load_hf_hub",
    "load_local_dir",
    "load_pretrained_tag",
    "read_config",
    "read_weights",
]

logger = logging.getLogger(__name__)

#: Weight files accepted besides ``model.safetensors``, read with ``torch.load(weights_only=True)``.
LEGACY_WEIGHTS = ("pytorch_model.bin", "model.pth")


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``config.json`` parsed and checked; :class:`HubError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise HubError(f"no {CONFIG_NAME} in {path.parent} (a lossreg model folder is written by lossreg.save_pretrained)")
    try:
        config = load_json(path.read_bytes())  # nesting depth bounded (lossreg._limits)
    except InputLimitError as exc:
        raise HubError(f"{path}: {exc}; this is not a config.json written by lossreg") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HubError(f"{path} is not valid JSON ({exc}); the download may be truncated, fetch it again") from None
    check_config(config, str(path))
    return config


def read_weights(path: str | os.PathLike[str], expected: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
    """The tensors of a weight file, checked against ``expected`` ``{"sha256", "size"}`` when given.

    safetensors files are read with ``safetensors``; ``.bin``/``.pth`` only with
    ``torch.load(weights_only=True)`` (no code runs). Raises :class:`HubError`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    data = path.read_bytes()  # read once: hashed and parsed from the same bytes
    if expected:
        if "size" in expected and len(data) != expected["size"]:
            raise HubError(
                f"{path} has {len(data)} bytes but config.json says {expected['size']}: the file is truncated or "
                "from another save; download or save it again"
            )
        if "sha256" in expected and hashlib.sha256(data).hexdigest() != expected["sha256"]:
            raise HubError(f"{path} does not match the sha256 in config.json: it is corrupt or from another save")
    if path.suffix == ".safetensors":
        try:
            return load(data)
        except (SafetensorError, OSError, ValueError) as exc:
            raise HubError(f"{path} is not a readable safetensors file ({exc}); it may be truncated") from None
    logger.warning("%s: legacy weight file, read with torch.load(weights_only=True); prefer safetensors", path)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for bad or unsafe pickles
        raise HubError(f"{path} could not be read safely with torch.load(weights_only=True): {exc}") from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise HubError(f"{path} does not hold a flat state dict of tensors")
    return dict(state)


def check_state_dict(
    model: nn.Module, state: Mapping[str, Tensor], source: str, target: str = "the detector its config.json describes"
) -> None:
    """Raise :class:`HubError` listing missing, unexpected and mis-shaped keys (nothing is loaded)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(k for k in set(state) - set(own) if not _created_on_load(model, k))
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            problems.append(f"{what}: {', '.join(items[:4])}{f' (+{len(items) - 4} more)' if len(items) > 4 else ''}")
    if problems:
        raise HubError(f"the weights in {source} do not fit {target}; " + "; ".join(problems))
    check_weight_values(model, state, source)


def _created_on_load(model: nn.Module, key: str) -> bool:
    """Whether ``key`` is state its module creates when loading it (a balancer's per-task
    buffers, which a fresh model has not made yet because its tasks are known only at the
    first training step)."""
    path, _, name = key.rpartition(".")
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return False
    accepts = getattr(module, "creates_on_load", None)
    return bool(accepts(name)) if callable(accepts) else False


def _kind(t: Tensor) -> str:
    if t.dtype == torch.bool:
        return "bool"
    return "float" if t.is_floating_point() or t.is_complex() else "integer"


def check_weight_values(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Raise :class:`HubError` for weights of the wrong kind of dtype (int32 where the model has floats) or
    parameters holding NaN/inf, whether or not config.json recorded a sha256 for the file.

    A float weight of another precision (float16 for float32) is fine: loading casts it.
    """
    own = model.state_dict()
    kinds = [f"{k} ({state[k].dtype} vs model {own[k].dtype})" for k in own if k in state and _kind(state[k]) != _kind(own[k])]
    if kinds:
        more = f" (+{len(kinds) - 3} more)" if len(kinds) > 3 else ""
        raise HubError(
            f"the weights in {source} have the wrong dtype: {', '.join(kinds[:3])}{more}; the file was not written by "
            "lossreg.save_pretrained from this detector"
        )
    params = {name for name, _ in model.named_parameters()}
    bad = [k for k in own if k in params and k in state and state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())]
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise HubError(
            f"the weights in {source} hold NaN or inf in {', '.join(bad[:3])}{more}: the run that wrote them diverged "
            "or the file is corrupt; use an earlier checkpoint"
        )


def _weights_file(folder: Path) -> Path:
    for name in (WEIGHTS_NAME, *LEGACY_WEIGHTS):
        if (folder / name).is_file():
            return folder / name
    raise HubError(f"no weights in {folder} (looked for {WEIGHTS_NAME}, {', '.join(LEGACY_WEIGHTS)})")


def build_model(
    config: Mapping[str, Any],
    state: Mapping[str, Tensor],
    source: str,
    **kwargs: Any,
) -> nn.Module:
    """Rebuild the detector of ``config`` with ``kwargs`` overrides and load ``state`` into it.

    Same classes: every key and shape must match (strict). Other ``num_classes`` or
    ``label_names``: the fine-tuning transfer of :func:`~lossreg.detectors.finetune.transfer_state_dict`.
    """
    from ..detectors.finetune import training_state_prefixes, transfer_state_dict, with_fresh_state

    args = dict(config["model_args"])
    src_names = config.get("label_names")
    label_names = kwargs.pop("label_names", None)
    num_classes = kwargs.pop("num_classes", None)
    if label_names is not None:
        label_names = list(label_names)
        if num_classes is not None and num_classes != len(label_names):
            raise ValueError(f"num_classes={num_classes} but {len(label_names)} label_names")
        num_classes = len(label_names)
    finetune = (num_classes is not None and num_classes != args.get("num_classes")) or (
        label_names is not None and label_names != src_names
    )
    if num_classes is not None:
        args["num_classes"] = num_classes
        args["label_names"] = label_names if label_names is not None else (src_names if not finetune else None)
    kwargs.pop("pretrained_backbone", None)  # the weights come from the checkpoint, never from timm
    try:
        model = get_registry("detector").create(config["architecture"], **{**args, **kwargs})
    except (TypeError, ValueError) as exc:  # model_args the detector refuses (e.g. above a size limit)
        if kwargs:
            raise  # the caller's override may be what is wrong; its own message says which
        raise HubError(f"{source}: config.json's model_args do not build a detector: {exc}") from None
    stateful = [k for k, slot in component_slots().items() if slot.kind in STATEFUL_KINDS]
    swapped = [k for k in stateful if k in kwargs]
    if swapped:  # a swapped loss or balancer starts with fresh state
        state = with_fresh_state(model, state, training_state_prefixes(model, swapped))
    if finetune:
        check_weight_values(model, {k: v for k, v in state.items() if k in model.state_dict()}, source)
        report = transfer_state_dict(model, state, src_names)
        logger.info(
            "fine-tuning from %s: copied classes %s, re-initialised %s",
            source, report["copied_classes"] or "none", report["reinitialised"],
        )
    else:
        check_state_dict(model, state, source)
        model.load_state_dict(state, strict=True)
    return model


def load_folder(folder: str | os.PathLike[str], source: str | None = None, **kwargs: Any) -> nn.Module:
    """The detector saved in ``folder`` (``config.json`` + weights), with ``kwargs`` overrides."""
    from ..recipe import RecipeError, load_recipe

    folder = Path(folder)
    source = source or f"local-dir:{folder}"
    if not folder.is_dir():
        raise HubError(f"{source}: {folder} is not a folder")
    config = read_config(folder / CONFIG_NAME)
    weights = _weights_file(folder)
    expected = (config["lossreg"].get("files") or {}).get(weights.name)
    state = read_weights(weights, expected)
    model = build_model(config, state, source, **kwargs)
    if (folder / RECIPE_NAME).is_file():
        try:
            model.recipe = load_recipe(folder / RECIPE_NAME, validate=False)
        except RecipeError as exc:  # the weights are fine; only the record of how they were trained is bad
            logger.warning("%s: ignoring an unreadable %s (%s)", source, RECIPE_NAME, exc)
    model.pretrained_cfg = dict(config.get("pretrained_cfg") or {})
    model.hub_config = config
    return model


def load_local_dir(parsed: Any, **kwargs: Any) -> nn.Module:
    """``create_model("local-dir:PATH")``: a folder written by :func:`~.save.save_pretrained`."""
    path = Path(os.path.expanduser(parsed.path if hasattr(parsed, "path") else str(parsed)))
    if not path.exists():
        raise HubError(f"local-dir:{path}: no such folder")
    return load_folder(path, f"local-dir:{path}", **kwargs)


def _hub_error(exc: Exception, repo_id: str, revision: str | None) -> HubError:
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    ref = f"hf-hub:{repo_id}{f'@{revision}' if revision else ''}"
    cache = constants.HF_HUB_CACHE
    if isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        if constants.is_offline_mode():
            return HubError(
                f"{ref}: HF_HUB_OFFLINE=1 (offline mode) and this model is not in the Hugging Face cache ({cache}); "
                "download it once with network access, or unset HF_HUB_OFFLINE"
            )
        return HubError(
            f"{ref}: cannot reach the Hub at {constants.ENDPOINT} and this model is not in the cache ({cache}); "
            "check the network or HF_ENDPOINT"
        )
    if isinstance(exc, GatedRepoError):
        return HubError(f"{ref}: gated repository; accept its terms on the Hub and log in (`hf auth login` or HF_TOKEN)")
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(
            f"{ref}: no such repository at {constants.ENDPOINT} (or it is private: log in with `hf auth login` or set HF_TOKEN)"
        )
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"{ref}: revision {revision!r} not found in {repo_id}")
    if isinstance(exc, EntryNotFoundError):
        return HubError(f"{ref}: the repository has no {CONFIG_NAME}/{WEIGHTS_NAME}; it is not a lossreg model")
    return HubError(f"{ref}: download failed: {exc}")


def _network_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the Hub could not be reached (no answer), as opposed to an answer that says no."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        return getattr(exc, "response", None) is None
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(
        names & {"ConnectError", "ConnectionError", "TimeoutException", "Timeout", "NetworkError", "TransportError",
                 "ProtocolError", "OfflineModeIsEnabled"}
    ) or isinstance(exc, (ConnectionError, TimeoutError))


def hub_unreachable_error(exc: BaseException, ref: str, what: str) -> HubError:
    """The one-line :class:`HubError` for a Hub that did not answer (or offline mode)."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return HubError(f"{ref}: HF_HUB_OFFLINE=1 (offline mode): cannot {what}; unset HF_HUB_OFFLINE to go online")
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return HubError(
        f"{ref}: cannot reach the Hub at {constants.ENDPOINT} to {what} ({type(exc).__name__}: {detail}); check the "
        "network, HF_ENDPOINT or --endpoint"
    )


def _probe(repo_id: str, revision: str | None, token: str | bool | None) -> None:
    """One request for ``config.json`` without retries, so an unreachable Hub fails in seconds.

    ``hf_hub_download`` retries a connection error five times with back-off (about 30 s)
    when the file is not cached. Here a Hub that does not answer, for a model that is not
    in the cache, raises :class:`HubError` at once; any answer (even a refusal) and every
    cached model go on to ``hf_hub_download``, which handles them as before.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    if constants.is_offline_mode():
        return
    url = hf_hub_url(repo_id, CONFIG_NAME, revision=revision)
    try:
        try:
            get_hf_file_metadata(url, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT, retry_on_errors=False)
        except TypeError:  # huggingface_hub without retry_on_errors: it does not retry here either
            get_hf_file_metadata(url, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - sorted into "no answer" and "an answer" below
        if not _network_error(exc):
            return
        cached = try_to_load_from_cache(repo_id, CONFIG_NAME, revision=revision)
        if isinstance(cached, str):
            return  # the cache serves it
        ref = f"hf-hub:{repo_id}{f'@{revision}' if revision else ''}"
        raise hub_unreachable_error(exc, ref, "download it (it is not in the Hugging Face cache)") from None


def download_model(repo_id: str, revision: str | None = None, token: str | bool | None = None) -> Path:
    """Download (or find in the cache) ``config.json``, the weights and ``recipe.yaml``; return the snapshot folder.

    ``config.json`` is fetched and checked first, so an incompatible model fails
    before its weights are downloaded.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    def fetch(filename: str) -> Path:
        return Path(
            hf_hub_download(
                repo_id, filename, revision=revision, token=token,
                library_name="lossreg", library_version=__version__,
            )
        )

    try:
        _probe(repo_id, revision, token)
        config_path = fetch(CONFIG_NAME)
        read_config(config_path)
        fetch(WEIGHTS_NAME)
    except HubError:
        raise
    except Exception as exc:  # the client's own errors, and its HTTP library's (a dropped connection)
        raise _hub_error(exc, repo_id, revision) from exc
    try:
        fetch(RECIPE_NAME)
    except (HfHubHTTPError, EntryNotFoundError, OSError):
        logger.info("hf-hub:%s has no %s", repo_id, RECIPE_NAME)
    return config_path.parent


def load_hf_hub(parsed: Any, token: str | bool | None = None, **kwargs: Any) -> nn.Module:
    """``create_model("hf-hub:owner/repo[@revision]")``: download (or use the cache) and load."""
    repo_id, revision = parsed.repo_id, parsed.revision
    folder = download_model(repo_id, revision, token)
    ref = f"hf-hub:{repo_id}{f'@{revision}' if revision else ''}"
    return load_folder(folder, ref, **kwargs)


def load_pretrained_tag(pretrained_cfg: Any, arch: str | None = None, **kwargs: Any) -> nn.Module:
    """``create_model("name.tag")`` / ``pretrained=True``: the detector of the tag's Hub repository.

    The repository's ``config.json`` defines the detector (as timm's ``hf_hub_id``
    weights define theirs); ``kwargs`` override it. The entry point's
    architecture and backbone must be the published ones.
    """
    if not pretrained_cfg.hf_hub_id:
        raise HubError(f"pretrained weights {pretrained_cfg.name!r} have no hf_hub_id; nowhere to download them from")
    ref = f"hf-hub:{pretrained_cfg.hf_hub_id}"
    folder = download_model(pretrained_cfg.hf_hub_id, pretrained_cfg.revision)
    config = read_config(folder / CONFIG_NAME)
    if arch is not None and config["architecture"] != arch:
        raise HubError(f"{pretrained_cfg.name}: {ref} holds a {config['architecture']!r} detector, not {arch!r}")
    backbone = kwargs.pop("backbone", None)
    if backbone is not None and backbone != config["model_args"].get("backbone"):
        raise HubError(
            f"{pretrained_cfg.name}: the published weights have backbone {config['model_args'].get('backbone')!r}, "
            f"not {backbone!r}; drop backbone= or pretrained=True"
        )
    model = load_folder(folder, ref, **kwargs)
    model.pretrained_cfg = {**model.pretrained_cfg, "tag": pretrained_cfg.tag, "hf_hub_id": pretrained_cfg.hf_hub_id}
    return model
