"""The loop's outputs and options: logs (CSV, TensorBoard, train.log), validation bests, final weights,
bf16 autocast on the CPU, the CLI (fp16 and the other speed switches: test_train_speed.py)."""
from __future__ import annotations

import pytest
import yaml
from train_support import tiny_config

from spnir.archs.model_files import model_from_checkpoint
from spnir.cli import main
from spnir.train import run_training
from spnir.train.run_log import read_scalars


def test_logs_validation_and_final_weights(data, tmp_path):
    config = tiny_config(total=4, val={"every": 2}, log={"every": 2, "tensorboard": True, "progress": True})
    result = run_training(config, tmp_path / "run")
    scalars = read_scalars(tmp_path / "run" / "scalars.csv")
    assert [it for it, _ in scalars["loss/pix"]] == [2, 4] and [it for it, _ in scalars["val/v/psnr"]] == [2, 4]
    for name in ("loss/spn", "lr", "it_per_s", "grad_norm", "spn/neg_distance", "spn/neg_weight", "val/v/ssim"):
        assert name in scalars, name
    best_value, best_iter = result.best["v"]["psnr"]
    assert best_value == pytest.approx(max(v for _, v in scalars["val/v/psnr"])) and best_iter in (2, 4)
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "run" / "tb").iterdir())
    log = (tmp_path / "run" / "train.log").read_text()
    assert "feature space: vgg16 with seeded random weights" in log and "val v: psnr" in log
    assert "CPU allocator: " in log
    restored = model_from_checkpoint(result.final_weights["ema"])
    assert sum(p.numel() for p in restored.parameters()) == sum(p.numel() for p in result.model.parameters())
    saved = yaml.safe_load((tmp_path / "run" / "config.yml").read_text())
    assert saved["spn"]["periods"] == [2, 3]


def test_bf16_autocast_trains_on_the_cpu(data, tmp_path):
    result = run_training(tiny_config(total=2, train={"amp": "bf16"}), tmp_path / "bf16")
    assert result.completed and all(p.isfinite().all() for p in result.model.parameters())


def test_epochs_are_converted_with_the_dataset_size(data, tmp_path):
    config = tiny_config(spn=False)
    config["train"] = {"epochs": 2, "device": "cpu"}  # 4 images x enlarge 2 = 8 samples, batch 4: 2 per epoch
    assert run_training(config, tmp_path / "ep").iteration == 4


def test_cli_prints_errors_without_traceback_and_runs(data, tmp_path, capsys):
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump(tiny_config(total=2)))
    assert main(["train", "-c", str(cfg), "--set", "optim.lrr=1"]) == 2
    assert "did you mean optim.lr?" in capsys.readouterr().err
    assert main(["train", "-c", str(cfg), "--out", str(tmp_path / "cli")]) == 0
    assert "completed 2 iterations" in capsys.readouterr().out
    assert main(["train", "-c", str(cfg), "--print-config"]) == 0
    assert "periods:" in capsys.readouterr().out
