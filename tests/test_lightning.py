"""spnir.integrations.lightning with the real ``lightning`` package: training, resume from a Lightning checkpoint
equal to an uninterrupted run, GradScaler-skipped steps, gradient accumulation."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("lightning", reason="the Lightning adapter needs lightning (pip install 'spnir[lightning]')")

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.plugins import MixedPrecision  # noqa: E402

from spnir.errors import SpnirError  # noqa: E402
from spnir.integrations.lightning import SPNCallback  # noqa: E402
from spnir.spn import OPTIMIZER_STATE_KEY  # noqa: E402

BATCHES = 4  # per epoch


class Restorer(pl.LightningModule):
    """A tiny network (with BatchNorm buffers) trained with L1 + SPN; ``inf_at`` makes that batch's loss
    infinite, so a GradScaler skips its step."""

    def __init__(self, seed: int = 0, inf_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, 3, 3, padding=1))
        self.inf_at = inf_at

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        lq, gt = batch
        out = self.net(lq)
        loss = F.l1_loss(out, gt) + self.spn(lq, out)
        return loss * math.inf if batch_idx == self.inf_at else loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), 1e-2)


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    gt = torch.rand(2 * BATCHES, 3, 12, 12, generator=generator)
    lq = gt + 0.1 * torch.randn(gt.shape, generator=generator)
    return DataLoader(TensorDataset(lq, gt), batch_size=2, shuffle=False)


def callback(**options) -> SPNCallback:
    return SPNCallback("net", vgg_weights="random", layer_weights={"relu1_2": 0.5, "relu2_2": 0.5},
                       periods=options.pop("periods", (3,)), decays=(0.5,), weight=0.01, **options)


def trainer(epochs: int, spn: SPNCallback | None, **kwargs) -> pl.Trainer:
    callbacks = [spn] if spn is not None else []
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0,
                      enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in kwargs.get("callbacks", [])),
                      **{**kwargs, "callbacks": callbacks + kwargs.get("callbacks", [])})


def test_training_advances_the_negatives_once_per_optimizer_step() -> None:
    module, spn = Restorer(), callback()
    start = {k: v.clone() for k, v in module.net.state_dict().items()}
    run = trainer(2, spn)
    run.fit(module, loader())
    assert run.global_step == 2 * BATCHES and module.spn.negatives.steps == 2 * BATCHES
    assert module.spn is spn.spn and module.spn.stats()["neg_term"] < 0
    assert not any(k.startswith("spn") for k in module.state_dict())  # not a submodule
    negative = module.spn.negatives.models[0].state_dict()
    assert not torch.equal(negative["0.weight"], start["0.weight"])  # refreshed from the trained network
    assert not torch.equal(negative["1.running_mean"], start["1.running_mean"])  # buffers too


def test_accumulation_advances_once_per_optimizer_step() -> None:
    module = Restorer()
    run = trainer(2, callback(), accumulate_grad_batches=2)
    run.fit(module, loader())
    assert run.global_step == BATCHES and module.spn.negatives.steps == BATCHES


def test_steps_a_grad_scaler_skips_do_not_advance_the_negatives() -> None:
    module, scaler = Restorer(inf_at=1), torch.amp.GradScaler("cpu")
    run = trainer(1, callback(), plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    run.fit(module, loader())
    assert scaler.get_scale() < 2.0 ** 16  # the infinite batch's step was skipped
    assert module.spn.negatives.steps == BATCHES - 1


def test_the_loss_follows_the_network_to_its_dtype() -> None:
    module = Restorer()
    trainer(1, callback(), precision="bf16-true").fit(module, loader())  # Lightning converts the module to bf16
    assert next(module.spn.negatives.models[0].parameters()).dtype == torch.bfloat16
    assert module.spn.negatives.steps == BATCHES


def test_resume_from_a_lightning_checkpoint_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    whole, spn = Restorer(), callback()
    saver = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1)
    trainer(3, spn, callbacks=[saver]).fit(whole, loader())
    (ckpt,) = tmp_path.glob("epoch=1-*.ckpt")
    saved = torch.load(ckpt, weights_only=True)
    state = saved["callbacks"][spn.state_key]
    assert any(k.startswith("negatives.") for k in state)
    assert all(OPTIMIZER_STATE_KEY not in s for s in saved["optimizer_states"])  # one copy, the callback's

    resumed = Restorer(seed=123)  # other initial weights: everything must come from the checkpoint
    again = ModelCheckpoint(dirpath=tmp_path / "resumed", save_top_k=-1, every_n_epochs=1)  # the run's callbacks
    trainer(3, callback(), callbacks=[again]).fit(resumed, loader(), ckpt_path=ckpt)
    assert resumed.spn.negatives.steps == whole.spn.negatives.steps == 3 * BATCHES
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    for key, value in whole.spn.state_dict().items():
        other = resumed.spn.state_dict()[key]
        assert (torch.equal(value, other) if torch.is_tensor(value) else value == other), key


def test_a_checkpoint_without_spn_state_starts_the_negatives_from_its_weights(tmp_path: Path) -> None:
    class Plain(Restorer):
        def training_step(self, batch, batch_idx):
            lq, gt = batch
            return F.l1_loss(self.net(lq), gt)

    plain = Plain()
    run = trainer(1, None)
    run.fit(plain, loader())
    run.save_checkpoint(tmp_path / "plain.ckpt")
    module = Restorer(seed=5)
    trainer(2, callback(periods=(100,))).fit(module, loader(), ckpt_path=tmp_path / "plain.ckpt")
    negative = module.spn.negatives.models[0].state_dict()
    for key, value in plain.net.state_dict().items():
        assert torch.equal(negative[key], value), key


def test_a_wrong_network_name_is_one_clear_error() -> None:
    with pytest.raises(SpnirError, match="Restorer.generator is not a torch module"):
        trainer(1, SPNCallback("generator", vgg_weights="random")).fit(Restorer(), loader())
