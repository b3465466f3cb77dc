"""Checkpoints are atomic, refuse anything but tensors and plain containers, and fail with a one-line message."""

import os

import pytest
import torch

from emvi import rundir as ckpt
from emvi.errors import CheckpointError


def test_round_trip_keeps_tensors_and_plain_values(tmp_path):
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 4, "history": [{"loss": 1.5}], "config": "{}"}
    ckpt.save_checkpoint(state, tmp_path / "c.pt")
    loaded = ckpt.load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["epoch"] == 4 and loaded["history"] == [{"loss": 1.5}]


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint({"epoch": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temporary file left behind


def test_corrupt_checkpoint_gives_one_line_error(tmp_path):
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint({"epoch": 1}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="corrupt or not an emvi checkpoint") as info:
        ckpt.load_checkpoint(path)
    assert "\n" not in str(info.value)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.CHECKPOINT_FORMAT, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="corrupt or not an emvi checkpoint"):
        ckpt.load_checkpoint(path)


def test_foreign_and_missing_files_are_named(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an emvi checkpoint"):
        ckpt.load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "absent.pt")


def test_method_settings_live_under_one_key_and_old_runs_under_train_still_read(tmp_path):
    """config.json keeps every method's settings under ``method_config``; a run written when SVI's sat under
    ``train`` still gives its seed, evaluates its held-out split and resumes."""
    import json

    import numpy as np

    import emvi
    from emvi.cli import main

    np.save(tmp_path / "x.npy", np.random.default_rng(0).poisson(3.0, size=(40, 3)).astype(float))
    run = tmp_path / "run"
    fit = ["fit", "composed", str(tmp_path / "x.npy"), "--latent", "discrete", "--mapping", "index", "--likelihood",
           "poisson", "--num-components", "2", "--valid-fraction", "0.25", "--seed", "3", "--run-dir", str(run),
           "--no-plots", "--progress", "false"]
    assert main([*fit, "--epochs", "1"]) == 0
    directory = ckpt.RunDirectory(run)
    resolved = directory.read_config()
    assert "train" not in resolved and resolved[ckpt.METHOD_CONFIG]["seed"] == 3
    legacy = {("train" if key == ckpt.METHOD_CONFIG else key): value for key, value in resolved.items()}
    directory.write_config(legacy)
    state = directory.load_checkpoint()
    ckpt.save_checkpoint({**state, "config": json.dumps(legacy)}, directory.checkpoint_path)
    assert emvi.runs.run_seed(directory.read_config()) == 3 == emvi.runs.run_seed(resolved)
    assert ckpt.method_settings(legacy) == ckpt.method_settings(resolved) and ckpt.method_settings({}) == {}
    assert main(["evaluate", str(run), "--split", "valid"]) == 0
    assert main([*fit, "--epochs", "2", "--resume"]) == 0
    assert directory.read_config()[ckpt.METHOD_CONFIG]["epochs"] == 2
