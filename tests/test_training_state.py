"""Atomic checkpoint writes, keep-newest-K, --resume resolution, RNG state round trip."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import spnir.train.training_state as ckpt
from spnir.errors import SpnirError
from spnir.train.training_state import CheckpointDir, load_state, resolve_resume, rng_state, set_rng_state


def _state(i: int) -> dict:
    return {"format": "spnir-train-state", "iteration": i, "model": {"w": torch.full((64,), float(i))}}


def test_interrupted_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    folder = CheckpointDir(tmp_path, keep=3)
    first = folder.save(_state(1), 1)

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # the process dies in the middle of writing (f: spnir's open file)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        folder.save(_state(2), 2)
    monkeypatch.undo()
    assert folder.newest() == first and [i for i, _ in folder.list()] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temporary left behind
    assert torch.equal(load_state(first)["model"]["w"], torch.full((64,), 1.0))


def test_a_torn_temporary_file_is_never_taken_for_a_checkpoint(tmp_path):
    folder = CheckpointDir(tmp_path)
    folder.save(_state(4), 4)
    (tmp_path / ".iter_00000006.pt.x1y2.tmp").write_bytes(b"garbage")  # a kill -9 during a write
    assert resolve_resume("auto", folder).name == "iter_00000004.pt"


def test_keeps_the_newest_k(tmp_path):
    folder = CheckpointDir(tmp_path, keep=2)
    for i in (2, 4, 6, 8, 10):
        folder.save(_state(i), i)
    assert [i for i, _ in folder.list()] == [8, 10]
    assert load_state(folder.newest())["iteration"] == 10


def test_resume_resolution(tmp_path):
    folder = CheckpointDir(tmp_path / "run" / "checkpoints")
    assert resolve_resume("auto", folder) is None  # a fresh run
    assert resolve_resume(None, folder) is None
    folder.save(_state(3), 3)
    assert resolve_resume("auto", folder) == folder.path_for(3)
    assert resolve_resume(str(tmp_path / "run"), folder) == folder.path_for(3)
    with pytest.raises(SpnirError, match=r"^resume = '.*missing\.pt': no such checkpoint file \('auto' takes"):
        resolve_resume(str(tmp_path / "missing.pt"), folder)


def test_foreign_files_are_refused(tmp_path):
    torch.save({"params": {"w": torch.zeros(1)}}, tmp_path / "weights.pth")
    with pytest.raises(SpnirError, match="not a spnir training checkpoint"):
        load_state(tmp_path / "weights.pth")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SpnirError, match="cannot read as a PyTorch checkpoint"):
        load_state(tmp_path / "junk.pt")


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
