"""Run by tests/engine/test_distributed.py under ``torchrun``: train each job of a JSON list into its folder."""

from __future__ import annotations

import json
import sys

from lossreg.engine import distributed
from lossreg.engine.trainer import Trainer


def main(path: str) -> None:
    with open(path, encoding="utf-8") as fh:
        jobs = json.load(fh)
    try:
        for job in jobs:
            Trainer(job["recipe"], output_dir=job["output"], progress=False).train()
    finally:
        distributed.cleanup_distributed()


if __name__ == "__main__":
    main(sys.argv[1])
