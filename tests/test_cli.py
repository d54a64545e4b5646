"""The `lossreg` command: list, info, check, --help, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from torch import nn

from lossreg.cli import build_parser, main


class _Toy(nn.Module):
    """A toy loss for CLI tests.

    Paper: Toy et al., 2026.
    """

    task = "reg"
    paper = "Toy et al., 2026"

    def __init__(self, gamma: float = 1.5, num_classes: int | None = None) -> None:
        super().__init__()


@pytest.fixture
def toy(temp_register):
    return temp_register("loss", _Toy, name="clitoy_iou")


def test_list_all_kinds(capsys, toy):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in ("loss", "assigner", "balancer", "head", "neck", "detector", "model", "pretrained", "recipe"):
        assert f"{kind} (" in out
    assert "clitoy_iou" in out and "quickstart" in out


def test_list_kind_pattern_describe(capsys, toy):
    assert main(["list", "losses", "clitoy_*"]) == 0
    assert capsys.readouterr().out.split() == ["clitoy_iou"]
    assert main(["list", "loss", "*toy_iou", "--describe"]) == 0
    assert capsys.readouterr().out.strip() == "clitoy_iou  A toy loss for CLI tests."
    assert main(["list", "recipe", "quick*", "-d"]) == 0
    assert capsys.readouterr().out.startswith("quickstart  ATSS")


def test_list_no_match_says_so(capsys):
    assert main(["list", "loss", "no-such-*"]) == 0
    assert "no loss matches 'no-such-*'" in capsys.readouterr().err


def test_info(capsys, toy):
    assert main(["info", "loss", "clitoy_iou"]) == 0
    out = capsys.readouterr().out
    assert "loss 'clitoy_iou'" in out and "task:  reg" in out and "gamma = 1.5" in out and "Toy et al., 2026" in out
    assert main(["info", "loss", "clitoy_iou", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == {"gamma": 1.5, "num_classes": None} and data["task"] == "reg"


def test_info_recipe(capsys):
    assert main(["info", "recipe", "quickstart"]) == 0
    out = capsys.readouterr().out
    assert "arch: atss" in out and "quickstart.yaml" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["list", "lossses"], "unknown kind 'lossses'; did you mean 'loss'"),
        (["info", "loss", "clitoy_iuo"], "unknown loss 'clitoy_iuo'; did you mean 'clitoy_iou'"),
        (["check", "quickstat"], "no recipe named 'quickstat'; did you mean 'quickstart'"),
        (["check", "quickstart", "--schema-only", "--set", "train.epochs=x"], "train.epochs: expected int"),
        (["check", "quickstart", "--set", "oops"], "expected KEY=VALUE"),
    ],
)
def test_errors_are_one_line(capsys, toy, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_check_prints_resolved_recipe(capsys, dummy_detector, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(f"model: {{arch: {dummy_detector}}}\n")
    assert main(["check", str(path), "--set", "train.epochs=3"]) == 0
    captured = capsys.readouterr()
    assert "epochs: 3" in captured.out and "is valid" in captured.err


@pytest.mark.parametrize("sub", [[], ["list"], ["info"], ["check"]])
def test_help_everywhere(capsys, sub):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*sub, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: lossreg" in out and len(out.splitlines()) > 5


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "lossreg", "--version"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("lossreg ")


def test_list_pretrained_describes_hub_repo_and_metrics(capsys):
    assert main(["list", "pretrained", "*.bccd", "--describe"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("atss_resnet18_fpn.bccd") and "hf-hub:lossreg/atss_resnet18_fpn.bccd" in line
    assert "AP50=0.733" in line
