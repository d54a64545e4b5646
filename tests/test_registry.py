"""The generic registry: registration, listing, wildcards, errors, suggestions, overrides, plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Literal

import pytest
from torch import nn

import lossreg
from lossreg._registry import REQUIRED, Registry, UnknownComponentError, check_type, close_matches


class Toy(nn.Module):
    """A toy loss for tests.

    Paper: nobody, 2026.
    """

    task = "cls"
    paper = "Nobody, Toy Losses, 2026"

    def __init__(
        self,
        gamma: float = 2.0,
        mode: Literal["a", "b"] = "a",
        bins: int = 10,
        flag: bool = False,
        steps: tuple[int, ...] = (1, 2),
        reduction: str = "mean",
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.gamma, self.mode, self.bins, self.flag, self.steps, self.scale = gamma, mode, bins, flag, steps, scale


def test_register_create_list_info(temp_register):
    name = temp_register("loss", Toy, name="toy_alpha")
    assert name in lossreg.list_components("loss")
    assert lossreg.list_components("loss", "toy_*") == ["toy_alpha"]
    assert lossreg.list_components("loss", "toy_*", with_description=True) == [("toy_alpha", "A toy loss for tests.")]
    loss = lossreg.create_loss("toy_alpha", gamma=3, mode="b")
    assert isinstance(loss, Toy) and loss.gamma == 3 and loss.mode == "b"
    info = lossreg.component_info("loss", "toy_alpha")
    assert info["name"] == "toy_alpha" and info["kind"] == "loss" and info["task"] == "cls"
    assert info["params"]["gamma"] == 2.0 and info["params"]["steps"] == (1, 2)
    assert info["paper"] == "Nobody, Toy Losses, 2026"
    assert info["doc"].startswith("A toy loss for tests.")


def test_listing_is_sorted_and_wildcards(temp_register):
    for n in ("zz_b", "zz_a", "zz_iou_c"):
        temp_register("loss", Toy, name=n)
    assert lossreg.list_components("loss", "zz_*") == ["zz_a", "zz_b", "zz_iou_c"]
    assert lossreg.list_components("loss", "*iou*") == [n for n in lossreg.list_components("loss") if "iou" in n]
    assert "zz_iou_c" in lossreg.list_components("loss", "*iou*")
    assert lossreg.list_components("loss", "zz_[ab]") == ["zz_a", "zz_b"]
    assert lossreg.list_components("loss", "nothing-matches-*") == []


def test_task_filter(temp_register):
    class Reg(Toy):
        """A toy regression loss."""

        task = "reg"

    temp_register("loss", Reg, name="toy_reg")
    temp_register("loss", Toy, name="toy_cls")
    assert "toy_reg" in lossreg.list_components("loss", "toy_*", task="reg")
    assert "toy_reg" not in lossreg.list_components("loss", "toy_*", task="cls")


def test_unknown_name_suggests_close_matches(temp_register):
    temp_register("loss", Toy, name="hcra_toy")
    with pytest.raises(UnknownComponentError) as exc:
        lossreg.create_loss("hcra_tox")
    assert isinstance(exc.value, KeyError)
    msg = str(exc.value)
    assert "unknown loss 'hcra_tox'" in msg and "did you mean 'hcra_toy'" in msg
    assert exc.value.suggestions[0] == "hcra_toy" and len(exc.value.suggestions) <= 3
    with pytest.raises(UnknownComponentError, match="unknown assigner 'qwertyuiop'"):
        lossreg.create_assigner("qwertyuiop")


def test_unknown_kind():
    with pytest.raises(UnknownComponentError, match="did you mean 'loss'"):
        lossreg.list_components("losss")


def test_duplicate_refused_unless_override(temp_register):
    temp_register("balancer", Toy, name="toy_dup")

    class Other(Toy):
        """Another."""

    with pytest.raises(ValueError, match="already registered.*override=True"):
        lossreg.register_balancer("toy_dup")(Other)
    lossreg.register_balancer("toy_dup", override=True)(Other)
    assert isinstance(lossreg.create_balancer("toy_dup"), Other)


def test_register_forms(temp_register):
    reg = Registry("thing")

    @reg.register()
    class Bare:
        """Bare."""

    assert reg.names() == ["Bare"]
    lossreg.register_neck("toy_neck_direct")(Toy)
    try:
        assert "toy_neck_direct" in lossreg.list_components("neck")
    finally:
        lossreg.get_registry("neck").unregister("toy_neck_direct")


def test_loss_must_declare_task():
    class NoTask(nn.Module):
        """No task."""

    with pytest.raises(ValueError, match="must declare task"):
        lossreg.register_loss("no_task_loss")(NoTask)


def test_bad_keyword_names_component_and_parameter(temp_register):
    temp_register("loss", Toy, name="toy_kw")
    with pytest.raises(TypeError, match=r"loss 'toy_kw' has no parameter 'gama'; did you mean 'gamma'\?"):
        lossreg.create_loss("toy_kw", gama=1.0)
    with pytest.raises(TypeError, match=r"loss 'toy_kw': parameter 'gamma' expects float, got str"):
        lossreg.create_loss("toy_kw", gamma="2")
    with pytest.raises(TypeError, match="parameter 'mode'"):
        lossreg.create_loss("toy_kw", mode="c")
    with pytest.raises(TypeError, match="parameter 'bins' expects int"):
        lossreg.create_loss("toy_kw", bins=2.5)
    with pytest.raises(TypeError, match="parameter 'flag' expects bool"):
        lossreg.create_loss("toy_kw", flag=1)
    with pytest.raises(TypeError, match="parameter 'steps'"):
        lossreg.create_loss("toy_kw", steps=[1, "x"])
    # ints are accepted for floats, None for Optional, lists for tuples
    assert lossreg.create_loss("toy_kw", gamma=1, scale=None, steps=[3]).steps == [3]


def test_required_params_reported(temp_register):
    class Head(nn.Module):
        """A head."""

        def __init__(self, num_classes: int, in_channels: int = 256) -> None:
            super().__init__()

    temp_register("head", Head, name="toy_head")
    assert lossreg.component_info("head", "toy_head")["params"] == {"num_classes": REQUIRED, "in_channels": 256}
    with pytest.raises(TypeError):
        lossreg.create_head("toy_head")  # missing num_classes
    assert isinstance(lossreg.create_head("toy_head", num_classes=3), Head)


def test_build_from_config(temp_register):
    temp_register("loss", Toy, name="toy_cfg")
    reg = lossreg.get_registry("loss")
    assert reg.build("toy_cfg").gamma == 2.0
    assert reg.build({"name": "toy_cfg", "gamma": 5.0}).gamma == 5.0
    assert reg.build({"name": "toy_cfg"}, bins=3).bins == 3  # defaults fill unset params
    assert reg.build({"name": "toy_cfg", "bins": 4}, bins=3).bins == 4  # the spec wins
    inst = Toy()
    assert reg.build(inst) is inst
    with pytest.raises(ValueError, match="needs a 'name' key"):
        reg.build({"gamma": 1.0})


@pytest.mark.parametrize(
    "value,tp,ok",
    [
        (1, float, True),
        (True, float, False),
        (True, int, False),
        ("a", Literal["a", "b"], True),
        ("c", Literal["a", "b"], False),
        (None, float | None, True),
        ([1, 2], tuple[int, ...], True),
        ([1, 2], tuple[int, int], True),
        ([1], tuple[int, int], False),
        ("ab", tuple[str, ...], False),
        ({"cls": 1.0}, dict[str, float], True),
        ({"cls": "x"}, dict[str, float], False),
    ],
)
def test_check_type(value, tp, ok):
    assert check_type(value, tp) is ok


def test_close_matches_substring():
    # difflib alone misses "eiou" -> "focal_eiou"; the substring pass finds it
    assert "focal_eiou" in close_matches("eiou", ["focal_eiou", "giou", "bce"])
    assert close_matches("zzzz", ["focal", "giou"]) == []


PLUGIN_MODULE = '''
from torch import nn
import lossreg

@lossreg.register_loss("plugin_toy_loss")
class PluginLoss(nn.Module):
    """A loss shipped by a third-party package.

    Paper: Plugin et al., 2026.
    """
    task = "reg"
    paper = "Plugin et al., 2026"
'''


def _write_plugin(root, group="lossreg.plugins", value="lossreg_toy_plugin"):
    (root / "lossreg_toy_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    dist = root / "lossreg_toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lossreg-toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\ntoy = {value}\n")


def _run(code: str, pythonpath) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_plugin_entry_point_loaded_lazily(tmp_path):
    _write_plugin(tmp_path)
    code = textwrap.dedent(
        """
        import sys, lossreg
        assert "lossreg_toy_plugin" not in sys.modules, "plugins must load lazily"
        names = lossreg.list_components("loss")
        assert "lossreg_toy_plugin" in sys.modules
        assert "plugin_toy_loss" in names, names
        info = lossreg.component_info("loss", "plugin_toy_loss")
        assert info["task"] == "reg" and info["paper"] == "Plugin et al., 2026"
        print("ok")
        """
    )
    res = _run(code, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_broken_plugin_is_reported_not_fatal(tmp_path):
    _write_plugin(tmp_path, value="lossreg_missing_module_xyz")
    code = "import lossreg; lossreg.list_components('loss'); print('alive')"
    res = _run(code, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "alive" in res.stdout
    assert "lossreg_missing_module_xyz" in res.stderr and "failed to load" in res.stderr


def test_built_components_keep_their_resolved_spec():
    """What config.json records (issue 16): every keyword the constructor got, defaults and build-time values included."""
    loss = lossreg.create_loss("focal", gamma=1.0)
    assert loss.build_spec == {"name": "focal", "alpha": 0.25, "gamma": 1.0, "reduction": "mean", "loss_weight": 1.0}
    neck = lossreg.build_component("neck", {"name": "fpn", "out_channels": 16}, in_channels=[8, 16, 32])
    assert neck.build_spec["in_channels"] == [8, 16, 32] and neck.build_spec["out_channels"] == 16
    again = lossreg.build_component("neck", neck.build_spec)  # the spec builds the same component
    assert again.build_spec == neck.build_spec
    assert lossreg.build_component("loss", loss) is loss  # an instance passes through as it is
