"""A user's run is never replaced silently; failed writes are one line naming the file; files honour the umask."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from spnir.errors import SpnirError
from spnir.train import run_training
from spnir.train.checkpoint import CheckpointDir
from train_support import make_data, tiny_config

@pytest.fixture
def data(tmp_path, monkeypatch):
    root = make_data(tmp_path / "data")
    monkeypatch.setenv("SPNIR_TEST_DATA", str(root))
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_fresh_run_into_a_run_folder_is_refused_before_writing(data, tmp_path):
    run_training(tiny_config(total=2), tmp_path / "run")
    before = _snapshot(tmp_path / "run")
    with pytest.raises(SpnirError, match=r"already holds a run .*--resume auto.*fresh folder.*--overwrite"):
        run_training(tiny_config(total=4), tmp_path / "run")
    assert _snapshot(tmp_path / "run") == before


def test_overwrite_replaces_the_run_and_drops_its_checkpoints(data, tmp_path):
    run_training(tiny_config(total=6), tmp_path / "run")
    (tmp_path / "run" / "notes.txt").write_text("mine")
    result = run_training(tiny_config(total=2), tmp_path / "run", overwrite=True)
    assert result.completed
    assert [i for i, _ in CheckpointDir(tmp_path / "run" / "checkpoints").list()] == [2]
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"  # not a run file: left alone


def test_out_naming_a_file_is_refused(data, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpnirError, match=r"is a file, expected a folder"):
        run_training(tiny_config(total=2), tmp_path / "file")


def test_the_printed_resume_command_keeps_every_set(data, tmp_path):
    from spnir.commands.train import resume_command

    import argparse
    args = argparse.Namespace(config="cfg.yml", overrides=["optim.lr=2e-4", "name=a b"])
    assert resume_command(args, Path("runs/x")) == (
        "spnir train -c cfg.yml --set optim.lr=2e-4 --set 'name=a b' --out runs/x --resume auto")
