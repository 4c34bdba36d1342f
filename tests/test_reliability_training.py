"""Training, config and study cases of docs/reliability.md: a resume keeps the run's result unless told, a
finished run is never continued in place, one training per folder, stale temporaries of killed writers go,
pruning counts only loadable checkpoints, hostile YAML and names are one line, a real full disk is named."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from train_support import tiny_config

from spnir.archs import create_model, save_model_checkpoint
from spnir.atomic import remove_stale_temporaries, save_torch_atomic
from spnir.cli import main
from spnir.errors import SpnirError
from spnir.train import run_training
from spnir.train.lock import LOCK, hold_run_folder
from spnir.train.optim import keep_kernels
from spnir.train.record import check_resume_settings, read_history
from spnir.train.training_state import CheckpointDir, load_state

REPO = Path(__file__).resolve().parents[1]
HOST = "".join(c for c in socket.gethostname() if c.isalnum())[:32] or "host"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _stop_at(iteration: int):
    def hook(it: int) -> None:
        if it == iteration:
            os.kill(os.getpid(), signal.SIGTERM)  # as a cluster's time limit: checkpoint, then stop
    return hook


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_resume_without_its_set_is_refused_and_a_finished_run_is_not_continued(data, tmp_path, capsys):
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(yaml.safe_dump(tiny_config(total=6, checkpoint={"every": 2, "keep": 3})))
    out = tmp_path / "run"
    stopped = run_training(cfg, out, overrides=["train.total_iter=4"], on_iteration=_stop_at(1))
    assert not stopped.completed and stopped.iteration == 2
    before = _snapshot(out)
    capsys.readouterr()
    # the same command without its --set: the file's 6 iterations would recompute the schedule
    assert main(["train", "-c", str(cfg), "--out", str(out), "--resume", "auto", "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "train.total_iter: 4 -> 6" in line and "--set train.total_iter=4" in line, line
    assert "add --set train.total_iter=6" in line
    assert _snapshot(out) == before
    # the run's own command continues it
    assert main(["train", "-c", str(cfg), "--set", "train.total_iter=4", "--out", str(out), "--resume", "auto",
                 "--quiet"]) == 0
    capsys.readouterr()
    finished = _snapshot(out)
    last = out / "checkpoints" / "iter_00000004.pt"
    # a finished run: continuing it in place (with or without a new length) is refused, nothing changes
    for words in ([], ["--set", "train.total_iter=6"]):
        assert main(["train", "-c", str(cfg), *words, "--out", str(out), "--resume", "auto", "--quiet"]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "holds a finished run" in line and f"--resume {last} --out NEW_FOLDER" in line, line
        assert _snapshot(out) == finished
    # resumed as it is, a finished run has nothing to train and keeps its files
    assert main(["train", "-c", str(cfg), "--set", "train.total_iter=4", "--out", str(out), "--resume", "auto",
                 "--quiet"]) == 0
    assert (out / "model_final.pt").read_bytes() == finished["model_final.pt"]
    # training on is a new run from the last checkpoint, with the new length said
    longer = tmp_path / "longer"
    assert main(["train", "-c", str(cfg), "--set", "train.total_iter=6", "--resume", str(last), "--out",
                 str(longer), "--quiet"]) == 0
    assert load_state(longer / "checkpoints" / "iter_00000006.pt")["iteration"] == 6
    assert read_history(longer)[0]["resumed_from"] == str(last)
    assert read_history(longer)[0]["changed"] == ["train.total_iter"]
    assert _snapshot(out)["model_final.pt"] == finished["model_final.pt"]


def test_an_unfinished_run_takes_a_new_length_when_told(data, tmp_path):
    out = tmp_path / "run"
    run_training(tiny_config(total=4), out, on_iteration=_stop_at(1))
    with pytest.raises(SpnirError, match=r"train\.total_iter: 4 -> 6"):
        run_training(tiny_config(total=6), out, resume="auto")
    result = run_training(tiny_config(total=4), out, resume="auto", overrides=["train.total_iter=6"])
    assert result.completed and result.iteration == 6
    assert read_history(out)[-1]["changed"] == ["train.total_iter"]
    with pytest.raises(SpnirError, match="past the 1 iterations"):  # a length below the run's position
        run_training(tiny_config(total=4), tmp_path / "run2", resume=str(out / "checkpoints" / "iter_00000006.pt"),
                     overrides=["train.total_iter=1"])


def test_result_neutral_switches_may_change_on_resume_and_are_recorded(data, tmp_path):
    out = tmp_path / "run"
    run_training(tiny_config(total=4, optim={"fused": False}), out, on_iteration=_stop_at(1))
    switched = tiny_config(total=4, optim={"fused": True}, train={"total_iter": 4, "device": "cpu",
                                                                  "channels_last": True, "cudnn_benchmark": True})
    result = run_training(switched, out, resume="auto")
    assert result.completed and result.iteration == 4
    assert read_history(out)[-1]["changed"] == ["optim.fused", "train.channels_last", "train.cudnn_benchmark"]
    recorded = tiny_config(total=4)
    compiled = tiny_config(total=4, train={"total_iter": 4, "compile": True})
    assert check_resume_settings(recorded, compiled, "x") == ["train.compile"]


def test_the_optimiser_keeps_this_runs_kernels_after_loading_a_checkpoint():
    params = [torch.nn.Parameter(torch.ones(4))]
    plain = torch.optim.Adam(params, lr=0.1, fused=False)
    params[0].grad = torch.ones(4)
    plain.step()
    fused = torch.optim.Adam(params, lr=0.1, fused=True)
    chosen = [{"fused": g["fused"], "foreach": g["foreach"]} for g in fused.param_groups]
    fused.load_state_dict(plain.state_dict())
    assert fused.param_groups[0]["fused"] is False  # torch takes the checkpoint's choice
    keep_kernels(fused, chosen)
    assert fused.param_groups[0]["fused"] is True
    fused.step()
    assert float(fused.state[params[0]]["step"]) == 2


def test_one_training_per_run_folder_and_a_killed_holder_does_not_block(data, tmp_path, capsys):
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(yaml.safe_dump(tiny_config(total=2)))
    out = tmp_path / "run"
    with hold_run_folder(out):  # another training holds the folder (flock: a second holder is refused)
        assert main(["train", "-c", str(cfg), "--out", str(out), "--quiet"]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"{out} is in use by another training (pid {os.getpid()} on {socket.gethostname()}" in line, line
        assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing written
    assert not (out / LOCK).exists()
    # a holder killed with SIGKILL leaves its file; the kernel released its lock, so the folder is free
    code = (f"import os, pathlib; from spnir.train.lock import hold_run_folder\n"
            f"with hold_run_folder(pathlib.Path({str(out)!r})): os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "pid" in (out / LOCK).read_text()
    assert main(["train", "-c", str(cfg), "--out", str(out), "--resume", "auto", "--quiet"]) == 0
    assert not (out / LOCK).exists()


def test_stale_temporaries_of_killed_writers_are_removed_on_resume(data, tmp_path):
    out = tmp_path / "run"
    run_training(tiny_config(total=4), out, on_iteration=_stop_at(1))
    dead, alive = _dead_pid(), os.getppid()
    stale = [out / "checkpoints" / f".iter_00000004.pt.spnir-{HOST}-{dead}-abcd1234.tmp",
             out / f".model_final.pt.spnir-otherhost-{dead}-abcd1234.tmp"]  # a job killed on another node
    kept = [out / ".notes.tmp", out / "checkpoints" / ".iter_9.pt.tmp",  # not spnir's naming: the user's
            out / f".scalars.x.spnir-{HOST}-{alive}-abcd1234.tmp"]    # a live writer of this host
    for path in stale + kept:
        path.write_bytes(b"partial")
    result = run_training(tiny_config(total=4), out, resume="auto")
    assert result.completed
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    # without holding the folder, only this host's dead writers' temporaries go
    other_host = tmp_path / f".a.json.spnir-otherhost-{dead}-abcd1234.tmp"
    mine = tmp_path / f".a.json.spnir-{HOST}-{dead}-abcd1234.tmp"
    other_host.write_bytes(b"x")
    mine.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [mine] and other_host.exists()


class Hostile:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pruning_counts_only_checkpoints_that_load(tmp_path):
    folder = CheckpointDir(tmp_path, keep=2)
    state = {"format": "spnir-train-state", "w": torch.ones(3)}
    for i in (2, 4):
        folder.save({**state, "iteration": i}, i)
    torch.save({"params": Hostile()}, tmp_path / "iter_00000009.pt")   # refused when loaded
    torch.save({"w": torch.zeros(3)}, tmp_path / "iter_00000007.pt")   # foreign: not a training state
    folder.save({**state, "iteration": 6}, 6)
    assert [i for i, _ in folder.list()] == [4, 6, 7, 9]  # 4 and 6 kept; neither stranger counted nor deleted
    folder.save({**state, "iteration": 8}, 8)
    assert [i for i, _ in folder.list()] == [6, 7, 8, 9]
    assert folder.newest_valid()[0] == 8


def test_study_measures_what_validation_measures(tmp_path):
    from spnir.study import final_model

    plain = create_model("edsr-baseline", scale=2, num_feat=4, num_block=1)
    ema = create_model("edsr-baseline", scale=2, num_feat=4, num_block=1)
    torch.nn.init.zeros_(ema.conv_first.weight)
    save_model_checkpoint(plain, tmp_path / "model_final.pt")
    save_model_checkpoint(ema, tmp_path / "model_final_ema.pt")
    weight = "conv_first.weight"
    assert torch.equal(final_model(tmp_path, use_ema=False).state_dict()[weight], plain.state_dict()[weight])
    assert torch.equal(final_model(tmp_path, use_ema=True).state_dict()[weight], ema.state_dict()[weight])


def test_hostile_yaml_and_names_are_one_line(data, tmp_path, capsys):
    deep = tmp_path / "deep.yml"
    deep.write_text("name: " + "[" * 10_000 + "]" * 10_000)
    assert main(["train", "-c", str(deep), "--print-config"]) == 2
    assert "nested more than 32 levels deep" in _one_error_line(capsys.readouterr().err)
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(yaml.safe_dump(tiny_config(total=2)))
    assert main(["train", "-c", str(cfg), "--set", "name=../x"]) == 2
    assert "name = '../x': expected a string (a folder name" in _one_error_line(capsys.readouterr().err)
    assert not (REPO / "x").exists() and not (Path.cwd() / "x").exists()
    huge = tiny_config(total=2)
    huge["name"] = "a" * 50_000_000
    with pytest.raises(SpnirError) as error:
        run_training(huge, tmp_path / "run")
    assert len(str(error.value)) < 400 and "(50000000 characters)" in str(error.value)


def test_a_missing_data_path_names_the_rule(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(total=2)
    config["data"]["train"]["gt"] = "images/train"
    with pytest.raises(SpnirError, match=r"data\.train\.gt = 'images/train': images/train does not exist \(from the "
                                         r"working directory .*only base: is relative to the config file\)"):
        run_training(config, tmp_path / "run")


@pytest.fixture
def full_disk(tmp_path):
    """A real 2 MiB tmpfs (the tests run as root); skipped where mounting is not permitted."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last(full_disk, data, capsys):
    config = tiny_config(spn=False, total=4, model={"name": "edsr-baseline", "scale": 2,
                                                     "args": {"num_feat": 16, "num_block": 2}})
    cfg = full_disk / "cfg.yml"
    cfg.write_text(yaml.safe_dump(config))
    out = full_disk / "run"
    filler = full_disk / "filler"

    def fill(it: int) -> None:
        if it == 2:  # after the checkpoint at 2: leave too little room for the next one
            free = os.statvfs(full_disk).f_bavail * os.statvfs(full_disk).f_frsize
            filler.write_bytes(b"\0" * max(0, free - 40_000))

    with pytest.raises(SpnirError, match=rf"^cannot write {out}/\S+: No space left on device$") as error:
        run_training(cfg, out, on_iteration=fill)
    assert "inline_container" not in str(error.value) and "iter_00000004.pt" in str(error.value), error.value
    assert load_state(out / "checkpoints" / "iter_00000002.pt")["iteration"] == 2
    assert not [p for p in out.rglob("*.tmp")]
    filler.unlink()
    assert run_training(cfg, out, resume="auto").completed  # room again: the run continues from 2


def test_a_real_full_disk_under_save_torch_atomic_keeps_the_previous_file(full_disk):
    target = full_disk / "w.pt"
    save_torch_atomic({"w": torch.zeros(10)}, target)
    previous = target.read_bytes()
    with pytest.raises(SpnirError, match=rf"^cannot write {target}: No space left on device$") as error:
        save_torch_atomic({"w": torch.zeros(1_000_000)}, target)
    assert isinstance(error.value.__cause__, OSError)
    assert target.read_bytes() == previous and sorted(p.name for p in full_disk.iterdir()) == ["w.pt"]


def test_a_run_stopped_between_its_final_files_is_finished_by_resume_auto(data, tmp_path):
    from test_machine_fails import _disk_full_for

    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SpnirError, match="model_final_ema.pt: No space"):
        _disk_full_for(patch, "model_final_ema.pt")
        run_training(tiny_config(total=2), out)
    written = (out / "model_final.pt").read_bytes()
    result = run_training(tiny_config(total=2), out, resume="auto")
    assert result.completed and (out / "model_final_ema.pt").is_file()
    assert (out / "model_final.pt").read_bytes() == written


def test_a_start_refused_before_writing_leaves_no_folder(data, tmp_path):
    config = tiny_config(total=2)
    config["data"]["train"]["gt"] = str(tmp_path / "gone")
    with pytest.raises(SpnirError, match="does not exist"):
        run_training(config, tmp_path / "new" / "run")
    assert not (tmp_path / "new" / "run").exists()
