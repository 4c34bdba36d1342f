"""Sub-pixel (PixelShuffle) upsamplers shared by EDSR and SwinIR, with BasicSR's layer layout."""
from __future__ import annotations

import math

from torch import nn

from spnir.errors import SpnirError


def _check_scale(scale: int) -> None:
    if scale < 2 or (scale & (scale - 1) and scale != 3):
        raise SpnirError(f"upscale factor must be a power of two or 3; got scale={scale}")


class PixelShuffleUpsample(nn.Sequential):
    """``log2(scale)`` x (conv to 4C, PixelShuffle(2)), or one conv to 9C + PixelShuffle(3) for x3.

    Keys are ``0.weight``, ``2.weight``, ... as BasicSR's ``Upsample``.
    """

    def __init__(self, scale: int, num_feat: int) -> None:
        _check_scale(scale)
        layers: list[nn.Module] = []
        factors = [3] if scale == 3 else [2] * int(math.log2(scale))
        for factor in factors:
            layers += [nn.Conv2d(num_feat, factor * factor * num_feat, 3, 1, 1), nn.PixelShuffle(factor)]
        super().__init__(*layers)


class OneStepUpsample(nn.Sequential):
    """One conv straight to ``scale**2 * out_channels`` and one PixelShuffle (lightweight SR)."""

    def __init__(self, scale: int, num_feat: int, out_channels: int) -> None:
        if scale < 2:
            raise SpnirError(f"upscale factor must be >= 2; got scale={scale}")
        super().__init__(nn.Conv2d(num_feat, scale * scale * out_channels, 3, 1, 1), nn.PixelShuffle(scale))
