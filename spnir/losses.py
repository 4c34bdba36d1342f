"""Reconstruction losses with BasicSR's names and ``loss_weight`` argument.

``build_loss({"type": "L1Loss", "loss_weight": 1.0})`` builds one from an option dict.
"""
from __future__ import annotations

import difflib
import math
from typing import Any

import torch
from torch import nn

from spnir.errors import SpnirError

_REDUCTIONS = ("mean", "sum")


class _WeightedLoss(nn.Module):
    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise SpnirError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def _reduce(self, values: torch.Tensor) -> torch.Tensor:
        return values.mean() if self.reduction == "mean" else values.sum()

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, reduction={self.reduction!r}"


class L1Loss(_WeightedLoss):
    """``loss_weight * mean(|pred - target|)``."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * self._reduce((pred - target).abs())


class MSELoss(_WeightedLoss):
    """``loss_weight * mean((pred - target)^2)``."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * self._reduce((pred - target).square())


class CharbonnierLoss(_WeightedLoss):
    """``loss_weight * mean(sqrt((pred - target)^2 + eps))`` (BasicSR's default ``eps=1e-12``)."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", eps: float = 1e-12) -> None:
        super().__init__(loss_weight, reduction)
        self.eps = float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * self._reduce(torch.sqrt((pred - target).square() + self.eps))


class PSNRLoss(_WeightedLoss):
    """NAFNet's loss: ``loss_weight * 10/ln(10) * mean_i log(mse_i + 1e-8)`` (minus the PSNR, up to a constant).

    ``to_y`` compares the BT.601 luma of images in [0, 1] scaled to [0, 255], as NAFNet's option does.
    """

    y_coef: torch.Tensor

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean", to_y: bool = False) -> None:
        super().__init__(loss_weight, reduction)
        if reduction != "mean":
            raise SpnirError("PSNRLoss supports reduction='mean' only")
        self.to_y = to_y
        self.register_buffer("y_coef", torch.tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1), persistent=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.to_y:
            pred = (pred * self.y_coef).sum(dim=1, keepdim=True) + 16.0
            target = (target * self.y_coef).sum(dim=1, keepdim=True) + 16.0
            pred, target = pred / 255.0, target / 255.0
        mse = (pred - target).square().mean(dim=(1, 2, 3))
        return self.loss_weight * (10.0 / math.log(10.0)) * torch.log(mse + 1e-8).mean()


class SSIMLoss(_WeightedLoss):
    """``loss_weight * (1 - SSIM)`` as IDT trains (its ``-SSIM`` up to a constant): 11x11 Gaussian window,
    sigma 1.5, zero padding to the input size, per channel, images in [0, 1]; ``reduction`` must be mean."""

    window: torch.Tensor

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(loss_weight, reduction)
        if reduction != "mean":
            raise SpnirError("SSIMLoss supports reduction='mean' only")
        x = torch.arange(11, dtype=torch.float32) - 5
        g = torch.exp(-(x * x) / (2 * 1.5**2))
        g = g / g.sum()
        self.register_buffer("window", torch.outer(g, g).view(1, 1, 11, 11), persistent=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        channels = pred.shape[1]
        window = self.window.to(pred.dtype).expand(channels, 1, 11, 11)

        def blur(x: torch.Tensor) -> torch.Tensor:
            return nn.functional.conv2d(x, window, padding=5, groups=channels)

        mu_p, mu_t = blur(pred), blur(target)
        var_p = blur(pred * pred) - mu_p.square()
        var_t = blur(target * target) - mu_t.square()
        cov = blur(pred * target) - mu_p * mu_t
        c1, c2 = 0.01**2, 0.03**2
        numerator = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
        ssim_map = numerator / ((mu_p.square() + mu_t.square() + c1) * (var_p + var_t + c2))
        return self.loss_weight * (1.0 - ssim_map.mean())


LOSSES: dict[str, type[nn.Module]] = {
    "L1Loss": L1Loss,
    "MSELoss": MSELoss,
    "CharbonnierLoss": CharbonnierLoss,
    "PSNRLoss": PSNRLoss,
    "SSIMLoss": SSIMLoss,
}
ALIASES = {
    "l1": "L1Loss", "mse": "MSELoss", "l2": "MSELoss", "charbonnier": "CharbonnierLoss", "psnr": "PSNRLoss",
    "ssim": "SSIMLoss",
}


def build_loss(spec: dict[str, Any] | str) -> nn.Module:
    """A loss from ``{"type": NAME, **kwargs}`` (BasicSR names, or l1/mse/charbonnier/psnr) or a name."""
    spec = {"type": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("type", None)
    name = ALIASES.get(str(name).lower(), name)
    if name not in LOSSES:
        near = difflib.get_close_matches(str(name), list(LOSSES) + list(ALIASES), n=2)
        hint = f" (did you mean {' or '.join(near)}?)" if near else ""
        raise SpnirError(f"unknown loss type {name!r}{hint}; expected one of {', '.join(LOSSES)}")
    try:
        return LOSSES[name](**spec)
    except TypeError as exc:
        raise SpnirError(f"loss {name}: {exc}") from exc
