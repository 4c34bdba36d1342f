"""NAFNet (Chen et al., ECCV 2022) with the official layer names, and its local-statistics test variant.

``local=True`` gives the official ``NAFNetLocal`` used for the GoPro numbers: every global average pool
of the channel attention becomes a box average over the window that the training crop
(``train_size`` x ``train_size``, 256 for GoPro) times 1.5 covered at that scale, replicate-padded to the
input size (Chu et al., "Revisiting Global Statistics Aggregation", TLSC). It changes no weight. Inputs
of any size are zero-padded to a multiple of ``2 ** len(enc_blk_nums)`` and cropped back, as officially.
Image restoration (no upscaling): takes and returns ``[0, 1]`` RGB, output = input + predicted residual.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spnir.archs.padding import crop_to, pad_to_multiple
from spnir.archs.registry import register_model


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (N, C, H, W) map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class LocalAvgPool2d(nn.Module):
    """Box average with a fixed window, replicate-padded to the input size; global when the window covers it."""

    def __init__(self, kernel_size: tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if torch.compiler.is_exporting():
            return self.integral_average(x)
        if self.kernel_size[0] >= h and self.kernel_size[1] >= w:
            return F.adaptive_avg_pool2d(x, 1)
        k1, k2 = min(h, self.kernel_size[0]), min(w, self.kernel_size[1])
        out = F.avg_pool2d(x, (k1, k2), stride=1)
        dh, dw = h - out.shape[-2], w - out.shape[-1]
        return F.pad(out, (dw // 2, (dw + 1) // 2, dh // 2, (dh + 1) // 2), mode="replicate")

    def integral_average(self, x: torch.Tensor) -> torch.Tensor:
        """The same average from an integral image, without branching on the size: what ONNX export traces
        (the window follows the input size, where ``avg_pool2d`` would fix it)."""
        h, w = x.shape[-2:]
        k1, k2 = torch.sym_min(h, self.kernel_size[0]), torch.sym_min(w, self.kernel_size[1])
        s = F.pad(x.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
        rows, cols = h - k1 + 1, w - k2 + 1
        out = (s[..., k1:, k2:] - s[..., :rows, k2:] - s[..., k1:, :cols] + s[..., :rows, :cols]) / (k1 * k2)
        dh, dw = k1 - 1, k2 - 1
        return F.pad(out, (dw // 2, (dw + 1) // 2, dh // 2, (dh + 1) // 2), mode="replicate")

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class NAFBlock(nn.Module):
    """Nonlinear-activation-free block: depthwise conv, SimpleGate, simplified channel attention, FFN."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv4 = nn.Conv2d(c, ffn_expand * c, 1)
        self.conv5 = nn.Conv2d(ffn_expand * c // 2, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    @staticmethod
    def simple_gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.simple_gate(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        x = self.conv5(self.simple_gate(self.conv4(self.norm2(y))))
        return y + x * self.gamma


def _stage(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(NAFBlock(channels) for _ in range(count)))


class NAFNet(nn.Module):
    """U-Net of NAF blocks with a global residual."""

    def __init__(
        self,
        width: int = 32,
        enc_blk_nums: Sequence[int] = (1, 1, 1, 28),
        middle_blk_num: int = 1,
        dec_blk_nums: Sequence[int] = (1, 1, 1, 1),
        img_channel: int = 3,
        local: bool = False,
        train_size: int = 256,
    ) -> None:
        super().__init__()
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        # attribute order as the official class, so state_dict() lists keys in the same order
        self.encoders, self.decoders = nn.ModuleList(), nn.ModuleList()
        self.middle_blks = nn.Sequential()
        self.ups, self.downs = nn.ModuleList(), nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(_stage(chan, num))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = _stage(chan, middle_blk_num)
        for num in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(_stage(chan, num))
        self.padder_size = 2 ** len(self.encoders)
        if local:
            self._use_local_pooling(train_size)

    def _use_local_pooling(self, train_size: int) -> None:
        """Swap each global pool for a box filter sized, at its depth, like 1.5x the training crop."""
        padded = -(-train_size // self.padder_size) * self.padder_size
        base = int(train_size * 1.5)

        def swap(stage: nn.Module, level: int) -> None:
            side = padded >> level
            kernel = side * base // train_size
            for block in stage.children():
                if isinstance(block, NAFBlock):
                    block.sca[0] = LocalAvgPool2d((kernel, kernel))

        depth = len(self.encoders)
        for level, stage in enumerate(self.encoders):
            swap(stage, level)
        swap(self.middle_blks, depth)
        for i, stage in enumerate(self.decoders):
            swap(stage, depth - 1 - i)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        h, w = inp.shape[-2:]
        inp = pad_to_multiple(inp, self.padder_size, "constant")
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = decoder(up(x) + skip)
        return crop_to(self.ending(x) + inp, h, w)


_GOPRO = dict(enc_blk_nums=(1, 1, 1, 28), middle_blk_num=1, dec_blk_nums=(1, 1, 1, 1))


@register_model(
    "nafnet-width32",
    family="nafnet",
    task="deblur",
    params={None: 17_111_907},
    description="NAFNet, width 32, GoPro configuration (enc 1,1,1,28; middle 1; dec 1,1,1,1); local=True for TLSC test",
)
def nafnet_width32(**overrides) -> NAFNet:
    return NAFNet(**{"width": 32, **_GOPRO, **overrides})


@register_model(
    "nafnet-width64",
    family="nafnet",
    task="deblur",
    params={None: 67_888_835},
    description="NAFNet, width 64, GoPro configuration (enc 1,1,1,28; middle 1; dec 1,1,1,1); local=True for TLSC test",
)
def nafnet_width64(**overrides) -> NAFNet:
    return NAFNet(**{"width": 64, **_GOPRO, **overrides})
