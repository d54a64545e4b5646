#!/usr/bin/env python
"""Regenerate README.md's component tables from the registry (``--check`` only verifies)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lossreg._docs import update_readme

README = Path(__file__).resolve().parents[1] / "README.md"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md's tables are stale")
    args = parser.parse_args()
    ok = update_readme(README, check=args.check)
    if args.check and not ok:
        print("README.md's component tables are stale: run `python tools/update_readme.py`", file=sys.stderr)
        sys.exit(1)
