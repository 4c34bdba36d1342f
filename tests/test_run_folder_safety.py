"""A run folder is one run: fresh starts into it are refused, resumes must keep the run's settings, a
damaged newest checkpoint is passed over, checkpoints carry checksums, written files honour the umask."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from train_support import tiny_config

from spnir.archs import create_model, load_checkpoint, save_model_checkpoint
from spnir.errors import SpnirError
from spnir.train import run_training
from spnir.train.record import read_history, resume_command
from spnir.train.training_state import CheckpointDir, load_state

REPO = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_fresh_start_into_a_run_is_refused_before_writing(data, tmp_path):
    run_training(tiny_config(total=2), tmp_path / "run")
    before = _snapshot(tmp_path / "run")
    with pytest.raises(SpnirError, match=r"already holds a run.*resume='auto'.*fresh out_dir.*overwrite=True"):
        run_training(tiny_config(total=4), tmp_path / "run")
    assert _snapshot(tmp_path / "run") == before


def test_resume_auto_before_the_first_checkpoint_starts_the_run(data, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("config.yml", "train.log", "history.yml"):  # a run killed before its first checkpoint
        (run_dir / name).write_text("")
    result = run_training(tiny_config(total=2), run_dir, resume="auto")
    assert result.completed and result.iteration == 2


def test_overwrite_replaces_the_run_and_keeps_other_files(data, tmp_path):
    run_training(tiny_config(total=4), tmp_path / "run")
    (tmp_path / "run" / "notes.txt").write_text("mine")
    result = run_training(tiny_config(total=2), tmp_path / "run", overwrite=True)
    assert result.completed and result.iteration == 2
    assert [i for i, _ in CheckpointDir(tmp_path / "run" / "checkpoints").list()] == [2]  # old ones gone
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    with pytest.raises(SpnirError, match="give one of them"):
        run_training(tiny_config(total=2), tmp_path / "run", overwrite=True, resume="auto")


def test_resume_with_changed_training_settings_is_refused_naming_keys(data, tmp_path):
    run_training(tiny_config(total=2), tmp_path / "run")
    (tmp_path / "run" / "model_final.pt").unlink()  # an interrupted run (a finished one is not continued)
    (tmp_path / "run" / "model_final_ema.pt").unlink()
    before = _snapshot(tmp_path / "run")
    changed = tiny_config(total=4)
    changed["optim"]["lr"] = 0.5
    with pytest.raises(SpnirError, match=r"optim\.lr"):
        run_training(changed, tmp_path / "run", resume="auto")
    assert _snapshot(tmp_path / "run") == before
    with pytest.raises(SpnirError, match=r"length.*train\.total_iter: 2 -> 4.*add overrides=\['train\.total_iter=4'\]"):
        run_training(tiny_config(total=4), tmp_path / "run", resume="auto")  # a new length needs the user's word
    assert _snapshot(tmp_path / "run") == before
    longer = tiny_config(total=2, checkpoint={"every": 1})  # checkpointing may change; the length when told
    result = run_training(longer, tmp_path / "run", resume="auto", overrides=["train.total_iter=4"])
    assert result.completed and result.iteration == 4
    history = read_history(tmp_path / "run")
    assert [h["iteration"] for h in history] == [0, 2]
    assert "train.total_iter" in history[1]["changed"] and history[1]["resumed_from"].endswith("iter_00000002.pt")


def test_damaged_newest_checkpoint_falls_back_to_the_newest_intact(data, tmp_path, capsys):
    config = tiny_config(total=4, checkpoint={"every": 1, "keep": 4})
    run_training(config, tmp_path / "run")
    newest = CheckpointDir(tmp_path / "run" / "checkpoints").newest()
    raw = bytearray(newest.read_bytes())
    start = len(raw) // 3
    raw[start:start + 200] = bytes(b ^ 0xFF for b in raw[start:start + 200])
    newest.write_bytes(bytes(raw))
    for name in ("model_final.pt", "model_final_ema.pt"):
        (tmp_path / "run" / name).unlink()  # as if the run had been stopped after its last checkpoint
    result = run_training(config, tmp_path / "run", resume="auto", overrides=["train.total_iter=5"])
    assert result.completed
    log = (tmp_path / "run" / "train.log").read_text()
    assert "iter_00000004.pt" in log and ("damaged" in log or "cannot read" in log)
    assert "resuming from" in log and "iter_00000003.pt" in log
    assert read_history(tmp_path / "run")[-1]["iteration"] == 3


def test_flipped_bytes_in_tensors_are_refused_as_damaged(tmp_path):
    model = create_model("edsr-baseline", scale=2, num_feat=8, num_block=1)
    for name in ("m.pt", "m.safetensors"):
        path = save_model_checkpoint(model, tmp_path / name)
        raw = bytearray(path.read_bytes())
        weight = model.state_dict()["conv_first.weight"].numpy().tobytes()
        at = bytes(raw).index(weight[:64])  # flip bytes inside the stored tensor data
        raw[at:at + 16] = bytes(b ^ 0x55 for b in raw[at:at + 16])
        path.write_bytes(bytes(raw))
        with pytest.raises(SpnirError, match=rf"{name}: damaged: checksum mismatch"):
            load_checkpoint(create_model("edsr-baseline", scale=2, num_feat=8, num_block=1), path)


def test_truncated_checkpoints_say_so(tmp_path):
    model = create_model("edsr-baseline", scale=2, num_feat=8, num_block=1)
    path = save_model_checkpoint(model, tmp_path / "m.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SpnirError, match="m.pt: truncated"):
        load_checkpoint(model, path)
    folder = CheckpointDir(tmp_path / "run")
    state = folder.save({"format": "spnir-train-state", "iteration": 1, "w": torch.ones(1000)}, 1)
    state.write_bytes(state.read_bytes()[:-100])
    with pytest.raises(SpnirError, match="truncated"):
        load_state(state)


def test_official_files_without_checksum_load_as_before(tmp_path):
    model = create_model("edsr-baseline", scale=2, num_feat=8, num_block=1)
    torch.save({"params": model.state_dict()}, tmp_path / "basicsr.pth")
    load_checkpoint(create_model("edsr-baseline", scale=2, num_feat=8, num_block=1), tmp_path / "basicsr.pth")


class Hostile:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_hostile_pickles_are_refused_with_spnirs_message_everywhere(data, tmp_path):
    path = tmp_path / "hostile.pt"
    torch.save({"params": Hostile()}, path)
    # --resume
    with pytest.raises(SpnirError, match="refused: the file pickles") as resume_error:
        run_training(tiny_config(total=2), tmp_path / "run", resume=str(path))
    # model.pretrained
    config = tiny_config(total=2)
    config["model"]["pretrained"] = str(path)
    with pytest.raises(SpnirError, match="refused: the file pickles") as pretrained_error:
        run_training(config, tmp_path / "run2")
    for error in (resume_error, pretrained_error):
        assert "weights_only=False" not in str(error.value)
    # --checkpoint of the CLI
    proc = subprocess.run([sys.executable, "-m", "spnir", "eval", "--model", "edsr-baseline", "--checkpoint",
                           str(path), "--task", "sr", "--scale", "2", "--data", str(data / "val")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "refused: the file pickles" in proc.stderr
    assert "weights_only=False" not in proc.stderr and "Traceback" not in proc.stderr


def test_written_files_honour_the_umask(data, tmp_path):
    old = os.umask(0o022)
    try:
        run_training(tiny_config(total=2), tmp_path / "run")
    finally:
        os.umask(old)
    for path in [*(tmp_path / "run").glob("*.pt"), *(tmp_path / "run" / "checkpoints").glob("*.pt"),
                 tmp_path / "run" / "config.yml"]:
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_printed_resume_command_reproduces_the_run(data, tmp_path):
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(yaml.safe_dump(tiny_config(total=2)))
    command = resume_command(str(cfg), ["optim.lr=0.002", "spn.weight=0.02"], tmp_path / "my run")
    assert command == (f"spnir train -c {cfg} --set optim.lr=0.002 --set spn.weight=0.02 "
                       f"--out '{tmp_path / 'my run'}' --resume auto")
    run_training(cfg, tmp_path / "my run", overrides=["optim.lr=0.002", "spn.weight=0.02"])
    with pytest.raises(SpnirError, match=r"spn\.weight"):  # the same command without the --set is refused
        run_training(cfg, tmp_path / "my run", resume="auto")
    assert read_history(tmp_path / "my run")[0]["set"] == ["optim.lr=0.002", "spn.weight=0.02"]
