"""FFA-Net (Qin et al., AAAI 2020): feature fusion attention network for single-image dehazing.

Layer names and shapes follow the official implementation (github.com/zhilin007/FFA-Net), so its released
``its_train_ffa_3_19.pk`` / ``ots_train_ffa_3_19.pk`` files (``{"model": DataParallel state_dict, "step",
"max_psnr", "max_ssim", "psnrs", "ssims", "losses"}``, metrics as numpy float64) load as they are with
``spnir.archs.load_checkpoint``: its generic unwrapping, ``module.`` stripping and numpy-scalar allow-list
cover that format, so the family needs no checkpoint filter.

Input convention: the official training and test scripts normalise the hazy image with the per-channel
``mean`` / ``std`` below before the network, add that *normalised* input back as the global residual, and
compare the raw output with the clean image in [0, 1]. ``input_norm=True`` (the default, what the released
weights expect) does that normalisation inside the model, so the model takes and returns [0, 1] RGB like
every spnir model. ``input_norm=False`` feeds [0, 1] straight in (for training from scratch without it).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from spnir.archs.registry import register_model

FFA_MEAN = (0.64, 0.6, 0.58)
FFA_STD = (0.14, 0.15, 0.152)


def _conv(in_ch: int, out_ch: int, kernel_size: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=True)


class PixelAttention(nn.Module):
    """Per-pixel gate: x * sigmoid(conv1x1(relu(conv1x1(x)))), one weight map shared by all channels."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pa = nn.Sequential(_conv(dim, dim // 8, 1), nn.ReLU(inplace=True), _conv(dim // 8, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.pa(x)


class ChannelAttention(nn.Module):
    """Per-channel gate computed from the globally average-pooled features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.ca = nn.Sequential(_conv(dim, dim // 8, 1), nn.ReLU(inplace=True), _conv(dim // 8, dim, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.ca(self.avg_pool(x))


class FFABlock(nn.Module):
    """Conv-ReLU with local residual, conv, channel then pixel attention, block residual."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = _conv(dim, dim, kernel_size)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = _conv(dim, dim, kernel_size)
        self.calayer = ChannelAttention(dim)
        self.palayer = PixelAttention(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.act1(self.conv1(x)) + x
        res = self.palayer(self.calayer(self.conv2(res)))
        return res + x


class FFAGroup(nn.Module):
    """``blocks`` FFA blocks and a closing conv, with a group residual."""

    def __init__(self, dim: int, blocks: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.gp = nn.Sequential(*[FFABlock(dim, kernel_size) for _ in range(blocks)], _conv(dim, dim, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gp(x) + x


class FFANet(nn.Module):
    """FFA-Net: ``groups`` chained groups whose outputs are fused by learned per-group channel weights.

    Submodules are named ``pre``, ``g1`` .. ``gN``, ``ca``, ``palayer``, ``post`` as in the official code.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, groups: int = 3, blocks: int = 19, dim: int = 64, input_norm: bool = True) -> None:
        super().__init__()
        self.groups = groups
        self.in_channels = 3  # its input convolution is registered after the groups
        self.dim = dim
        self.input_norm = input_norm
        # Registration order (groups, ca, palayer, pre, post) follows the official state_dict's key order.
        for index in range(1, groups + 1):
            self.add_module(f"g{index}", FFAGroup(dim, blocks))
        self.ca = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            _conv(dim * groups, dim // 16, 1),
            nn.ReLU(inplace=True),
            _conv(dim // 16, dim * groups, 1),
            nn.Sigmoid(),
        )
        self.palayer = PixelAttention(dim)
        self.pre = nn.Sequential(_conv(3, dim))
        self.post = nn.Sequential(_conv(dim, dim), _conv(dim, 3))
        # Not part of the state_dict: the official checkpoints have no such entries.
        self.register_buffer("mean", torch.tensor(FFA_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(FFA_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] hazy RGB (N, 3, H, W) -> dehazed RGB of the same size, any H and W."""
        if self.input_norm:
            x = (x - self.mean) / self.std
        features = self.pre(x)
        group_outputs = []
        for index in range(1, self.groups + 1):
            features = getattr(self, f"g{index}")(features)
            group_outputs.append(features)
        weights = self.ca(torch.cat(group_outputs, dim=1)).view(-1, self.groups, self.dim, 1, 1)
        fused = sum(weights[:, index] * out for index, out in enumerate(group_outputs))
        return self.post(self.palayer(fused)) + x


@register_model(
    "ffanet",
    family="ffanet",
    task="dehaze",
    params={None: 4_455_913},
    description="FFA-Net, 3 groups of 19 blocks, 64 features (official ITS/OTS configuration)",
)
def ffanet(**overrides: Any) -> FFANet:
    return FFANet(**{"groups": 3, "blocks": 19, "dim": 64, "input_norm": True, **overrides})
