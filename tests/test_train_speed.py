"""The loop's speed switches, each checked against what it must not change: one device-to-host transfer per
iteration, gradient accumulation equal to the full batch, fp16 with a GradScaler on the CPU (and what a
skipped step does to the negatives and the EMA), channels_last equal to contiguous, fused Adam, the CUDA-only
switches refused as no-ops with a note, and a compiled run resumed bit-exact."""
from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from train_support import tiny_config

import spnir
from spnir.train import run_training
from spnir.train.build import build_parts
from spnir.train.config import load_config
from spnir.train.distributed import DistContext
from spnir.train.run_log import RunLogger
from spnir.train.trainer import Schedule, Trainer
from spnir.train.training_state import CheckpointDir

SPNIR = str(Path(spnir.__file__).parent)
HOST_DATA = str(Path(spnir.__file__).parent / "data")  # the data pipeline runs on the host (loader workers)
TRANSFERS = ("item", "tolist", "cpu", "numpy", "__float__", "__bool__", "__int__", "__index__", "__format__")


def _trainer(config: dict, folder: Path) -> Trainer:
    parts = build_parts(load_config(config), DistContext())
    return Trainer(parts, DistContext(), CheckpointDir(folder / "checkpoints"), RunLogger(None, parts.total_iter),
                   Schedule(log_every=1000, val_every=1000, ckpt_every=1000))


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if torch.is_tensor(v)}


def _assert_close(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key, **tol)


@pytest.mark.parametrize("spn", [{}, {"weight": "auto", "periods": [0, 0], "adaptive_threshold": 1e-6}],
                         ids=["fixed-weight", "auto-weight-adaptive"])
def test_one_device_to_host_transfer_per_iteration(data, tmp_path, monkeypatch, spn):
    """spnir's own code reads device values back once per iteration between log steps (CPU tensors stand in
    for device tensors here; the data pipeline, which runs on the host, is not counted)."""
    calls: list[str] = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(SPNIR) and not caller.startswith(HOST_DATA):
                calls.append(f"{name} from {caller}:{sys._getframe(1).f_lineno}")
            return original(self, *args, **kwargs)
        return wrapper

    for name in TRANSFERS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    per_iteration: dict[int, list[str]] = {}

    def mark(it: int) -> None:
        per_iteration[it] = list(calls)
        calls.clear()

    config = tiny_config(total=6, spn=True, val={"every": 100}, checkpoint={"every": 100},
                         log={"every": 100, "tensorboard": False, "progress": True})
    config["spn"].update(spn)
    result = run_training(config, tmp_path / "run", on_iteration=mark)
    assert result.completed
    for it in (2, 3, 4, 5):  # iteration 1 may build caches, 6 logs, validates and checkpoints
        assert len(per_iteration[it]) == 1, per_iteration[it]
    assert "tolist" in per_iteration[3][0]


def test_train_step_still_returns_losses_grad_norm_and_stop(data, tmp_path):
    trainer = _trainer(tiny_config(total=2), tmp_path)
    values, grad_norm, stop = trainer.train_step(next(trainer.parts.batches(0)))
    assert set(values) == {"pix", "spn"} and all(isinstance(v, float) for v in values.values())
    assert math.isfinite(grad_norm) and grad_norm > 0 and stop is False
    _, unmeasured, _ = trainer.train_step(next(trainer.parts.batches(1)), measure_grad_norm=False)
    assert math.isnan(unmeasured)


def _accumulated(tmp_path, name: str, batch: int, accumulate: int, **spn) -> dict[str, dict[str, torch.Tensor]]:
    config = tiny_config(total=6, data={}, train={"total_iter": 6, "device": "cpu", "accumulate": accumulate})
    config["data"]["train"]["batch_size"] = batch
    config["spn"].update(spn)
    result = run_training(config, tmp_path / name)
    assert result.completed and result.spn.negatives.steps == 6
    return {"model": _weights(result.model), "ema": _weights(result.ema_model), "spn": _weights(result.spn)}


@pytest.mark.parametrize("spn", [{}, {"periods": [0, 0], "adaptive_threshold": 1e-6, "adaptive_decay": 0.5}],
                         ids=["periodic", "adaptive"])
def test_accumulating_two_half_batches_equals_the_full_batch(data, tmp_path, spn):
    """EDSR has no batch norm: K=2 micro-batches of 2 = one batch of 4, including the negatives after their
    refreshes (periods 2 and 3 over 6 steps) and the EMA."""
    full = _accumulated(tmp_path, "full", batch=4, accumulate=1, **spn)
    halves = _accumulated(tmp_path, "halves", batch=2, accumulate=2, **spn)
    for part in full:
        _assert_close(full[part], halves[part], rtol=1e-5, atol=1e-6)


def test_fp16_with_a_grad_scaler_trains_spn_on_the_cpu(data, tmp_path):
    result = run_training(tiny_config(total=3, train={"amp": "fp16"}), tmp_path / "fp16")
    assert result.completed and all(p.isfinite().all() for p in result.model.parameters())
    assert result.spn.negatives.steps == 3


def test_a_step_the_grad_scaler_skips_advances_neither_negatives_nor_ema(data, tmp_path):
    """An inf gradient: the GradScaler skips the optimiser step and halves its scale; the learning-rate
    schedule advances (the iteration counts), the negatives' schedule and the EMA do not."""
    trainer = _trainer(tiny_config(total=4, train={"amp": "fp16"}), tmp_path)
    p = trainer.parts
    batches = p.batches(0)
    trainer.train_step(next(batches))
    before = {"model": _weights(p.model), "ema": _weights(p.ema), "spn": _weights(p.spn)}
    steps, scale, lr_steps = p.spn.negatives.steps, trainer.scaler.get_scale(), p.scheduler.last_epoch
    hook = next(iter(p.model.parameters())).register_hook(lambda g: g * math.inf)
    values, _, _ = trainer.train_step(next(batches))
    hook.remove()
    assert all(math.isfinite(v) for v in values.values())
    assert trainer.skipped_steps == 1 and trainer.iteration == 2 and p.scheduler.last_epoch == lr_steps + 1
    assert trainer.scaler.get_scale() == scale / 2 and p.spn.negatives.steps == steps
    for part, module in (("model", p.model), ("ema", p.ema), ("spn", p.spn)):
        after = _weights(module)
        assert all(torch.equal(before[part][k], after[k]) for k in after), part
    trainer.train_step(next(batches))
    assert p.spn.negatives.steps == steps + 1 and trainer.skipped_steps == 1


def test_channels_last_equals_contiguous(data, tmp_path):
    plain = run_training(tiny_config(total=3, train={"channels_last": False}), tmp_path / "plain")
    last = run_training(tiny_config(total=3, train={"channels_last": True}), tmp_path / "last")
    conv = next(m for m in last.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    negative = next(m for m in last.spn.negatives.models[0].modules() if isinstance(m, torch.nn.Conv2d))
    assert negative.weight.is_contiguous(memory_format=torch.channels_last)
    vgg = next(m for m in last.spn.features.modules() if isinstance(m, torch.nn.Conv2d))
    assert vgg.weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in ((plain.model, last.model), (plain.ema_model, last.ema_model), (plain.spn, last.spn)):
        _assert_close(_weights(a), {k: v.contiguous() for k, v in _weights(b).items()}, rtol=1e-4, atol=1e-5)


def test_channels_last_auto_is_off_on_the_cpu(data, tmp_path):
    trainer = _trainer(tiny_config(total=1), tmp_path)
    assert trainer.parts.channels_last is False


def test_fused_adam_and_the_cuda_only_switches_on_the_cpu(data, tmp_path):
    config = tiny_config(total=2, optim={"fused": True}, train={"tf32": True, "cudnn_benchmark": True})
    result = run_training(config, tmp_path / "fused")
    assert result.completed
    log = (tmp_path / "fused" / "train.log").read_text()
    assert "train.tf32 has no effect on cpu (CUDA only)" in log
    assert "train.cudnn_benchmark has no effect on cpu (CUDA only)" in log
    trainer = _trainer(tiny_config(total=1, optim={"fused": True}), tmp_path / "t")
    assert trainer.parts.optimizer.defaults["fused"] is True


def test_fused_adam_matches_the_default_implementation(data, tmp_path):
    plain = run_training(tiny_config(total=3), tmp_path / "plain")
    fused = run_training(tiny_config(total=3, optim={"fused": True}), tmp_path / "fused")
    _assert_close(_weights(plain.model), _weights(fused.model), rtol=1e-5, atol=1e-6)


def test_a_resumed_compiled_run_is_bit_exact(data, tmp_path):
    """train.compile compiles the model's training forward; stopped after 2 of 4 iterations and resumed, the
    weights, EMA and negatives equal an uninterrupted compiled run bit for bit."""
    config = tiny_config(total=4, spn=True, train={"compile": True}, checkpoint={"every": 2}, val={"every": 100})
    straight = run_training(config, tmp_path / "straight")
    def stop_after_two(it: int) -> None:
        if it == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    first = run_training(config, tmp_path / "resumed", on_iteration=stop_after_two)
    assert first.status == "interrupted (SIGTERM)" and first.iteration == 2
    resumed = run_training(config, tmp_path / "resumed", resume="auto")
    assert resumed.iteration == 4
    for a, b in ((straight.model, resumed.model), (straight.ema_model, resumed.ema_model),
                 (straight.spn, resumed.spn)):
        wa, wb = _weights(a), _weights(b)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
