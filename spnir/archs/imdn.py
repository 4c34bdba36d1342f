"""IMDN (Hui et al., ACM MM 2019): lightweight SR with information multi-distillation blocks.

Layer names follow the authors' ``model/architecture.py`` (``fea_conv``, ``IMDB1..6`` with ``c1..c5`` and
``cca.conv_du``, ``c.0``, ``LR_conv``, ``upsampler.0``), so their released ``IMDN_x{2,3,4}.pth`` files
(DataParallel state dicts, ``module.`` keys, which ``load_checkpoint`` strips) load as they are. The network
takes and returns ``[0, 1]`` RGB without normalisation, as the authors' test script feeds it.
"""
from __future__ import annotations

import torch
from torch import nn

from spnir.archs.registry import register_model
from spnir.archs.upsample import OneStepUpsample

NEG_SLOPE = 0.05  # the authors' LeakyReLU slope


def contrast(x: torch.Tensor) -> torch.Tensor:
    """Per-channel standard deviation over the image (population form), ``(N, C, 1, 1)``."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()


class ContrastChannelAttention(nn.Module):
    """CCA layer: channel weights from contrast + mean through a 1x1 bottleneck (``conv_du.0``, ``conv_du.2``)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(contrast(x) + x.mean(dim=(2, 3), keepdim=True))


class IMDBlock(nn.Module):
    """Information multi-distillation block: three 3x3 convs each keep a quarter of their channels, the
    fourth conv gives the last quarter; the four parts are weighted by CCA, fused by a 1x1 conv, plus input."""

    def __init__(self, channels: int, distillation_rate: float = 0.25) -> None:
        super().__init__()
        self.distilled = int(channels * distillation_rate)
        self.remaining = channels - self.distilled
        self.c1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.c2 = nn.Conv2d(self.remaining, channels, 3, 1, 1)
        self.c3 = nn.Conv2d(self.remaining, channels, 3, 1, 1)
        self.c4 = nn.Conv2d(self.remaining, self.distilled, 3, 1, 1)
        self.c5 = nn.Conv2d(self.distilled * 4, channels, 1)
        self.cca = ContrastChannelAttention(self.distilled * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, rest = [], x
        for conv in (self.c1, self.c2, self.c3):
            d, rest = torch.split(nn.functional.leaky_relu(conv(rest), NEG_SLOPE), [self.distilled, self.remaining], 1)
            kept.append(d)
        kept.append(self.c4(rest))
        return self.c5(self.cca(torch.cat(kept, dim=1))) + x


class IMDN(nn.Module):
    """IMDN: a 3x3 conv, ``num_modules`` IMD blocks fused by a 1x1 conv + LeakyReLU and a 3x3 conv (plus the
    first features), then one conv + PixelShuffle to ``scale`` x."""

    def __init__(self, scale: int, num_feat: int = 64, num_modules: int = 6, in_channels: int = 3,
                 out_channels: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.fea_conv = nn.Conv2d(in_channels, num_feat, 3, 1, 1)
        for i in range(1, num_modules + 1):
            self.add_module(f"IMDB{i}", IMDBlock(num_feat))
        self.num_modules = num_modules
        self.c = nn.Sequential(nn.Conv2d(num_feat * num_modules, num_feat, 1), nn.LeakyReLU(NEG_SLOPE, inplace=True))
        self.LR_conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upsampler = OneStepUpsample(scale, num_feat, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.fea_conv(x)
        outs, out = [], feat
        for i in range(1, self.num_modules + 1):
            out = getattr(self, f"IMDB{i}")(out)
            outs.append(out)
        return self.upsampler(self.LR_conv(self.c(torch.cat(outs, dim=1))) + feat)


@register_model(
    "imdn",
    family="imdn",
    task="sr",
    scales=(2, 3, 4),
    params={2: 694_404, 3: 703_059, 4: 715_176},
    description="IMDN: 64 features, 6 IMD blocks (the authors' released x2/x3/x4 models)",
)
def imdn(scale: int, **overrides) -> IMDN:
    return IMDN(scale, **{"num_feat": 64, "num_modules": 6, **overrides})
