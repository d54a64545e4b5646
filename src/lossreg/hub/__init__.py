"""Hugging Face Hub support: save, load and publish detectors (timm conventions).

- :func:`save_pretrained` writes ``model.safetensors``, ``config.json``, ``recipe.yaml``
  and ``README.md`` (the model card) to a folder;
- :func:`push_to_hub` publishes that folder to a Hub repository in one commit;
- ``create_model("hf-hub:owner/repo[@rev]")``, ``create_model("local-dir:PATH")`` and
  ``create_model("name.tag")`` load them back (this package installs those loaders).
"""

from __future__ import annotations

from .._factory import register_source
from .config import FORMAT_VERSION, HubError, check_config, make_config
from .load import download_model, load_folder, load_hf_hub, load_local_dir, load_model, load_pretrained_tag
from .push import push_folder, push_to_hub
from .save import save_pretrained

__all__ = [
    "FORMAT_VERSION",
    "HubError",
    "check_config",
    "download_model",
    "load_folder",
    "load_model",
    "make_config",
    "push_folder",
    "push_to_hub",
    "save_pretrained",
]

register_source("local-dir", load_local_dir)
register_source("hf-hub", load_hf_hub)
register_source("pretrained", load_pretrained_tag)
