"""DehazeFormer (Song et al., IEEE TIP 2023): a Swin-style U-Net for dehazing, presets -t, -s, -b.

Layer names and shapes follow the official implementation (github.com/IDKiro/DehazeFormer), so its released
``{"state_dict": {"module.<key>": ...}}`` files load as they are with ``spnir.archs.load_checkpoint`` (its
generic unwrapping and ``module.`` stripping cover the format; no family filter is needed). The state_dict
includes each attention's ``relative_positions`` buffer, as the official one does. Only the
depth-wise-convolution variants (the T/S/B/D/W models) are built; M/L's plain-conv branch is not.

Input convention: the official pipeline feeds images scaled to [-1, 1] and its outputs are in [-1, 1].
``signed_range=True`` (the default, what the released weights expect) maps our [0, 1] input to [-1, 1] and the
output back, so ``model(x) == official(2x - 1) / 2 + 0.5``. ``signed_range=False`` runs the network on [0, 1].

Any input size: the image is reflect-padded to a multiple of 4 (the two 2x downsamplings) as the official
forward does, and each attention layer reflect-pads its own features to whole windows. Those reflections
must be narrower than the 1/4-scale features (sides of 25 pixels and more, for window 8); a smaller image,
on which the official code fails, is padded to a multiple of ``4 * window_size`` instead.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spnir.archs.padding import crop_to, pad_to_multiple
from spnir.archs.registry import register_model


def _trunc_normal_xavier_(conv: nn.Conv2d, gain: float = 1.0) -> None:
    """Truncated-normal weights with std ``gain * sqrt(2 / (fan_in + fan_out))``, zero bias (official init)."""
    fan_in = conv.weight.shape[1] * conv.weight[0, 0].numel()
    fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    nn.init.trunc_normal_(conv.weight, std=std, a=-2.0, b=2.0)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class RLN(nn.Module):
    """Rescaled LayerNorm over (C, H, W); also returns the affine that restores the removed statistics."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones((1, dim, 1, 1)))
        self.bias = nn.Parameter(torch.zeros((1, dim, 1, 1)))
        self.meta1 = nn.Conv2d(1, dim, 1)
        self.meta2 = nn.Conv2d(1, dim, 1)
        for meta, bias in ((self.meta1, 1.0), (self.meta2, 0.0)):
            nn.init.trunc_normal_(meta.weight, std=0.02, a=-2.0, b=2.0)
            if meta.bias is not None:
                nn.init.constant_(meta.bias, bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = torch.sqrt((x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True) + self.eps)
        normalized = (x - mean) / std * self.weight + self.bias
        return normalized, self.meta1(std), self.meta2(mean)


class Mlp(nn.Module):
    def __init__(self, network_depth: int, dim: int, hidden_dim: int) -> None:
        super().__init__()
        expand, reduce = nn.Conv2d(dim, hidden_dim, 1), nn.Conv2d(hidden_dim, dim, 1)
        self.mlp = nn.Sequential(expand, nn.ReLU(True), reduce)
        for conv in (expand, reduce):
            _trunc_normal_xavier_(conv, gain=(8 * network_depth) ** (-1 / 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def log_relative_positions(window_size: int) -> torch.Tensor:
    """(N, N, 2) signed log(1 + |dy|), log(1 + |dx|) between all positions of a window (N = window^2)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    return torch.sign(relative) * torch.log(1.0 + relative.abs())


def window_padding_fits(side: int, window_size: int) -> bool:
    """Whether the attention's reflect padding (whole windows, half-window shift) is valid on ``side``."""
    to_whole = (window_size - side % window_size) % window_size
    shift = window_size // 2
    return max(to_whole, shift, (window_size - shift + to_whole) % window_size) < side


class WindowAttention(nn.Module):
    """Multi-head attention inside a window; the relative position bias comes from an MLP on log offsets."""

    relative_positions: torch.Tensor

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        # Persistent: the official state_dicts carry it.
        self.register_buffer("relative_positions", log_relative_positions(window_size))
        self.meta = nn.Sequential(nn.Linear(2, 256, bias=True), nn.ReLU(True), nn.Linear(256, num_heads, bias=True))

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        windows, tokens, _ = qkv.shape
        qkv = qkv.reshape(windows, tokens, 3, self.num_heads, self.dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self.meta(self.relative_positions).permute(2, 0, 1).unsqueeze(0)
        attn = attn.softmax(dim=-1)
        return (attn @ v).transpose(1, 2).reshape(windows, tokens, self.dim)


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, window_size^2, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size**2, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """(B * windows, window_size^2, C) -> (B, H, W, C)."""
    b = windows.shape[0] // ((h // window_size) * (w // window_size))
    x = windows.view(b, h // window_size, w // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


class TokenMixer(nn.Module):
    """Depth-wise 5x5 conv on V, plus (when ``use_attn``) shifted-window attention, then a 1x1 projection.

    Named ``attn`` in the block, as in the official code.
    """

    def __init__(
        self, network_depth: int, dim: int, num_heads: int, window_size: int, shift_size: int, use_attn: bool
    ) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.shift_size = shift_size
        self.use_attn = use_attn
        self.conv = nn.Conv2d(dim, dim, kernel_size=5, padding=2, groups=dim, padding_mode="reflect")
        self.V = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        if use_attn:
            self.QK = nn.Conv2d(dim, dim * 2, 1)
            self.attn = WindowAttention(dim, window_size, num_heads)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                is_qk = module.weight.shape[0] == dim * 2
                _trunc_normal_xavier_(module, gain=1.0 if is_qk else (8 * network_depth) ** (-1 / 4))

    def _pad_to_windows(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        ws, shift = self.window_size, self.shift_size
        pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
        if shift > 0:
            return F.pad(x, (shift, (ws - shift + pad_w) % ws, shift, (ws - shift + pad_h) % ws), mode="reflect")
        return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        v = self.V(x)
        out = self.conv(v)
        if self.use_attn:
            qkv = self._pad_to_windows(torch.cat([self.QK(x), v], dim=1))
            padded_h, padded_w = qkv.shape[2:]
            windows = window_partition(qkv.permute(0, 2, 3, 1), self.window_size)
            attended = window_reverse(self.attn(windows), self.window_size, padded_h, padded_w)
            shift = self.shift_size
            out = out + attended[:, shift : shift + h, shift : shift + w, :].permute(0, 3, 1, 2)
        return self.proj(out)


class TransformerBlock(nn.Module):
    """Token mixer and MLP with residuals; attention blocks are wrapped in RLN and its rescale/rebias."""

    def __init__(
        self,
        network_depth: int,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        shift_size: int,
        use_attn: bool,
    ) -> None:
        super().__init__()
        self.use_attn = use_attn
        if use_attn:
            self.norm1 = RLN(dim)
        self.attn = TokenMixer(network_depth, dim, num_heads, window_size, shift_size, use_attn)
        self.mlp = Mlp(network_depth, dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_attn:
            normalized, rescale, rebias = self.norm1(x)
            x = x + self.attn(normalized) * rescale + rebias
        else:
            x = x + self.attn(x)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """``depth`` blocks; the last ``attn_ratio * depth`` use attention; odd blocks shift windows by half."""

    def __init__(
        self,
        network_depth: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        attn_ratio: float,
    ) -> None:
        super().__init__()
        attn_depth = attn_ratio * depth
        self.blocks = nn.ModuleList(
            TransformerBlock(
                network_depth,
                dim,
                num_heads,
                mlp_ratio,
                window_size,
                shift_size=0 if index % 2 == 0 else window_size // 2,
                use_attn=index >= depth - attn_depth,
            )
            for index in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class PatchEmbed(nn.Module):
    """Strided conv (reflect padding) that embeds or downsamples by ``patch_size``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, kernel_size: int | None = None) -> None:
        super().__init__()
        kernel_size = kernel_size or patch_size
        self.proj = nn.Conv2d(
            in_chans,
            embed_dim,
            kernel_size=kernel_size,
            stride=patch_size,
            padding=(kernel_size - patch_size + 1) // 2,
            padding_mode="reflect",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class PatchUnEmbed(nn.Module):
    """Conv then pixel shuffle: upsamples by ``patch_size`` (or maps features to the output at 1)."""

    def __init__(self, patch_size: int, out_chans: int, embed_dim: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(
                embed_dim,
                out_chans * patch_size**2,
                kernel_size=kernel_size,
                padding=kernel_size // 2,
                padding_mode="reflect",
            ),
            nn.PixelShuffle(patch_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SKFusion(nn.Module):
    """Selective-kernel fusion of two feature maps with softmax weights over the pair, per channel."""

    def __init__(self, dim: int, height: int = 2, reduction: int = 8) -> None:
        super().__init__()
        self.height = height
        hidden = max(int(dim / reduction), 4)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, bias=False), nn.ReLU(), nn.Conv2d(hidden, dim * height, 1, bias=False)
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        b, c, h, w = features[0].shape
        stacked = torch.cat(features, dim=1).view(b, self.height, c, h, w)
        weights = self.mlp(self.avg_pool(stacked.sum(dim=1))).view(b, self.height, c, 1, 1).softmax(dim=1)
        return (stacked * weights).sum(dim=1)


class DehazeFormer(nn.Module):
    """Five-stage U-Net of DehazeFormer blocks predicting K and B of the haze model ``J = K * I - B + I``."""

    def __init__(
        self,
        in_chans: int = 3,
        out_chans: int = 4,
        window_size: int = 8,
        embed_dims: tuple[int, ...] = (24, 48, 96, 48, 24),
        mlp_ratios: tuple[float, ...] = (2.0, 4.0, 4.0, 2.0, 2.0),
        depths: tuple[int, ...] = (16, 16, 16, 8, 8),
        num_heads: tuple[int, ...] = (2, 4, 6, 1, 1),
        attn_ratio: tuple[float, ...] = (1 / 4, 1 / 2, 3 / 4, 0, 0),
        signed_range: bool = True,
    ) -> None:
        super().__init__()
        if embed_dims[1] != embed_dims[3] or embed_dims[0] != embed_dims[4]:
            raise ValueError(f"embed_dims must be symmetric (d0, d1, d2, d1, d0); got {embed_dims}")
        self.patch_size = 4  # total downsampling of the two patch merges
        self.window_size = window_size
        # ONNX export traces the branch taken on larger images (no extra padding): its smallest side
        self.export_min_size = next(
            side for side in range(1, 64 * window_size)
            if all(window_padding_fits(-(-t // self.patch_size), window_size)
                   for t in range(side, side + 2 * self.patch_size * window_size)))
        self.signed_range = signed_range
        network_depth = sum(depths)

        def layer(stage: int) -> BasicLayer:
            return BasicLayer(
                network_depth,
                embed_dims[stage],
                depths[stage],
                num_heads[stage],
                mlp_ratios[stage],
                window_size,
                attn_ratio[stage],
            )

        self.patch_embed = PatchEmbed(1, in_chans, embed_dims[0], kernel_size=3)
        self.layer1 = layer(0)
        self.patch_merge1 = PatchEmbed(2, embed_dims[0], embed_dims[1])
        self.skip1 = nn.Conv2d(embed_dims[0], embed_dims[0], 1)
        self.layer2 = layer(1)
        self.patch_merge2 = PatchEmbed(2, embed_dims[1], embed_dims[2])
        self.skip2 = nn.Conv2d(embed_dims[1], embed_dims[1], 1)
        self.layer3 = layer(2)
        self.patch_split1 = PatchUnEmbed(2, embed_dims[3], embed_dims[2])
        self.fusion1 = SKFusion(embed_dims[3])
        self.layer4 = layer(3)
        self.patch_split2 = PatchUnEmbed(2, embed_dims[4], embed_dims[3])
        self.fusion2 = SKFusion(embed_dims[4])
        self.layer5 = layer(4)
        self.patch_unembed = PatchUnEmbed(1, out_chans, embed_dims[4], kernel_size=3)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.patch_embed(x))
        skip1 = x
        x = self.layer2(self.patch_merge1(x))
        skip2 = x
        x = self.patch_split1(self.layer3(self.patch_merge2(x)))
        x = self.fusion1([x, self.skip2(skip2)]) + x
        x = self.patch_split2(self.layer4(x))
        x = self.fusion2([x, self.skip1(skip1)]) + x
        return self.patch_unembed(self.layer5(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] hazy RGB (N, 3, H, W) -> dehazed RGB of the same size (unclamped), any H and W."""
        h, w = x.shape[2:]
        if self.signed_range:
            x = x * 2 - 1
        x = pad_to_multiple(x, self.patch_size, mode="reflect")
        if not all(window_padding_fits(side // self.patch_size, self.window_size) for side in x.shape[2:]):
            x = pad_to_multiple(x, self.patch_size * self.window_size, mode="reflect")
        k, b = torch.split(self.forward_features(x), [1, 3], dim=1)
        x = crop_to(k * x - b + x, h, w)
        return x * 0.5 + 0.5 if self.signed_range else x


_DESCRIPTION = "DehazeFormer-{0}: embed (24, 48, 96, 48, 24), depths {1}, DWConv, RLN (official {0} model)"


def _dehazeformer(depths: tuple[int, ...], attn_ratio: tuple[float, ...], overrides: dict[str, Any]) -> DehazeFormer:
    arguments: dict[str, Any] = {
        "embed_dims": (24, 48, 96, 48, 24),
        "mlp_ratios": (2.0, 4.0, 4.0, 2.0, 2.0),
        "depths": depths,
        "num_heads": (2, 4, 6, 1, 1),
        "attn_ratio": attn_ratio,
        "window_size": 8,
        "signed_range": True,
    }
    return DehazeFormer(**{**arguments, **overrides})


@register_model(
    "dehazeformer-t",
    family="dehazeformer",
    task="dehaze",
    params={None: 687_404},
    description=_DESCRIPTION.format("T", (4, 4, 4, 2, 2)),
)
def dehazeformer_t(**overrides: Any) -> DehazeFormer:
    return _dehazeformer((4, 4, 4, 2, 2), (0, 1 / 2, 1, 0, 0), overrides)


@register_model(
    "dehazeformer-s",
    family="dehazeformer",
    task="dehaze",
    params={None: 1_284_884},
    description=_DESCRIPTION.format("S", (8, 8, 8, 4, 4)),
)
def dehazeformer_s(**overrides: Any) -> DehazeFormer:
    return _dehazeformer((8, 8, 8, 4, 4), (1 / 4, 1 / 2, 3 / 4, 0, 0), overrides)


@register_model(
    "dehazeformer-b",
    family="dehazeformer",
    task="dehaze",
    params={None: 2_517_612},
    description=_DESCRIPTION.format("B", (16, 16, 16, 8, 8)),
)
def dehazeformer_b(**overrides: Any) -> DehazeFormer:
    return _dehazeformer((16, 16, 16, 8, 8), (1 / 4, 1 / 2, 3 / 4, 0, 0), overrides)
