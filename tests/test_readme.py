"""Every shell and Python example of README.md, extracted and checked, so that the README cannot drift.

Fast (default run):

- every ``python`` block runs, in order, in one namespace of a fresh subprocess whose
  working directory is an empty folder; a block that needs a trained run (it names
  ``runs/``) waits for the slow test, and a block that needs the network (``hf-hub:``,
  ``pretrained=True``, ``push_to_hub``, converted ``.tv_coco`` weights) is compiled only,
  and an ONNX export is left to the slow test;
- every ``bash`` command is parsed: ``lossreg`` commands (also under ``torchrun`` or as
  ``.venv/bin/lossreg``) by lossreg's own argument parser, their ``--set`` overrides and
  ``--swap`` values by loading the recipe with them; ``lossreg list/info/check`` and
  ``ablate --dry-run`` run; other programs must be known (``git``, ``pip``, ``python``
  scripts that exist in the checkout, ...). Usage synopses (a block after
  ``<!-- readme-test: synopsis -->``) are checked option by option.

Slow (``-m slow``): the commands run in README order in an empty folder with the
checkout's ``recipes/`` beside it, training with small overrides appended (``--set
train.epochs=1 --set data.train.max_images=8 --set data.val.max_images=8``, ablations as
``--dry-run``); a command whose inputs do not exist there (a COCO file, a VOC folder, a
video, the Hub, a second process) is parsed only. Then the Python blocks that need the
trained run.

A block preceded by ``<!-- readme-test: skip -->`` is compiled / parsed only.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SMALL = ["--set", "train.epochs=1", "--set", "data.train.max_images=8", "--set", "data.val.max_images=8"]
NETWORK = ("hf-hub:", "pretrained=True", "push_to_hub", ".tv_coco")
#: python blocks that take long (an ONNX export): run by the slow test, compiled by the fast one
HEAVY = ("export_model(",)
#: programs a README command may run besides lossreg (parsed only)
KNOWN = {"git", "python", "python3", "pip", "tensorboard", "torchrun", "cd", "mkdir", "export"}
#: what a subcommand needs installed to run (else it is parsed only)
REQUIRES = {"export": ("onnx", "onnxruntime")}


@dataclass
class Block:
    lang: str
    code: str
    line: int
    marker: str | None


def readme_blocks(text: str | None = None) -> list[Block]:
    """The fenced code blocks of README.md with their language, first line and ``readme-test`` marker."""
    text = README.read_text(encoding="utf-8") if text is None else text
    out = []
    for m in re.finditer(r"^([ \t]*)```(\w*)[ \t]*\n(.*?)^\1```", text, re.S | re.M):
        before = text[: m.start()].rstrip().splitlines()
        marker = None
        if before:
            found = re.fullmatch(r"\s*<!--\s*readme-test:\s*(\w+).*-->\s*", before[-1])
            marker = found.group(1) if found else None
        out.append(Block(m.group(2), textwrap.dedent(m.group(3)), text[: m.start()].count("\n") + 2, marker))
    return out


def shell_commands(block: Block) -> list[tuple[list[str], int]]:
    """``(argv, line)`` of every command of a shell block (comments dropped, ``\\`` joined, split at ``&&``)."""
    out = []
    lines = block.code.replace("\\\n", " ").splitlines()
    for i, line in enumerate(lines):
        tokens = shlex.split(line, comments=True)
        cmd: list[str] = []
        for tok in [*tokens, "&&"]:
            if tok == "&&":
                if cmd:
                    out.append((cmd, block.line + i))
                cmd = []
            else:
                cmd.append(tok)
    return out


def lossreg_argv(argv: list[str]) -> list[str] | None:
    """The arguments after ``lossreg`` (plain, ``.venv/bin/lossreg``, ``torchrun ... -m lossreg``), or None."""
    if Path(argv[0]).name == "lossreg":
        return argv[1:]
    if argv[0] == "torchrun" or argv[:3] == [sys.executable, "-m", "torch.distributed.run"]:
        for i in range(len(argv) - 1):
            if argv[i : i + 2] == ["-m", "lossreg"]:
                return argv[i + 2 :]
    return None


def parse(argv: list[str]):
    """lossreg's parser on ``argv``; raises AssertionError with argparse's message."""
    from lossreg.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"lossreg {shlex.join(argv)}: {err.getvalue().strip() or exc}") from None


def _subparser_options(command: str) -> set[str]:
    from lossreg.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert command in sub.choices, f"lossreg has no command {command!r}"
    return {opt for action in sub.choices[command]._actions for opt in action.option_strings}


def check_recipe_args(args) -> None:
    """Load the recipe of train/check/ablate with its --set overrides (and every --swap variant's plan)."""
    from lossreg.recipe import load_recipe

    recipe = getattr(args, "recipe", None)
    if recipe is None or (recipe.endswith((".yaml", ".yml")) and not Path(recipe).is_file() and not (ROOT / recipe).is_file()):
        return
    recipe = str(ROOT / recipe) if not Path(recipe).is_file() and (ROOT / recipe).is_file() else recipe
    if args.command == "ablate":
        from lossreg.engine import ablate

        seeds = ablate.parse_seed_list(args.seed_list) if args.seed_list else args.seeds
        ablate.plan_ablation(recipe, args.swap or [], one_at_a_time=args.one_at_a_time, seeds=seeds,
                             sets=args.set or (), output_dir=args.output)
    else:
        load_recipe(recipe, overrides=args.set or ())


def check_other_program(argv: list[str], line: int) -> None:
    prog = Path(argv[0]).name
    assert prog in KNOWN, f"README line {line}: unknown program {argv[0]!r} (teach tests/test_readme.py about it)"
    if prog in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
        assert (ROOT / argv[1]).is_file(), f"README line {line}: {argv[1]} does not exist"
    if prog == "pip" or (prog in ("python", "python3") and argv[1:3] == ["-m", "pip"]) or "pip" in argv[0]:
        for tok in argv:
            extras = re.fullmatch(r"\.\[(.+)\]|lossreg\[(.+)\]", tok)
            if extras:
                text = (ROOT / "pyproject.toml").read_text()
                for extra in (extras.group(1) or extras.group(2)).split(","):
                    assert re.search(rf"^{re.escape(extra)} = \[", text, re.M), f"README line {line}: no extra {extra!r}"


def _python_blocks():
    return [b for b in readme_blocks() if b.lang == "python"]


def _needs_network(code: str) -> bool:
    return any(word in code for word in NETWORK)


def _needs_run(code: str) -> bool:
    return "runs/" in code or any(word in code for word in HEAVY)


def _harness(blocks: list[Block]) -> str:
    """A script running the blocks in one namespace, naming the README line of a failure."""
    parts = ["import sys, traceback\nns = {'__name__': '__readme__'}\n"]
    for b in blocks:
        if b.marker == "skip" or _needs_network(b.code):
            parts.append(f"compile({b.code!r}, 'README.md:{b.line}', 'exec')\n")
            continue
        parts.append(
            f"try:\n    exec(compile({b.code!r}, 'README.md:{b.line}', 'exec'), ns)\n"
            f"except Exception:\n    traceback.print_exc()\n    sys.exit('README.md line {b.line}: this python block failed')\n"
        )
    return "".join(parts)


def _run_python(blocks: list[Block], cwd: Path) -> None:
    script = cwd / "readme_blocks.py"
    script.write_text(_harness(blocks))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


# --------------------------------------------------------------------------- fast


def test_readme_has_examples():
    langs = [b.lang for b in readme_blocks()]
    assert langs.count("python") >= 6 and langs.count("bash") >= 8


def test_python_examples_run(tmp_path):
    blocks = _python_blocks()
    fast = [b if not _needs_run(b.code) else Block(b.lang, b.code, b.line, "skip") for b in blocks]
    _run_python(fast, tmp_path)  # the blocks left to the slow test are compiled


def test_shell_examples_parse(tmp_path, monkeypatch, capsys):
    from lossreg.cli import main

    monkeypatch.chdir(tmp_path)
    checked = 0
    for block in readme_blocks():
        if block.lang not in ("bash", "sh", "shell"):
            continue
        for argv, line in shell_commands(block):
            args = lossreg_argv(argv)
            if args is None:
                check_other_program(argv, line)
                continue
            if block.marker == "synopsis":
                options = _subparser_options(args[0]) if args else set()
                for tok in args[1:]:
                    opt = tok.strip("[]").split("=")[0]
                    if opt.startswith("--"):
                        assert opt in options, f"README line {line}: lossreg {args[0]} has no option {opt}"
                checked += 1
                continue
            parsed = parse(args)
            try:
                check_recipe_args(parsed)
            except Exception as exc:
                raise AssertionError(f"README line {line}: {shlex.join(argv)}: {exc}") from exc
            if parsed.command in ("list", "info", "check") or (parsed.command == "ablate" and parsed.dry_run):
                assert main(args) == 0, f"README line {line}: {shlex.join(argv)} failed: {capsys.readouterr().err}"
            checked += 1
    assert checked >= 25


def test_eval_of_a_missing_path_says_so(capsys):
    from lossreg.cli import main

    assert main(["eval", "runs/no-such-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lossreg eval: error: runs/no-such-run: no such run or model folder"), err
    assert main(["eval", "someone/some-model"]) == 2
    assert "hf-hub:someone/some-model" in capsys.readouterr().err  # owner/repo: the hint says how to load it


# --------------------------------------------------------------------------- slow


def _inputs_missing(args, line: int) -> str | None:
    """Why a parsed command cannot run here (a missing input, the network, another process), or None."""
    command = args.command
    if command == "push":
        return "the Hub"
    for module in REQUIRES.get(command, ()):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    paths: list[str] = []
    if command == "train":
        if args.recipe.endswith((".yaml", ".yml")) and not Path(args.recipe).is_file():
            return f"no {args.recipe}"
        if isinstance(args.resume, str):
            paths.append(args.resume)
        from lossreg.recipe import load_recipe

        recipe = load_recipe(args.recipe, overrides=args.set or ())
        if recipe.model.pretrained_backbone or recipe.model.weights:
            return "downloads weights"
        for split in (recipe.data.train, recipe.data.val):
            if split is not None and split.root is not None and split.format != "synthetic":
                paths.append(split.root)
    if command in ("eval", "predict", "export"):
        model = args.model
        if model.startswith("hf-hub:"):
            return "the Hub"
        if "/" in model or model.startswith("local-dir:"):
            paths.append(model.removeprefix("local-dir:"))
    if command == "eval":
        paths += [p for p in (args.data, args.weights, args.ann, args.images) if p]
    if command == "predict":
        for pattern in args.images:
            if not glob.glob(pattern):
                return f"no {pattern}"
    for path in paths:
        stem_ok = Path(path).exists() or Path(path + ".safetensors").exists()
        if not stem_ok:
            return f"no {path}"
    return None


@pytest.mark.slow  # trains the quick start for 1 epoch of 8 images and runs every example it enables: minutes
def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from lossreg.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    for name in ("photos/a.png", "photos/b.jpg", "more/c.png"):  # images for `lossreg predict`
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (160, 120), (40, 90, 160)).save(tmp_path / name)
    ran, parsed_only = [], []
    for block in readme_blocks():
        if block.lang not in ("bash", "sh", "shell") or block.marker in ("synopsis", "skip"):
            continue
        for argv, line in shell_commands(block):
            args = lossreg_argv(argv)
            if args is None or argv[0] == "torchrun":
                parsed_only.append((line, "not lossreg in this process"))
                continue
            parsed = parse(args)
            reason = _inputs_missing(parsed, line)
            if reason is not None:
                parsed_only.append((line, reason))
                continue
            if parsed.command in ("train", "ablate"):
                args = [*args, *SMALL, *(["--dry-run"] if parsed.command == "ablate" and not parsed.dry_run else [])]
                if parsed.command == "train" and "--no-progress" not in args:
                    args.append("--no-progress")
            code = main(args)
            assert code == 0, f"README line {line}: lossreg {shlex.join(args)} -> {code}: {capsys.readouterr().err[-2000:]}"
            ran.append(line)
    assert (tmp_path / "runs" / "quickstart" / "model" / "config.json").is_file()
    assert len(ran) >= 10, (ran, parsed_only)
    (tmp_path / "ran.json").write_text(json.dumps({"ran": ran, "parsed_only": parsed_only}))
    run_blocks = [b for b in _python_blocks() if b.marker != "skip"]
    _run_python(run_blocks, tmp_path)
