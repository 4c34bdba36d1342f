"""DnCNN (Zhang et al., TIP 2017): residual Gaussian denoiser, 17 conv layers with ReLU.

Layer names follow KAIR's ``models/network_dncnn.py`` with batch norm folded into the convolutions
(``act_mode='R'``, how KAIR's model zoo stores it): ``model.0``, ``model.2``, ..., ``model.32``. The network
predicts the noise and returns ``x - model(x)``, as KAIR's. The released ``dncnn_25.pth`` is grayscale
(1 channel in, 1 out).
"""
from __future__ import annotations

import torch
from torch import nn

from spnir.archs.registry import register_model


class DnCNN(nn.Module):
    """``num_conv`` 3x3 convolutions (ReLU after all but the last) predicting the residual noise."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, num_feat: int = 64, num_conv: int = 17) -> None:
        super().__init__()
        if out_channels != in_channels:
            raise ValueError(f"DnCNN subtracts its output from its input: in_channels ({in_channels}) must equal "
                             f"out_channels ({out_channels})")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, num_feat, 3, 1, 1), nn.ReLU(inplace=True)]
        for _ in range(num_conv - 2):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(num_feat, out_channels, 3, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.model(x)


@register_model(
    "dncnn",
    family="dncnn",
    task="denoise",
    params={None: 555_137},
    description="DnCNN-S: 17 layers, 64 features, grayscale (KAIR's dncnn_15/25/50, batch norm folded)",
)
def dncnn(**overrides) -> DnCNN:
    return DnCNN(**{"in_channels": 1, "out_channels": 1, "num_feat": 64, "num_conv": 17, **overrides})
