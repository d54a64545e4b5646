"""Whether a recipe's data is on this machine: the checks ``lossreg check`` adds to validation.

:func:`~lossreg.recipe.schema.validate` checks a recipe on its own (it may be meant for
another machine); :func:`check_data_paths` checks that every path its ``data`` section
names exists here and is the right kind of entry (a JSON file, an image folder, a VOC
folder with ``Annotations/`` and the split file). Relative paths are resolved from the
working directory, as training resolves them. The synthetic set's ``root`` is a cache
folder created on first use, so only a ``root`` that is a file is refused.
"""

from __future__ import annotations

from pathlib import Path

from .convert import RecipeError
from .schema import Recipe

__all__ = ["check_data_paths"]


def _need(path: str, field: str, kind: str, what: str) -> Path:
    p = Path(path).expanduser()
    if kind == "file":
        if p.is_dir():
            raise RecipeError(f"{path!r} is a folder, not {what}; give the file", field)
        if not p.is_file():
            raise RecipeError(f"{what} {path!r} does not exist (relative paths start at {Path.cwd()})", field)
    else:
        if p.is_file():
            raise RecipeError(f"{path!r} is a file, not {what}; give the folder", field)
        if not p.is_dir():
            raise RecipeError(f"{what} {path!r} does not exist (relative paths start at {Path.cwd()})", field)
    return p


def check_data_paths(recipe: Recipe) -> None:
    """Raise :class:`RecipeError` (with the field's YAML path) for a data path missing on this machine."""
    for split in ("train", "val"):
        ds = getattr(recipe.data, split)
        if ds is None:
            continue
        where = f"data.{split}"
        if ds.format == "coco":
            if ds.ann_file is not None:
                _need(ds.ann_file, f"{where}.ann_file", "file", "the COCO annotation file")
            if ds.root is not None:
                _need(ds.root, f"{where}.root", "dir", "the image folder")
        elif ds.format == "voc" and ds.root is not None:
            root = _need(ds.root, f"{where}.root", "dir", "the VOC folder")
            if not (root / "Annotations").is_dir():
                raise RecipeError(f"VOC folder {ds.root!r} has no Annotations/ folder", f"{where}.root")
            if ds.split is not None and not (root / "ImageSets" / "Main" / f"{ds.split}.txt").is_file():
                have = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt"))
                raise RecipeError(
                    f"VOC split file ImageSets/Main/{ds.split}.txt does not exist in {ds.root!r} (splits found: {have})",
                    f"{where}.split",
                )
        elif ds.format == "synthetic" and ds.root is not None and Path(ds.root).expanduser().is_file():
            raise RecipeError(f"{ds.root!r} is a file, not the synthetic set's cache folder", f"{where}.root")
