"""Checkpoints: round trip, plain safetensors weights, and crash safety of the write."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from lossreg.engine import checkpoint as ckpt
from lossreg.engine.checkpoint import CheckpointError, checkpoint_paths, load_checkpoint, save_checkpoint


def _weights(value: float) -> dict[str, torch.Tensor]:
    return {"a.weight": torch.full((2, 3), value), "a.steps": torch.tensor(int(value), dtype=torch.int64),
            "b.stat": torch.full((2,), value, dtype=torch.float64)}


def _state(it: int) -> dict:
    return {"iteration": it, "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2) * it}}}, "recipe": {"name": "x"},
            "rng": (1, (2, 3), None)}


def test_round_trip_and_plain_safetensors(tmp_path):
    w, s = save_checkpoint(tmp_path / "ck", "last", _weights(1.0), _state(7))
    assert (w.name, s.name) == ("last.safetensors", "last.state.pt")
    weights, state = load_checkpoint(tmp_path / "ck" / "last")
    assert all(torch.equal(weights[k], v) for k, v in _weights(1.0).items())
    assert weights["b.stat"].dtype == torch.float64
    assert state["iteration"] == 7 and torch.equal(state["optimizer"]["state"][0]["momentum_buffer"], torch.ones(2) * 7)
    assert torch.equal(load_file(str(w))["a.weight"], torch.full((2, 3), 1.0))  # any safetensors reader
    assert torch.load(s, weights_only=True)["token"] == state["token"]
    assert not list((tmp_path / "ck").glob("*.pending")) and not list((tmp_path / "ck").glob(".*"))


def test_checkpoint_paths_accepts_stem_files_and_run_folder(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    expected = (tmp_path / "checkpoints" / "last.safetensors", tmp_path / "checkpoints" / "last.state.pt")
    for form in ("checkpoints/last", "checkpoints/last.safetensors", "checkpoints/last.state.pt", "", "checkpoints"):
        assert checkpoint_paths(tmp_path / form) == expected


def test_saving_does_not_keep_references_to_live_tensors(tmp_path):
    live = {"w": torch.zeros(3)}
    save_checkpoint(tmp_path, "last", live, _state(1))
    live["w"].add_(5)
    assert torch.equal(load_checkpoint(tmp_path / "last")[0]["w"], torch.zeros(3))


@pytest.mark.parametrize("where", ["save_file", "torch_save"])
def test_a_write_killed_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch, where):
    save_checkpoint(tmp_path, "last", _weights(1.0), _state(1))

    def partial_then_die(*args, **kwargs):
        with open(args[1], "wb") as fh:  # torch.save(obj, path) and save_file(tensors, path)
            fh.write(b"\x00garbage, half a file")  # the temp file exists and is torn
        raise KeyboardInterrupt("killed")

    if where == "save_file":
        monkeypatch.setattr(ckpt, "save_file", partial_then_die)
    else:
        monkeypatch.setattr(ckpt.torch, "save", partial_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, "last", _weights(2.0), _state(2))
    monkeypatch.undo()
    weights, state = load_checkpoint(tmp_path / "last")
    assert state["iteration"] == 1 and torch.equal(weights["a.weight"], torch.full((2, 3), 1.0))
    assert not list(tmp_path.glob(".*.tmp"))  # the torn temp file was removed
    save_checkpoint(tmp_path, "last", _weights(3.0), _state(3))  # and the next write succeeds
    assert load_checkpoint(tmp_path / "last")[1]["iteration"] == 3


def test_killed_between_the_commit_renames_loads_the_new_pair(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, "last", _weights(1.0), _state(1))
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("last.safetensors"):  # the state is committed, the weights not yet
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, "last", _weights(2.0), _state(2))
    monkeypatch.undo()
    weights, state = load_checkpoint(tmp_path / "last")
    assert state["iteration"] == 2 and torch.equal(weights["a.weight"], torch.full((2, 3), 2.0))
    save_checkpoint(tmp_path, "last", _weights(3.0), _state(3))
    weights, state = load_checkpoint(tmp_path / "last")
    assert state["iteration"] == 3 and not list(tmp_path.glob("*.pending"))


def test_mismatched_or_missing_checkpoints_are_reported(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "last")
    save_checkpoint(tmp_path / "a", "last", _weights(1.0), _state(1))
    save_checkpoint(tmp_path / "b", "last", _weights(2.0), _state(2))
    os.replace(tmp_path / "b" / "last.state.pt", tmp_path / "a" / "last.state.pt")
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_checkpoint(tmp_path / "a" / "last")
