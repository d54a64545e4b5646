"""Hugging Face Hub support: save, load and publish detectors (timm conventions).

- :func:`save_pretrained` writes ``model.safetensors``, ``config.json``, ``recipe.yaml``
  and ``README.md`` (the model card) to a folder;
- :func:`push_to_hub` publishes that folder to a Hub repository in one commit;
- :func:`load_hf_hub`, :func:`load_local_dir` and :func:`load_pretrained_tag` load them back;
  ``lossreg.create_model("hf-hub:owner/repo[@rev]")``, ``create_model("local-dir:PATH")`` and
  ``create_model("name.tag", pretrained=True)`` call them.
"""

from __future__ import annotations

from .config import FORMAT_VERSION, HubError, check_config, make_config
from .load import download_model, load_folder, load_hf_hub, load_local_dir, load_pretrained_tag
from .push import push_folder, push_to_hub
from .save import save_pretrained

__all__ = [
    "FORMAT_VERSION",
    "HubError",
    "check_config",
    "download_model",
    "load_folder",
    "load_hf_hub",
    "load_local_dir",
    "load_pretrained_tag",
    "make_config",
    "push_folder",
    "push_to_hub",
    "save_pretrained",
]
