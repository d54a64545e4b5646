"""Publishing to the Hugging Face Hub: one ``create_repo`` and one ``upload_folder`` commit.

>>> lossreg.push_to_hub(model, "me/atss-bccd", metrics=metrics)       # doctest: +SKIP
>>> # lossreg push runs/bccd me/atss-bccd                            (command line)

``HF_TOKEN`` / ``hf auth login`` provide the token unless one is passed;
``endpoint`` (or ``HF_ENDPOINT``) selects another Hub server.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from .._version import __version__
from .card import render_model_card
from .config import HubError
from .load import _network_error, hub_unreachable_error, read_config, read_weights
from .save import CARD_NAME, CONFIG_NAME, RECIPE_NAME, WEIGHTS_NAME, save_pretrained

__all__ = ["push_folder", "push_to_hub"]

DEFAULT_MESSAGE = "Upload lossreg model"


def _stage_for_repo(folder: Path, staging: Path, repo_id: str) -> None:
    """Copy a saved model folder into ``staging`` with the card and ``hf_hub_id`` pointing at ``repo_id``."""
    config = read_config(folder / CONFIG_NAME)
    files = config["lossreg"].get("files") or {}
    read_weights(folder / WEIGHTS_NAME, files.get(WEIGHTS_NAME))  # refuse to publish a broken folder
    shutil.copy2(folder / WEIGHTS_NAME, staging / WEIGHTS_NAME)
    recipe_yaml = (folder / RECIPE_NAME).read_text(encoding="utf-8") if (folder / RECIPE_NAME).is_file() else ""
    config["pretrained_cfg"] = {**config.get("pretrained_cfg", {}), "hf_hub_id": repo_id}
    (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if recipe_yaml:
        (staging / RECIPE_NAME).write_text(recipe_yaml, encoding="utf-8")
    license = config["pretrained_cfg"].get("license")
    card = render_model_card(config, recipe_yaml or "# not recorded", f"hf-hub:{repo_id}", license=license)
    (staging / CARD_NAME).write_text(card, encoding="utf-8")


def push_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = DEFAULT_MESSAGE,
    endpoint: str | None = None,
) -> Any:
    """Publish a folder written by :func:`~.save.save_pretrained` (e.g. a run's ``model/``; ``lossreg push`` also takes the run folder itself).

    The folder is checked first (its config loads and its weights match the
    recorded sha256). Returns huggingface_hub's ``CommitInfo`` (``.commit_url``,
    ``.oid``). A ``revision`` other than ``main`` is created as a branch if needed.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise HubError(
            f"{folder} holds no saved model ({CONFIG_NAME}); write one with lossreg.save_pretrained or lossreg train "
            "(of a run folder, push its model/ folder; `lossreg push RUN` finds it)"
        )
    api = HfApi(endpoint=endpoint, token=token, library_name="lossreg", library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="lossreg-push-") as tmp:
        staging = Path(tmp)
        _stage_for_repo(folder, staging, repo_id)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision and revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            return api.upload_folder(
                repo_id=repo_id, folder_path=staging, commit_message=commit_message, revision=revision,
                repo_type="model",
            )
        except HubError:
            raise
        except Exception as exc:  # noqa: BLE001 - the client's and its HTTP library's errors, as one line
            raise _push_error(exc, repo_id, endpoint) from exc


def _push_error(exc: Exception, repo_id: str, endpoint: str | None) -> HubError:
    """One-line :class:`HubError` for a failed publication: no answer, offline, not allowed, or refused."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    ref = f"hf-hub:{repo_id}"
    where = endpoint or constants.ENDPOINT
    if _network_error(exc) or type(exc).__name__ == "OfflineModeIsEnabled":
        if endpoint is not None and not constants.is_offline_mode():
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return HubError(f"{ref}: cannot reach the Hub at {endpoint} to publish ({type(exc).__name__}: {detail}); "
                            "check the network and --endpoint")
        return hub_unreachable_error(exc, ref, "publish")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return HubError(f"{ref}: the Hub at {where} refused the upload ({status}): log in with `hf auth login`, "
                            "set HF_TOKEN or pass --token, with write access to the repository")
        if status == 404:
            return HubError(f"{ref}: {where} answered 404 Not Found; is it a Hugging Face Hub (HF_ENDPOINT, --endpoint)?")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return HubError(f"{ref}: the Hub at {where} refused the upload: {first}")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return HubError(f"{ref}: publishing failed ({type(exc).__name__}: {first})")


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = DEFAULT_MESSAGE,
    endpoint: str | None = None,
    **save_kwargs: Any,
) -> Any:
    """Save ``model`` (see :func:`~.save.save_pretrained`, whose keywords ``save_kwargs`` takes)
    and publish it to ``repo_id`` in one commit; returns the ``CommitInfo``."""
    with tempfile.TemporaryDirectory(prefix="lossreg-save-") as tmp:
        save_pretrained(model, tmp, model_ref=f"hf-hub:{repo_id}", **save_kwargs)
        return push_folder(
            tmp, repo_id, token=token, private=private, revision=revision,
            commit_message=commit_message, endpoint=endpoint,
        )
