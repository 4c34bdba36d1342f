"""Helpers for the tests of spnir.train: a tiny config on small images the test writes, a NaN-producing model,
and the per-rank entry point of the DDP test (importable by spawned processes)."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spnir.imageio import save_image


def write_images(folder: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    """``count`` smooth random RGB images of ``size`` px (PNG) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = torch.from_numpy(rng.random((1, 3, size // 4, size // 4), dtype=np.float32))
        img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]
        save_image(img.clamp(0, 1), folder / f"img{i:02d}.png")
    return folder


def make_data(root: Path) -> Path:
    write_images(root / "train", 4, size=32, seed=1)
    write_images(root / "val", 1, size=24, seed=2)
    return root


def tiny_config(spn: bool = True, total: int = 6, **sections: Any) -> dict[str, Any]:
    """A run of a few iterations on ``${SPNIR_TEST_DATA}`` (set by the tests) that takes about a second."""
    config = {
        "name": "tiny",
        "seed": 3,
        "model": {"name": "edsr-baseline", "scale": 2, "args": {"num_feat": 4, "num_block": 1}},
        "data": {
            "train": {"type": "clean", "gt": "${SPNIR_TEST_DATA}/train",
                      "degradations": [{"type": "bicubic", "scale": 2}],
                      "patch_size": 16, "batch_size": 4, "enlarge": 2, "workers": 0},
            "val": [{"name": "v", "type": "clean", "gt": "${SPNIR_TEST_DATA}/val",
                     "degradations": [{"type": "bicubic", "scale": 2}]}],
        },
        "spn": {"enabled": spn, "weight": 0.01, "vgg_weights": "random", "layer_weights": {"relu1_2": 1.0},
                "periods": [2, 3], "decays": [0.5, 0.3], "init_decay": 0.1},
        "ema": {"decay": 0.9},
        "optim": {"type": "Adam", "lr": 1e-3},
        "scheduler": {"type": "multistep", "milestones": [3], "gamma": 0.5},
        "train": {"total_iter": total, "device": "cpu"},
        "val": {"every": 3},
        "checkpoint": {"every": 2, "keep": 2},
        "log": {"every": 1, "tensorboard": False, "progress": False},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values} if isinstance(values, dict) else values
    return copy.deepcopy(config)


class NaNAfter(nn.Module):
    """A tiny x1 network whose output becomes NaN from its ``after``-th training forward on."""

    def __init__(self, after: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.after, self.calls = after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
        out = x + self.conv(x)
        return out * float("nan") if self.training and self.calls >= self.after else out


def ddp_worker(rank: int, world_size: int, port: int, config: dict, out_dir: str, data_dir: str) -> None:
    """One rank of the DDP test: train, then save this rank's final weights to ``out_dir/rank{rank}.pt``."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), SPNIR_TEST_DATA=data_dir)
    from spnir.train import run_training

    result = run_training(config, Path(out_dir) / "run")
    torch.save({"model": result.model.state_dict(), "ema": result.ema_model.state_dict(),
                "spn": result.spn.state_dict()}, Path(out_dir) / f"rank{rank}.pt")


def dropout_net(scale: int) -> nn.Module:
    """A tiny x``scale`` network whose training forward draws from torch's global RNG (dropout), as SwinIR's
    and IDT's drop-path do: resume must restore that RNG exactly."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Dropout2d(0.25),
                         nn.Conv2d(8, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))


def edsr_killed_once(scale: int, **args: Any) -> nn.Module:
    """The tiny EDSR preset; under ``SPNIR_TEST_KILL_AFTER=CHECKPOINT``, rank 1 of torchrun's first attempt
    SIGKILLs itself in its next training forward once CHECKPOINT exists (a worker dying mid-run)."""
    import signal
    import time

    from spnir.archs import create_model

    model = create_model("edsr-baseline", scale, **args)
    checkpoint = os.environ.get("SPNIR_TEST_KILL_AFTER")
    if not checkpoint or os.environ.get("RANK") != "1" or os.environ.get("TORCHELASTIC_RESTART_COUNT") != "0":
        return model

    after, calls = int(Path(checkpoint).stem.split("_")[1]), [0]

    def kill_when_saved(module: nn.Module, inputs: Any) -> None:
        calls[0] += module.training
        if calls[0] <= after:
            return
        for _ in range(600):  # rank 0 writes CHECKPOINT while this rank starts the next iteration
            if os.path.exists(checkpoint):
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.05)

    model.register_forward_pre_hook(kill_when_saved)
    return model
