"""Exact resume: a run stopped by SIGTERM, crashed, or killed with SIGKILL in another process, resumed with
--resume auto, ends with the same weights, EMA and SPN negatives as an uninterrupted run (bit-exact on CPU)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from train_support import tiny_config

from spnir.errors import SpnirError
from spnir.train import run_training
from spnir.train.trainer import TrainingDiverged
from spnir.train.training_state import CheckpointDir, load_state

REPO = Path(__file__).resolve().parents[1]


def _final_state(result) -> dict[str, dict[str, torch.Tensor]]:
    return {"model": result.model.state_dict(), "ema": result.ema_model.state_dict(), "spn": result.spn.state_dict()}


def _assert_identical(a: dict, b: dict) -> None:
    for part in a:
        assert a[part].keys() == b[part].keys(), part
        for key in a[part]:
            if torch.is_tensor(a[part][key]):
                assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"
            else:
                assert a[part][key] == b[part][key], f"{part}.{key} differs"


def test_sigterm_then_resume_auto_is_bit_exact(data, tmp_path):
    config = tiny_config(total=7)
    reference = run_training(config, tmp_path / "straight")
    assert reference.completed and reference.iteration == 7

    def send_sigterm(it: int) -> None:
        if it == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = run_training(config, tmp_path / "stopped", on_iteration=send_sigterm)
    assert stopped.status == "interrupted (SIGTERM)" and stopped.signal == signal.SIGTERM
    assert stopped.iteration == 4 and stopped.last_checkpoint.name == "iter_00000004.pt"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored

    resumed = run_training(config, tmp_path / "stopped", resume="auto")
    assert resumed.completed and resumed.iteration == 7
    _assert_identical(_final_state(reference), _final_state(resumed))
    # the negatives really moved: they differ from their state at creation
    assert resumed.spn.negatives.steps == 7
    # validation history survives the resume: best values and iterations equal the straight run's
    assert resumed.best == reference.best


def test_crash_between_checkpoints_resumes_from_the_last_one(data, tmp_path):
    config = tiny_config(total=6)
    reference = run_training(config, tmp_path / "straight")

    def crash(it: int) -> None:
        if it == 5:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(config, tmp_path / "crashed", on_iteration=crash)
    assert [i for i, _ in CheckpointDir(tmp_path / "crashed" / "checkpoints").list()] == [2, 4]
    resumed = run_training(config, tmp_path / "crashed", resume="auto")
    _assert_identical(_final_state(reference), _final_state(resumed))
    rows = (tmp_path / "crashed" / "scalars.csv").read_text().splitlines()
    pix_rows = [r for r in rows if ",loss/pix," in r]
    assert [int(r.split(",")[0]) for r in pix_rows] == list(range(1, 7))  # iteration 5 logged once


def test_sigkill_of_cli_process_then_resume(data, tmp_path):
    """A real `spnir train` process killed with SIGKILL mid-run; resuming it reaches the uninterrupted weights."""
    config = tiny_config(total=60, checkpoint={"every": 2, "keep": 3}, val={"every": 1000})
    cfg_path = tmp_path / "cfg.yml"
    cfg_path.write_text(yaml.safe_dump(config))
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "spnir", "train", "-c", str(cfg_path), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    ckpts = CheckpointDir(out / "checkpoints")
    deadline = time.monotonic() + 120
    while not ckpts.list() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    done = [i for i, _ in ckpts.list()]
    if not done or done[-1] >= 60:
        pytest.skip(f"could not kill the run mid-training (checkpoints {done}); stderr: {proc.stderr.read()[-300:]}")
    resumed = run_training(cfg_path, out, resume="auto")
    reference = run_training(cfg_path, tmp_path / "straight")
    assert resumed.completed
    _assert_identical(_final_state(reference), _final_state(resumed))


def test_injected_nan_stops_naming_iteration_and_term(data, tmp_path):
    config = tiny_config(spn=False, total=6,
                         model={"name": "train_support:NaNAfter", "scale": None, "args": {"after": 4}})
    config["data"]["train"]["degradations"] = [{"type": "noise", "sigma": 10}]
    config["data"]["val"] = []
    with pytest.raises(TrainingDiverged, match=r"loss term 'pix' is nan at iteration 4; training stopped, "
                                               r"the last good checkpoint is .*iter_00000002\.pt"):
        run_training(config, tmp_path / "nan")
    state = load_state(tmp_path / "nan" / "checkpoints" / "iter_00000002.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert [i for i, _ in CheckpointDir(tmp_path / "nan" / "checkpoints").list()] == [2]


def test_too_large_negative_weight_stops_with_a_clear_message(data, tmp_path):
    config = tiny_config(total=20)
    config["spn"]["weight"] = 1e38
    with pytest.raises(TrainingDiverged) as info:
        run_training(config, tmp_path / "big")
    message = str(info.value)
    assert "at iteration" in message and ("'spn'" in message or "gradient" in message or "'pix'" in message)
    assert "lower spn.weight" in message


def test_resume_with_a_different_spn_setting_is_refused(data, tmp_path):
    run_training(tiny_config(total=2), tmp_path / "run")
    with pytest.raises(SpnirError, match="spn.enabled: True -> False"):
        run_training(tiny_config(spn=False, total=2), tmp_path / "run", resume="auto")


def test_resume_is_bit_exact_for_models_that_draw_random_numbers(data, tmp_path):
    config = tiny_config(total=6, model={"name": "train_support:dropout_net", "scale": 2, "args": {}})

    def send_sigterm(it: int) -> None:
        if it == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    reference = run_training(config, tmp_path / "straight")
    assert run_training(config, tmp_path / "stopped", on_iteration=send_sigterm).iteration == 3
    resumed = run_training(config, tmp_path / "stopped", resume="auto")
    assert resumed.completed
    _assert_identical(_final_state(reference), _final_state(resumed))
