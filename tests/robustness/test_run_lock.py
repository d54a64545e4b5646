"""Category B: two runs into one folder. The run folder is locked by the run that owns it.

A second run (another live process) into a locked folder stops with one line before it
touches a file there; a lock left by a dead process is taken over; a lock is released
when training ends or fails.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
from robust_helpers import one_line_error, raises, tiny_recipe

from lossreg.engine.runs import LOCK_NAME, RunFolder, RunFolderLocked, RunLock


@pytest.fixture
def live_pid():
    """The pid of a process that stays alive for the test (not this one)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(folder, **record):
    folder.mkdir(parents=True, exist_ok=True)
    base = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00", "argv": []}
    (folder / LOCK_NAME).write_text(json.dumps({**base, **record}))
    return folder / LOCK_NAME


def test_acquire_writes_pid_and_host_and_release_removes(tmp_path):
    lock = RunLock(tmp_path / "run").acquire()
    record = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname() and record["started"]
    lock.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_lock_of_a_live_process_is_refused(tmp_path, live_pid):
    _write_lock(tmp_path / "run", pid=live_pid)
    with raises(RunFolderLocked, "is in use by another training run", f"pid {live_pid}", "another --output folder"):
        RunLock(tmp_path / "run").acquire()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == live_pid  # untouched


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, dead_pid, caplog):
    _write_lock(tmp_path / "run", pid=dead_pid)
    with caplog.at_level(logging.WARNING, logger="lossreg.engine.runs"):
        lock = RunLock(tmp_path / "run").acquire()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"stale lock of pid {dead_pid}" in caplog.text
    lock.release()


@pytest.mark.parametrize("pid", [0, -5, "12", None])
def test_lock_with_a_nonsense_pid_is_stale(tmp_path, pid):
    _write_lock(tmp_path / "run", pid=pid)
    RunLock(tmp_path / "run").acquire().release()


def test_lock_from_another_host_is_reported_with_the_file_to_delete(tmp_path, dead_pid):
    path = _write_lock(tmp_path / "run", pid=dead_pid, host="some-other-machine")
    with raises(RunFolderLocked, "on some-other-machine", f"if that run is gone, delete {path}"):
        RunLock(tmp_path / "run").acquire()


def test_young_unreadable_lock_counts_as_held(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text("")
    with raises(RunFolderLocked, "a run that is starting up"):
        RunLock(tmp_path / "run").acquire()


def test_old_unreadable_lock_is_stale(tmp_path):
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / LOCK_NAME
    path.write_text("{not json")
    old = time.time() - 60
    os.utime(path, (old, old))
    RunLock(tmp_path / "run").acquire().release()
    assert not path.exists()


def test_same_process_is_reentrant_and_counts_holders(tmp_path):
    first = RunLock(tmp_path / "run").acquire()
    second = RunFolder(tmp_path / "run").lock().acquire()  # a second Trainer of this process
    second.release()
    assert (tmp_path / "run" / LOCK_NAME).exists()  # the first still holds it
    first.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_release_never_removes_someone_elses_lock(tmp_path, live_pid):
    lock = RunLock(tmp_path / "run").acquire()
    _write_lock(tmp_path / "run", pid=live_pid)  # replaced behind our back
    lock.release()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == live_pid


def test_context_manager(tmp_path):
    with RunLock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK_NAME).exists()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_lock_in_another_process_blocks_this_one(tmp_path):
    """A real second process holding the lock (as a concurrent lossreg train would)."""
    code = (
        "import sys, time; from lossreg.engine.runs import RunLock; "
        f"RunLock({str(tmp_path / 'run')!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with raises(RunFolderLocked, f"pid {proc.pid}"):
            RunLock(tmp_path / "run").acquire()
    finally:
        proc.kill()
        proc.wait()
    RunLock(tmp_path / "run").acquire().release()  # its process is gone: stale, taken over


# --------------------------------------------------------------------------- the trainer


def test_trainer_into_a_locked_folder_touches_nothing(tmp_path, synthetic_root, live_pid):
    from lossreg.engine.trainer import Trainer

    run = tmp_path / "run"
    _write_lock(run, pid=live_pid)
    (run / "metrics.jsonl").write_text('{"type": "train", "iter": 1}\n')
    with raises(RunFolderLocked, str(run), f"pid {live_pid}"):
        Trainer(tiny_recipe(synthetic_root), output_dir=run)
    assert (run / "metrics.jsonl").read_text() == '{"type": "train", "iter": 1}\n'
    assert not (run / "recipe.yaml").exists() and not (run / "checkpoints").exists()


def test_trainer_holds_the_lock_and_releases_it_after_training(tmp_path, synthetic_root):
    from lossreg.engine.trainer import Trainer

    run = tmp_path / "run"
    trainer = Trainer(tiny_recipe(synthetic_root), output_dir=run)
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    trainer.train(max_iterations=2)  # the whole (one-epoch) schedule: a checkpoint and model/
    assert not (run / LOCK_NAME).exists()
    resumed = Trainer(tiny_recipe(synthetic_root), output_dir=run, resume=True)  # the same process again
    resumed.close()
    assert not (run / LOCK_NAME).exists()


def test_trainer_releases_the_lock_when_setup_fails(tmp_path, synthetic_root):
    from lossreg.engine.trainer import Trainer

    run = tmp_path / "run"
    Trainer(tiny_recipe(synthetic_root), output_dir=run).train(max_iterations=2)
    with raises(ValueError, "already holds a training run", "--resume"):
        Trainer(tiny_recipe(synthetic_root), output_dir=run)
    assert not (run / LOCK_NAME).exists()


def test_cli_train_into_a_locked_folder_is_one_line(tmp_path, synthetic_root, live_pid, capsys):
    import yaml

    from lossreg.cli import main

    run = tmp_path / "run"
    _write_lock(run, pid=live_pid)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(synthetic_root)))
    assert main(["train", str(recipe), "--output", str(run)]) == 2
    one_line_error(capsys, "lossreg train: error:", "is in use by another training run", f"pid {live_pid}")
