"""Render the model card of a published model into hub/cards/<model>.<tag>.md.

    python tools/make_card.py runs/quickstart atss_resnet18_fpn.synthetic

RUN_DIR is a run folder (its model/) or a saved model folder; the card is the one
`lossreg push RUN_DIR <the tag's hf_hub_id>` uploads, so hub/cards shows exactly what
the Hub repository holds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lossreg
from lossreg._io import atomic_write_text
from lossreg.hub.card import render_model_card

CARDS = Path(__file__).resolve().parents[1] / "hub" / "cards"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder or saved model folder")
    parser.add_argument("tag", help="the pretrained name, e.g. atss_resnet18_fpn.synthetic")
    args = parser.parse_args()
    folder = args.run / "model" if (args.run / "model" / "config.json").is_file() else args.run
    model, tag = args.tag.rsplit(".", 1)
    cfg = lossreg.get_pretrained_cfg(model, tag)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["pretrained_cfg"] = {**config["pretrained_cfg"], "hf_hub_id": cfg.hf_hub_id, "tag": tag}
    recipe = (folder / "recipe.yaml").read_text(encoding="utf-8")
    card = render_model_card(config, recipe, f"hf-hub:{cfg.hf_hub_id}", license=cfg.license, description=cfg.description)
    out = atomic_write_text(CARDS / f"{args.tag}.md", card)
    print(out)


if __name__ == "__main__":
    main()
