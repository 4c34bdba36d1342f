"""Reconstruction losses and the evaluation EMA model."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from spnir import SpnirError
from spnir.ema import ModelEMA, unwrap
from spnir.losses import CharbonnierLoss, L1Loss, MSELoss, PSNRLoss, build_loss


def test_loss_values():
    a, b = torch.rand(2, 3, 5, 4), torch.rand(2, 3, 5, 4)
    assert torch.allclose(L1Loss(2.0)(a, b), 2 * (a - b).abs().mean())
    assert torch.allclose(MSELoss(0.5)(a, b), 0.5 * ((a - b) ** 2).mean())
    assert torch.allclose(L1Loss(reduction="sum")(a, b), (a - b).abs().sum())
    assert torch.allclose(CharbonnierLoss(eps=1e-3)(a, b), torch.sqrt((a - b) ** 2 + 1e-3).mean())
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(PSNRLoss()(a, b), (10 / math.log(10)) * torch.log(mse + 1e-8).mean())
    # PSNR loss is minus the mean PSNR in dB (for images in [0, 1])
    psnr = 10 * torch.log10(1 / mse)
    assert torch.allclose(PSNRLoss()(a, b), -psnr.mean(), atol=1e-4)


def test_build_loss_from_options():
    loss = build_loss({"type": "CharbonnierLoss", "loss_weight": 0.5, "eps": 1e-6})
    assert isinstance(loss, CharbonnierLoss) and loss.loss_weight == 0.5
    assert isinstance(build_loss("l1"), L1Loss)
    with pytest.raises(SpnirError, match="did you mean L1Loss"):
        build_loss({"type": "L1Los"})
    with pytest.raises(SpnirError, match="reduction"):
        build_loss({"type": "L1Loss", "reduction": "max"})


def test_model_ema_update_formula_and_buffers():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = ModelEMA(model, decay=0.9)
    start = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()
    model(torch.rand(4, 3))
    ema.update()
    for e, s, p in zip(ema.module.parameters(), start, model.parameters()):
        assert torch.allclose(e, 0.9 * s + 0.1 * p, atol=1e-6)
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)
    assert not any(p.requires_grad for p in ema.parameters())
    assert set(ema.state_dict()) == {f"module.{k}" for k in model.state_dict()}
    with pytest.raises(SpnirError, match="decay"):
        ModelEMA(model, decay=1.5)


def test_unwrap_looks_through_wrappers():
    model = nn.Linear(2, 2)
    assert unwrap(nn.DataParallel(model)) is model
