"""torchrun --max-restarts=1: a rank SIGKILLed mid-run is restarted with the others, they resume from the
run's newest checkpoint by themselves (no --resume), and the final weights equal an uninterrupted run's."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml
from train_support import make_data, tiny_config

TESTS = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(config: Path, out: Path, data: Path, kill_after: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPNIR_TEST_DATA": str(data), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("SPNIR_TEST_KILL_AFTER", None)
    if kill_after is not None:
        env["SPNIR_TEST_KILL_AFTER"] = str(kill_after)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--max-restarts=1",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--monitor-interval=0.2",
               "-m", "spnir", "train", "-c", str(config), "--out", str(out), "--quiet"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_a_killed_rank_is_restarted_and_resumes_bit_identically(tmp_path):
    data = make_data(tmp_path / "data")
    config = tiny_config(total=6, model={"name": "train_support:edsr_killed_once"})
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(yaml.safe_dump(config))

    killed = tmp_path / "killed"
    checkpoint = killed / "checkpoints" / "iter_00000004.pt"
    run = _torchrun(cfg, killed, data, kill_after=checkpoint)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    log = (killed / "train.log").read_text()
    # the first attempt failed by the SIGKILL (not by anything else torchrun would also restart), then resumed
    assert "failed (exitcode: -9) local_rank: 1" in run.stderr, log + run.stderr[-3000:]
    assert f"resumed from {checkpoint} at iteration 4" in log, log + run.stderr[-3000:]

    plain = tmp_path / "plain"
    run = _torchrun(cfg, plain, data)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "resumed" not in (plain / "train.log").read_text()

    for name in ("model_final.pt", "model_final_ema.pt"):
        a = torch.load(killed / name, weights_only=True)["params"]
        b = torch.load(plain / name, weights_only=True)["params"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
