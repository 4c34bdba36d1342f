"""IDT, the Image Deraining Transformer (Xiao et al., IEEE TPAMI 2022), official deraining configuration.

Layer names and shapes follow the official implementation (github.com/jiexiaou/IDT), so its released files
(a bare DataParallel state_dict, ``module.``-prefixed keys) load as they are with
``spnir.archs.load_checkpoint``, which strips the prefix; no family filter is needed.
Input and output are [0, 1] RGB, as in the official pipeline (no normalisation).

The network is built for one square resolution ``img_size`` (128 in every official training): its spatial
transformers attend across the ``(img_size / 8)^2`` windows of the image with a position table of that
size. Other sizes are restored as the official ``test_full_size.py`` does: overlapping ``img_size`` patches
(``patch_overlap`` pixels apart from the last one, which is aligned to the border) blended with weights
``1 / distance to the patch centre``. An image with a side shorter than ``img_size`` is first
reflect-padded to a multiple of ``img_size`` (the official script cannot process it).
"""
from __future__ import annotations

import math
from itertools import accumulate
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spnir.archs.padding import crop_to, pad_to_multiple
from spnir.archs.registry import register_model
from spnir.archs.swinir import drop_path

# Per layer (encoder 0-3, bottleneck, decoder 0-3): channels as multiples of embed_dim, resolution divisor,
# clamp of relative positions between windows in the spatial transformer (None: no spatial transformer).
_LAYERS = {
    "encoderlayer_0": (1, 1, 16),
    "encoderlayer_1": (2, 2, 8),
    "encoderlayer_2": (4, 4, 4),
    "encoderlayer_3": (8, 8, 2),
    "bottle": (16, 16, None),
    "decoderlayer_0": (16, 8, 2),
    "decoderlayer_1": (8, 4, 4),
    "decoderlayer_2": (4, 2, 8),
    "decoderlayer_3": (2, 1, 16),
}


def linspace(start: float, end: float, steps: int) -> list[float]:
    """``steps`` evenly spaced floats from ``start`` to ``end`` (plain Python: works under a meta device)."""
    if steps == 1:
        return [start]
    return [start + (end - start) * index / (steps - 1) for index in range(steps)]


def relative_position_index(window: int, k_bound: int) -> torch.Tensor:
    """(window^2, window^2) index into a ((2k-1)^2)-row bias table of offsets clamped to |d| < k_bound."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).clamp(-k_bound + 1, k_bound - 1)
    relative = relative.permute(1, 2, 0) + (k_bound - 1)
    return relative[:, :, 0] * (2 * k_bound - 1) + relative[:, :, 1]


class LinearProjection(nn.Module):
    """Q from one linear layer; K, V and a second V (fed to the positional branch) from another."""

    def __init__(self, dim: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_kv = nn.Linear(dim, dim * 3, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        side = math.isqrt(n)
        q = self.to_q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        k, v, v_pos = self.to_kv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        v_pos = v_pos.transpose(-1, -2).reshape(b, c, side, side)
        return q, k, v, v_pos


class WindowAttention(nn.Module):
    """Multi-head self-attention over a square ``window`` of tokens with a clamped relative position bias,
    plus a convolutional positional branch on the second V laid out as an image."""

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True, k_bound: int = 8) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * k_bound - 1) ** 2, num_heads))
        distance = min(window - 1, 2)
        self.Position_Extract = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=2 * distance + 1, padding=distance, groups=dim),
            nn.Conv2d(dim, dim, kernel_size=1, groups=num_heads),
        )
        self.register_buffer("relative_position_index", relative_position_index(window, k_bound), persistent=False)
        self.qkv = LinearProjection(dim, num_heads, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02, a=-2.0, b=2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v, v_pos = self.qkv(x)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = (attn + bias.permute(2, 0, 1).unsqueeze(0)).softmax(dim=-1)
        position = self.Position_Extract(v_pos).reshape(b, c, n).transpose(-2, -1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c) + position)


class LeFF(nn.Module):
    """Locally enhanced feed-forward: linear, GELU, residual depth-wise 3x3 conv + GELU, linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU())
        self.dwconv = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, groups=hidden_dim, kernel_size=3, stride=1, padding=1), nn.GELU()
        )
        self.linear2 = nn.Sequential(nn.Linear(hidden_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        side = math.isqrt(n)
        x = self.linear1(x)
        image = x.transpose(1, 2).reshape(b, -1, side, side)
        x = (self.dwconv(image) + image).flatten(2).transpose(1, 2)
        return self.linear2(x)


class WindowTransformerBlock(nn.Module):
    """Window self-attention and LeFF on (B, side^2, C) tokens, pre-norm, residual (IDT's window block)."""

    def __init__(self, dim: int, side: int, num_heads: int, win_size: int, mlp_ratio: float, qkv_bias: bool,
                 drop_path_rate: float) -> None:
        super().__init__()
        self.win_size = min(win_size, side)
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, self.win_size, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LeFF(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        side, win = math.isqrt(n), self.win_size
        windows = self.norm1(x).view(b, side // win, win, side // win, win, c)
        windows = windows.permute(0, 1, 3, 2, 4, 5).reshape(-1, win * win, c)
        out = self.attn(windows).view(b, side // win, side // win, win, win, c)
        out = out.permute(0, 1, 3, 2, 4, 5).reshape(b, n, c)
        x = x + drop_path(out, self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


class SpatialTransformerBlock(nn.Module):
    """Attention *across* the 8x8 windows: each channel's windows are tokens of 64 pixel values.

    The attention output is laid out window-major before the residual sum, exactly as the official code
    does (so tokens are not in raster order there); trained weights depend on that.
    """

    def __init__(self, channels: int, side: int, num_heads: int, mlp_ratio: float, qkv_bias: bool,
                 drop_path_rate: float, k_bound: int, win_size: int = 8) -> None:
        super().__init__()
        self.win = win_size
        self.drop_path_rate = drop_path_rate
        dim = win_size * win_size
        self.attn = WindowAttention(dim, side // win_size, num_heads, qkv_bias, k_bound)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = LeFF(channels, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        side, win = math.isqrt(n), self.win
        windows = (side // win) ** 2
        image = x.transpose(1, 2).reshape(b, c, side, side)
        tokens = F.unfold(image, win, stride=win).reshape(b * c, win * win, windows).transpose(1, 2)
        out = self.attn(tokens).reshape(b, c, windows, win * win).permute(0, 2, 3, 1).reshape(b, n, c)
        x = x + drop_path(out, self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


class IDTLayer(nn.Module):
    """``depth`` window blocks, then (except in the bottleneck) one spatial transformer block."""

    def __init__(self, dim: int, side: int, depth: int, num_heads: int, win_size: int, mlp_ratio: float,
                 qkv_bias: bool, drop_path_rates: list[float], k_bound: int | None) -> None:
        super().__init__()
        blocks: list[nn.Module] = [
            WindowTransformerBlock(dim, side, num_heads, win_size, mlp_ratio, qkv_bias, drop_path_rates[0])
            for _ in range(depth)
        ]
        if k_bound is not None:
            blocks.append(
                SpatialTransformerBlock(dim, side, num_heads, mlp_ratio, qkv_bias, drop_path_rates[-1], k_bound)
            )
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class TokenConv(nn.Module):
    """Layers (under the attribute name ``attr``) applied to an image, with (B, side^2, C) token views of
    the input (``tokens_in``) and/or of the output (``tokens_out``)."""

    def __init__(self, attr: str, *layers: nn.Module, tokens_in: bool = True, tokens_out: bool = True) -> None:
        super().__init__()
        self.attr = attr
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out
        self.add_module(attr, nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens_in:
            b, n, c = x.shape
            side = math.isqrt(n)
            x = x.transpose(1, 2).reshape(b, c, side, side)
        out = getattr(self, self.attr)(x)
        return out.flatten(2).transpose(1, 2) if self.tokens_out else out


def patch_starts(length: int, patch: int, overlap: int) -> list[int]:
    """Top-left offsets of ``patch``-long windows covering ``length`` (official full-size split)."""
    starts = list(range(0, length, patch - overlap))
    while starts and starts[-1] + patch >= length:
        starts.pop()
    return starts + [length - patch]


def inverse_distance_weights(patch: int) -> torch.Tensor:
    """(patch, patch) blending weights 1 / distance to the patch centre, as the official merge uses."""
    coords = torch.arange(patch, dtype=torch.float64) - patch / 2
    distance = torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2 + 1e-3)
    return (1.0 / distance).float()


class IDT(nn.Module):
    """Image Deraining Transformer: a 4-level U-Net of window and spatial transformer layers."""

    def __init__(
        self,
        img_size: int = 128,
        in_chans: int = 3,
        embed_dim: int = 32,
        depths: tuple[int, ...] = (3, 3, 2, 2, 1, 1, 2, 2, 3),
        num_heads: tuple[int, ...] = (1, 2, 4, 8, 16, 16, 8, 4, 2),
        win_size: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        patch_overlap: int = 20,
    ) -> None:
        super().__init__()
        if img_size % (8 * win_size) != 0:
            raise ValueError(f"img_size must be a multiple of {8 * win_size} (8 windows at 1/8 scale); got {img_size}")
        if not 0 <= patch_overlap < img_size:
            raise ValueError(f"patch_overlap must be in [0, {img_size}); got {patch_overlap}")
        self.img_size = img_size
        self.patch_overlap = patch_overlap
        self.export_min_size = img_size  # the exported graph tiles without padding
        self.input_proj = TokenConv(
            "proj", nn.Conv2d(in_chans, embed_dim, 3, padding=1), nn.LeakyReLU(inplace=True), tokens_in=False
        )
        self.output_proj = TokenConv("proj", nn.Conv2d(2 * embed_dim, in_chans, 3, padding=1), tokens_out=False)

        encoder_rates = linspace(0.0, drop_path_rate, sum(depths[:4]))
        decoder_rates = encoder_rates[::-1]
        bounds = [0, *accumulate(depths)]
        previous_width = 0
        for index, (name, (width, divisor, k_bound)) in enumerate(_LAYERS.items()):
            if index < 4:
                rates = encoder_rates[bounds[index] : bounds[index + 1]]
            elif index == 4:
                rates = [drop_path_rate] * depths[4]
            else:
                rates = decoder_rates[bounds[index] - bounds[5] : bounds[index + 1] - bounds[5]]
                # Upsampling to half this layer's width; its output is concatenated with the encoder skip.
                upsample = nn.ConvTranspose2d(embed_dim * previous_width, embed_dim * width // 2, 2, stride=2)
                self.add_module(f"upsample_{index - 5}", TokenConv("deconv", upsample))
            layer = IDTLayer(embed_dim * width, img_size // divisor, depths[index], num_heads[index], win_size,
                             mlp_ratio, qkv_bias, rates, k_bound)
            self.add_module(name, layer)
            if index < 4:
                downsample = nn.Conv2d(embed_dim * width, embed_dim * width * 2, kernel_size=4, stride=2, padding=1)
                self.add_module(f"dowsample_{index}", TokenConv("conv", downsample))
            previous_width = width
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.zeros_(module.bias)
            nn.init.ones_(module.weight)

    def forward_patch(self, x: torch.Tensor) -> torch.Tensor:
        """The network on (N, C, img_size, img_size) input."""
        y = self.input_proj(x)
        skips = []
        for index in range(4):
            y = self.get_submodule(f"encoderlayer_{index}")(y)
            skips.append(y)
            y = self.get_submodule(f"dowsample_{index}")(y)
        y = self.get_submodule("bottle")(y)
        for index in range(4):
            y = torch.cat([self.get_submodule(f"upsample_{index}")(y), skips[3 - index]], dim=-1)
            y = self.get_submodule(f"decoderlayer_{index}")(y)
        return x + self.output_proj(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] rainy RGB (N, 3, H, W) -> derained RGB of the same size, any H and W."""
        if torch.compiler.is_exporting():
            return self.forward_tiles_batched(x)
        size = self.img_size
        height, width = x.shape[2:]
        if height == width == size:
            return self.forward_patch(x)
        padded = pad_to_multiple(x, size, mode="reflect") if min(height, width) < size else x
        weights = inverse_distance_weights(size).to(x)
        merged = torch.zeros_like(padded)
        total = torch.zeros_like(padded[:, :1])
        for top in patch_starts(padded.shape[2], size, self.patch_overlap):
            for left in patch_starts(padded.shape[3], size, self.patch_overlap):
                patch = self.forward_patch(padded[:, :, top : top + size, left : left + size])
                merged[:, :, top : top + size, left : left + size] += weights * patch
                total[:, :, top : top + size, left : left + size] += weights
        return crop_to(merged / total, height, width)

    def forward_tiles_batched(self, x: torch.Tensor) -> torch.Tensor:
        """The full-size split of :meth:`forward` as index arithmetic on the size, all patches in one batch:
        what ONNX export traces, so that the number of patches follows the input size (``forward``'s loops
        would fix it). Needs sides of at least ``img_size`` (no padding)."""
        size = self.img_size
        n, c, height, width = x.shape
        rows = patch_indices(height, size, self.patch_overlap)  # (patches down, size)
        cols = patch_indices(width, size, self.patch_overlap)  # (patches across, size)
        grid = x[:, :, rows][..., cols]  # n, c, rows, size, cols, size
        patches = grid.permute(0, 2, 4, 1, 3, 5).reshape(-1, c, size, size)
        weights = inverse_distance_weights(size).to(x)
        restored = self.forward_patch(patches) * weights
        restored = restored.reshape(n, rows.shape[0], cols.shape[0], c, size, size).permute(0, 3, 1, 4, 2, 5)
        where = (rows[:, :, None, None] * width + cols[None, None]).reshape(1, 1, -1)
        merged = x.new_zeros(n, c, height * width).scatter_add_(2, where.expand(n, c, -1), restored.reshape(n, c, -1))
        spread = weights[None, :, None, :].expand(rows.shape[0], size, cols.shape[0], size).reshape(1, 1, -1)
        total = x.new_zeros(1, 1, height * width).scatter_add_(2, where, spread)
        return (merged / total).reshape(n, c, height, width)


def patch_indices(length: int, patch: int, overlap: int) -> torch.Tensor:
    """(count, patch) pixel indices of the windows :func:`patch_starts` places, from tensor arithmetic."""
    stride = patch - overlap
    count = (length - patch + stride - 1) // stride + 1
    starts = (torch.arange(count) * stride).clamp(max=length - patch)
    return starts[:, None] + torch.arange(patch)


@register_model(
    "idt",
    family="idt",
    task="derain",
    params={None: 16_416_463},
    description="IDT, embed 32, 128x128 patches, window 8 (official deraining configuration)",
)
def idt(**overrides: Any) -> IDT:
    arguments: dict[str, Any] = {
        "img_size": 128,
        "embed_dim": 32,
        "depths": (3, 3, 2, 2, 1, 1, 2, 2, 3),
        "num_heads": (1, 2, 4, 8, 16, 16, 8, 4, 2),
        "win_size": 8,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
    }
    return IDT(**{**arguments, **overrides})
