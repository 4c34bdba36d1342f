"""EDSR (Lim et al., CVPRW 2017) with BasicSR's layer names, so its model-zoo files load as they are.

The network works on ``(x - rgb_mean) * img_range`` internally, as BasicSR's EDSR; it takes and returns
``[0, 1]`` RGB.
"""
from __future__ import annotations

import torch
from torch import nn

from spnir.archs.registry import register_model
from spnir.archs.upsample import PixelShuffleUpsample

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class ResidualBlockNoBN(nn.Module):
    """conv-ReLU-conv with a scaled identity shortcut (no batch norm)."""

    def __init__(self, num_feat: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x))) * self.res_scale


class EDSR(nn.Module):
    """Enhanced Deep Residual Network for single-image super-resolution."""

    mean: torch.Tensor

    def __init__(
        self,
        scale: int,
        num_feat: int = 64,
        num_block: int = 16,
        res_scale: float = 1.0,
        img_range: float = 255.0,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
        in_channels: int = 3,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, -1, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(in_channels, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(ResidualBlockNoBN(num_feat, res_scale) for _ in range(num_block)))
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsample = PixelShuffleUpsample(scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(x.dtype)
        feat = self.conv_first((x - mean) * self.img_range)
        feat = feat + self.conv_after_body(self.body(feat))
        return self.conv_last(self.upsample(feat)) / self.img_range + mean


@register_model(
    "edsr-baseline",
    family="edsr",
    task="sr",
    scales=(2, 3, 4),
    params={2: 1_369_859, 3: 1_554_499, 4: 1_517_571},
    description="EDSR baseline: 64 features, 16 residual blocks, res_scale 1 (BasicSR EDSR_M)",
)
def edsr_baseline(scale: int, **overrides) -> EDSR:
    return EDSR(scale, **{"num_feat": 64, "num_block": 16, "res_scale": 1.0, **overrides})


@register_model(
    "edsr",
    family="edsr",
    task="sr",
    scales=(2, 3, 4),
    params={2: 40_729_603, 3: 43_680_003, 4: 43_089_923},
    description="EDSR: 256 features, 32 residual blocks, res_scale 0.1 (BasicSR EDSR_L)",
)
def edsr(scale: int, **overrides) -> EDSR:
    return EDSR(scale, **{"num_feat": 256, "num_block": 32, "res_scale": 0.1, **overrides})
