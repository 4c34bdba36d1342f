"""log.wandb: a Weights & Biases run (offline here) that syncs the run's TensorBoard scalars; a resume continues
the same W&B run; BasicSR's logger.wandb maps to it; what it needs is checked with the config."""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_basicsr_mapping import OFFICIAL_SPN_FFANET
from train_support import tiny_config

from spnir.errors import SpnirError
from spnir.train.config import load_config, validate
from spnir.train.run import run_training
from spnir.train.run_log import read_scalars

WANDB = {"project": "spnir-test", "name": "tiny-run"}


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B offline, silent, every file of its own under ``tmp_path``."""
    pytest.importorskip("wandb", reason="log.wandb needs wandb (pip install 'spnir[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))


def _offline_runs(out: Path) -> list[Path]:
    return sorted(out.glob("wandb/offline-run-*"))


def _written(path: Path, wanted: list[bytes], seconds: float = 60.0) -> bytes:
    """The file's bytes once every ``wanted`` is in it, or after ``seconds``: W&B's service process may still be
    flushing the offline file when ``finish()`` has returned on a loaded machine."""
    deadline = time.monotonic() + seconds
    while True:
        data = path.read_bytes()
        if all(w in data for w in wanted) or time.monotonic() > deadline:
            return data
        time.sleep(0.5)


@pytest.mark.slow
def test_an_offline_wandb_run_holds_the_scalars_and_a_resume_continues_it(data: Path, tmp_path: Path,
                                                                          offline: None) -> None:
    out = tmp_path / "run"
    log = {"every": 1, "tensorboard": True, "progress": False, "wandb": WANDB}
    config = tiny_config(total=4, log=log)

    def crash(iteration: int) -> None:
        if iteration == 3:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(config, out, on_iteration=crash)  # after the checkpoint of iteration 2
    (first,) = _offline_runs(out)
    run_id = (out / "wandb" / "spnir_run_id").read_text().strip()
    assert first.name.endswith(run_id)
    assert run_training(config, out, resume="auto").completed
    runs = _offline_runs(out)
    # one W&B run, continued: both folders carry its id (W&B adds "-1" when both started in the same second)
    assert len(runs) == 2 and all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", r.name) for r in runs)
    names = read_scalars(out / "scalars.csv")
    logged = _written(runs[1] / f"run-{run_id}.wandb", [name.encode() for name in names])
    assert names and all(name.encode() in logged for name in names), (sorted(names), logged[:2000])
    assert b"tiny-run" in (runs[0] / f"run-{run_id}.wandb").read_bytes()


def test_log_wandb_needs_tensorboard_and_the_package(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SpnirError, match="log.wandb syncs the TensorBoard events: set log.tensorboard: true"):
        validate(tiny_config(log={"tensorboard": False, "wandb": WANDB}))
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    missing = r"log.wandb needs wandb, which is not installed: pip install 'spnir\[wandb\]'"
    with pytest.raises(SpnirError, match=missing):
        validate(tiny_config(log={"tensorboard": True, "wandb": WANDB}))
    assert validate(tiny_config())["log"]["wandb"] == {"project": None, "name": None, "mode": "offline", "id": None}


def test_basicsr_logger_wandb_maps_to_log_wandb(tmp_path: Path) -> None:
    options = yaml.safe_load(OFFICIAL_SPN_FFANET)
    options["logger"]["wandb"] = {"project": "mclir", "resume_id": "abc123"}
    path = tmp_path / "options.yml"
    path.write_text(yaml.safe_dump(options))
    notes: list[str] = []
    config = load_config(path, notes=notes)
    assert config["log"]["wandb"] == {"project": "mclir", "name": None, "mode": "offline", "id": "abc123"}
    assert config["log"]["tensorboard"] is True
    assert any(note.startswith("logger.wandb: log.wandb") for note in notes)
