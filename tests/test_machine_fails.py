"""The machine fails: a full disk or a path under a file ends a command with one line naming the file and the
cause (terminal and train.log), exit code 2, the previous checkpoint intact and no temporary file left.

A full disk is real, not mocked: the temporary file of the chosen write is replaced by a link to
``/dev/full``, where the kernel answers every write with ENOSPC."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch
import yaml
from train_support import tiny_config

import spnir.atomic
from spnir.atomic import atomic_path, save_torch_atomic
from spnir.cli import main
from spnir.errors import SpnirError
from spnir.train import run_training
from spnir.train.run_log import RunLogger
from spnir.train.training_state import load_state

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to fill a disk honestly")


def _disk_full_for(monkeypatch, name: str) -> None:
    """Every temporary file for a target called ``name`` is written onto a full disk (``/dev/full``)."""
    real = tempfile.mkstemp

    def mkstemp(prefix: str = "", suffix: str = "", dir: str | None = None):
        fd, path = real(prefix=prefix, suffix=suffix, dir=dir)
        if prefix.startswith(f".{name}."):
            os.close(fd)
            os.unlink(path)
            os.symlink("/dev/full", path)
            fd = os.open(path, os.O_WRONLY)
        return fd, path

    monkeypatch.setattr(spnir.atomic.tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("target", ["iter_00000004.pt", "model_final.pt"])
def test_disk_full_is_one_line_and_keeps_the_last_checkpoint(tmp_path, data, monkeypatch, capsys, target):
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(yaml.safe_dump(tiny_config(spn=False, total=4)))
    out = tmp_path / "run"
    _disk_full_for(monkeypatch, target)
    assert main(["train", "-c", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    written = out / "checkpoints" / target if target.startswith("iter") else out / target
    expected = f"cannot write {written}: No space left on device"
    assert [line for line in err.splitlines() if "error" in line] == [f"spnir train: error: {expected}"]
    assert "Traceback" not in err and "inline_container" not in err
    assert (out / "train.log").read_text().strip().splitlines()[-1].endswith(f"error: {expected}")
    last = 2 if target.startswith("iter") else 4
    assert load_state(out / "checkpoints" / f"iter_{last:08d}.pt")["iteration"] == last
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == (
        ["iter_00000002.pt"] if target.startswith("iter") else ["iter_00000002.pt", "iter_00000004.pt"])
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / "model_final.pt").exists()


def test_out_under_a_file_names_the_file(tmp_path, data):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    with pytest.raises(SpnirError, match=rf"cannot write {blocker}/sub: {blocker} is a file, not a folder$"):
        run_training(tiny_config(spn=False, total=2), blocker / "sub")
    assert blocker.read_text() == "not a folder"


def test_a_full_disk_under_train_log_is_named(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "train.log").symlink_to("/dev/full")
    logger = RunLogger(folder, total_iter=2, tensorboard=False, progress=False)
    with pytest.raises(SpnirError, match=rf"cannot write {folder}/train.log: No space left on device"):
        logger.message("hello")
    logger.error("error: lost, but quietly")  # the disk refuses the error line too: no second exception
    logger.close()


def test_atomic_writes_keep_the_previous_file(tmp_path, monkeypatch):
    """What every writer goes through (checkpoints, restored images, eval --json, study metrics)."""
    target = tmp_path / "result.json"
    target.write_text("old")
    _disk_full_for(monkeypatch, "result.json")
    with pytest.raises(SpnirError, match=rf"cannot write {target}: No space left on device"):
        with atomic_path(target) as tmp:
            tmp.write_text("new" * 1000)
    with pytest.raises(SpnirError, match=rf"cannot write {target}: No space left on device"):
        save_torch_atomic({"w": torch.zeros(1000)}, target)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    with pytest.raises(SpnirError, match=rf"cannot write {target}/x.pt: {target} is a file, not a folder$"):
        save_torch_atomic({}, target / "x.pt")
