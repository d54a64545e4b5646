"""Category G: the command line and the Hub. One line per error, never a traceback without --debug.

Publishing to an unreachable or offline Hub, loading from an unreachable endpoint (fast:
no 30 s of retries), malformed ``owner/repo@rev`` names, a ``config.json`` whose
``model_args`` name a component this installation lacks, weights of the wrong dtype or
full of NaN without a recorded sha256; and the CLI's handling of any other error.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
from robust_helpers import one_line_error, raises, tiny_model

import lossreg
from lossreg.cli import main
from lossreg.hub import HubError, save_pretrained

_HUB_TESTS = Path(__file__).resolve().parents[1] / "hub"


def _hub_conftest():
    if str(_HUB_TESTS) not in sys.path:
        sys.path.insert(0, str(_HUB_TESTS))
    name = "_robust_hub_conftest"
    if name not in sys.modules:  # its dataclasses need the module registered while it runs
        spec = importlib.util.spec_from_file_location(name, _HUB_TESTS / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "model"
    save_pretrained(tiny_model(), folder)
    return folder


def _copy(saved, tmp_path, name="m"):
    folder = tmp_path / name
    shutil.copytree(saved, folder)
    return folder


def _closed_port_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there: connection refused


@pytest.fixture
def unreachable(monkeypatch, tmp_path):
    """This process's Hub client aimed at a closed port, with an empty cache."""
    endpoint = _closed_port_endpoint()
    _hub_conftest().point_client_at(monkeypatch, endpoint, tmp_path / "hf-home", "hf_test_token")
    yield endpoint
    from huggingface_hub.utils._http import close_session

    close_session()


# --------------------------------------------------------------------------- publishing


def test_push_to_an_unreachable_hub_is_one_line_and_fast(saved, unreachable, capsys):
    start = time.perf_counter()
    assert main(["push", str(saved), "me/model", "--endpoint", unreachable]) == 2
    assert time.perf_counter() - start < 15
    one_line_error(capsys, "lossreg push: error: hf-hub:me/model: cannot reach the Hub at", unreachable, "--endpoint")


def test_push_with_hf_endpoint_unreachable(saved, unreachable, capsys):
    assert main(["push", str(saved), "me/model"]) == 2
    one_line_error(capsys, "cannot reach the Hub at", "check the network, HF_ENDPOINT or --endpoint")


def test_push_offline_is_one_line(saved, unreachable, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["push", str(saved), "me/model"]) == 2
    one_line_error(capsys, "lossreg push: error: hf-hub:me/model: HF_HUB_OFFLINE=1 (offline mode)", "unset HF_HUB_OFFLINE")


def test_push_of_a_folder_without_a_model(tmp_path, capsys):
    assert main(["push", str(tmp_path), "me/model"]) == 2
    one_line_error(capsys, "holds no saved model (config.json)")


@pytest.mark.parametrize("repo", ["me/bad repo", "a/b/c", "me/re..po"])
def test_push_to_an_invalid_repo_id(saved, unreachable, capsys, repo):
    assert main(["push", str(saved), repo]) == 2
    one_line_error(capsys, "lossreg push: error:")


def test_push_refused_by_the_server(saved, monkeypatch, tmp_path, capsys):
    hub = _hub_conftest()
    server = hub.HubServer(tmp_path / "server")
    server.start()
    try:
        hub.point_client_at(monkeypatch, server.endpoint, tmp_path / "hf-home", "wrong-token")
        assert main(["push", str(saved), "me/model"]) == 2
        one_line_error(capsys, "refused the upload", "HF_TOKEN")
    finally:
        from huggingface_hub.utils._http import close_session

        close_session()
        server.stop()


# --------------------------------------------------------------------------- loading


def test_load_from_an_unreachable_hub_fails_in_seconds(unreachable):
    start = time.perf_counter()
    with raises(HubError, "hf-hub:me/model: cannot reach the Hub at", "not in the Hugging Face cache"):
        lossreg.create_model("hf-hub:me/model")
    assert time.perf_counter() - start < 15  # huggingface_hub alone retries for about 30 s


def test_cached_model_still_loads_when_the_hub_goes_away(monkeypatch, tmp_path):
    hub = _hub_conftest()
    server = hub.HubServer(tmp_path / "server")
    server.start()
    hub.point_client_at(monkeypatch, server.endpoint, tmp_path / "hf-home", server.token)
    model = tiny_model().eval()
    lossreg.push_to_hub(model, "me/model")
    lossreg.create_model("hf-hub:me/model")  # fills the cache
    from huggingface_hub.utils._http import close_session

    close_session()
    server.stop()
    start = time.perf_counter()
    again = lossreg.create_model("hf-hub:me/model").eval()
    assert time.perf_counter() - start < 15
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.detect(x)[1], again.detect(x)[1])
    close_session()


@pytest.mark.parametrize("name", ["hf-hub:owner/repo@rev@x", "hf-hub:owner/repo@a b", "hf-hub:owner/repo@../x"])
def test_bad_revision_is_refused_not_passed_on(name, capsys):
    with raises(ValueError, "bad Hub model name", "write 'hf-hub:owner/repo@revision'"):
        lossreg.create_model(name)
    assert main(["eval", name]) == 2
    one_line_error(capsys, "lossreg eval: error:", "is not a branch, tag or commit name")


@pytest.mark.parametrize("name", ["hf-hub:owner/repo@v1.0", "hf-hub:owner/repo@refs/pr/3", "hf-hub:o/r@0123abc"])
def test_good_revisions_parse(name):
    from lossreg._registry import parse_model_name

    assert parse_model_name(name).revision == name.split("@", 1)[1]


@pytest.mark.parametrize(
    "where,value,shown",
    [
        (("head", "cls_loss"), "lossreg_missing_loss", "model_args.head.cls_loss names loss 'lossreg_missing_loss'"),
        (("head", "assigner"), {"name": "gone_assigner", "topk": 3}, "model_args.head.assigner names assigner 'gone_assigner'"),
        (("neck",), {"name": "bifpn_plugin"}, "model_args.neck names neck 'bifpn_plugin'"),
        (("head",), {"name": "plugin_head"}, "model_args.head names head 'plugin_head'"),
    ],
)
def test_component_named_only_in_model_args_is_a_hub_error(saved, tmp_path, where, value, shown):
    folder = _copy(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    node = config["model_args"]
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    (folder / "config.json").write_text(json.dumps(config))
    with raises(HubError, "config.json", shown, "install the plugin that provides it or upgrade lossreg"):
        lossreg.create_model(f"local-dir:{folder}")


def _rewrite_weights(folder, change, drop_files=True):
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    save_file({k: change(k, v) for k, v in state.items()}, str(folder / "model.safetensors"))
    if drop_files:
        config = json.loads((folder / "config.json").read_text())
        config["lossreg"].pop("files", None)
        (folder / "config.json").write_text(json.dumps(config))


def test_int32_weights_without_a_files_entry(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _rewrite_weights(folder, lambda k, v: v.to(torch.int32) if v.is_floating_point() else v)
    with raises(HubError, "have the wrong dtype", "torch.int32 vs model torch.float32"):
        lossreg.create_model(f"local-dir:{folder}")


def test_all_nan_weights_without_a_files_entry(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _rewrite_weights(folder, lambda k, v: torch.full_like(v, float("nan")) if v.is_floating_point() else v)
    with raises(HubError, "hold NaN or inf", "use an earlier checkpoint"):
        lossreg.create_model(f"local-dir:{folder}")


def test_one_inf_weight_without_a_files_entry(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _rewrite_weights(folder, lambda k, v: v.index_fill(0, torch.tensor([0]), float("inf")) if k.endswith("cls_out.bias") else v)
    with raises(HubError, "hold NaN or inf in head.cls_out.bias"):
        lossreg.create_model(f"local-dir:{folder}")


def test_nan_weights_are_refused_when_fine_tuning_too(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _rewrite_weights(folder, lambda k, v: torch.full_like(v, float("nan")) if "neck" in k and v.is_floating_point() else v)
    with raises(HubError, "hold NaN or inf"):
        lossreg.create_model(f"local-dir:{folder}", label_names=["a", "b"])


def test_float16_weights_load_and_are_cast(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _rewrite_weights(folder, lambda k, v: v.half() if v.is_floating_point() else v)
    model = lossreg.create_model(f"local-dir:{folder}")
    assert next(model.parameters()).dtype == torch.float32


def test_untouched_folder_still_loads(saved):
    assert lossreg.create_model(f"local-dir:{saved}").num_classes == 3


# --------------------------------------------------------------------------- the CLI's own handling


def test_unexpected_error_is_one_line_with_the_debug_hint(monkeypatch, capsys):
    import lossreg.cli as cli

    def boom(args):
        raise RuntimeError("the GPU caught fire\nsecond line")

    monkeypatch.setattr(cli, "cmd_list", boom)
    assert main(["list"]) == 1
    line = one_line_error(capsys, "lossreg list: error: RuntimeError: the GPU caught fire | second line",
                          "run with --debug for the traceback")
    assert line.count("\n") == 0


def test_debug_shows_the_traceback(monkeypatch):
    import lossreg.cli as cli

    monkeypatch.setattr(cli, "cmd_list", lambda args: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "list"])


def test_interrupt_is_one_line(monkeypatch, capsys):
    import lossreg.cli as cli

    def stop(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_list", stop)
    assert main(["list"]) == 130
    assert capsys.readouterr().err.strip() == "lossreg list: interrupted"


def test_os_errors_are_one_line(monkeypatch, capsys):
    import lossreg.cli as cli

    def denied(args):
        raise PermissionError(13, "Permission denied", "/root/runs/x")

    monkeypatch.setattr(cli, "cmd_list", denied)
    assert main(["list"]) == 2
    one_line_error(capsys, "lossreg list: error: /root/runs/x: Permission denied")


def test_warnings_are_one_line(monkeypatch, capsys):
    import warnings

    import lossreg.cli as cli

    def warn(args):
        warnings.warn("dropped 3 degenerate boxes\nmore detail", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli, "cmd_list", warn)
    previous = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["list"]) == 0
    assert warnings.showwarning is previous  # restored after the command
    err = capsys.readouterr().err
    assert err.strip() == "lossreg list: warning: dropped 3 degenerate boxes | more detail (UserWarning)"


@pytest.mark.parametrize(
    "argv,shown",
    [
        (["eval", "/nonexistent/run"], "/nonexistent/run: no such run or model folder"),
        (["info", "loss", "focall"], "unknown loss 'focall'; did you mean 'focal'"),
        (["predict", "/nonexistent/run", "x.jpg", "--out", "o"], "lossreg predict: error:"),
        (["train", "no_such_recipe_anywhere"], "no recipe named 'no_such_recipe_anywhere'"),
        (["check", "quickstart", "--set", "train.epochs=" + "[" * 100 + "]" * 100], "nested deeper than 64 levels"),
        (["ablate", "quickstart", "--swap", "model.cls_loss="], "lists no values"),
        (["eval", "hf-hub:not a repo"], "bad Hugging Face Hub model name"),
    ],
)
def test_user_errors_are_one_line(capsys, argv, shown):
    assert main(argv) == 2
    one_line_error(capsys, shown)
