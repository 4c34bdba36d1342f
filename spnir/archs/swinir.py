"""SwinIR (Liang et al., ICCVW 2021) for classical and lightweight SR, with the official layer names.

State-dict keys and shapes equal the official ``network_swinir.py`` / BasicSR ``swinir_arch.py``,
including the two derived buffers those files store: each attention's ``relative_position_index`` and,
in every shifted block, the ``attn_mask`` for an ``img_size`` x ``img_size`` input (the training patch:
48 or 64 in the official trainings, hence the ``img_size`` override). Both are recomputed from
``img_size``/``window_size`` and never learned, so the checkpoint filter takes them from the model and a
file trained at another ``img_size`` loads too. Inputs of any size are reflect-padded to a multiple of
the window and the output is cropped, as the official forward does. Takes and returns ``[0, 1]`` RGB;
internally ``(x - rgb_mean) * img_range`` with ``img_range`` 1, as the official SR configurations.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spnir.archs.edsr import DIV2K_RGB_MEAN
from spnir.archs.padding import crop_to, pad_to_multiple
from spnir.archs.registry import StateDict, register_checkpoint_filter, register_model
from spnir.archs.upsample import OneStepUpsample, PixelShuffleUpsample
from spnir.errors import SpnirError

DERIVED_BUFFERS = ("attn_mask", "relative_position_index")


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the residual branch of whole samples with probability ``rate``."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window * window, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, window * window, C) -> (B, H, W, C); inverse of :func:`window_partition`."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²) index into the (2·window−1)² relative-position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """(nW, window², window²) additive mask: -100 between tokens from different regions after the shift."""
    regions = torch.zeros(1, h, w, 1)
    label = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[:, hs, ws, :] = label
            label += 1
    labels = window_partition(regions, window).squeeze(-1)
    diff = labels.unsqueeze(1) - labels.unsqueeze(2)
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v: PyTorch's fused kernel, or the plain product for ONNX export (with
    symbolic sizes, the decomposed fused kernel's output layout makes the export fail)."""
    if not torch.compiler.is_exporting():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    weights = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias
    return weights.softmax(dim=-1) @ v


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative-position bias."""

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # 1, heads, n, n
        if mask is not None:  # group the windows of each image so the (nW, ...) mask broadcasts over images
            nw = mask.shape[0]
            q, k, v = (t.reshape(bw // nw, nw, *t.shape[1:]) for t in (q, k, v))
            bias = bias + mask.unsqueeze(1)  # nW, heads, n, n
        out = attention(q, k, v, bias.to(q.dtype))
        return self.proj(out.reshape(bw, self.num_heads, n, -1).transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention and MLP, each with a pre-LayerNorm and a residual connection."""

    attn_mask: torch.Tensor | None

    def __init__(
        self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float, drop_path: float,
        img_size: int,
    ) -> None:
        super().__init__()
        self.window, self.shift, self.drop_path = window, shift, drop_path
        self.register_buffer("attn_mask", shifted_window_mask(img_size, img_size, window, shift) if shift else None)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x``: (B, H, W, C); ``mask``: the shifted-window mask for this H, W (ignored when not shifted)."""
        b, h, w, c = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), mask if self.shift else None)
        y = window_merge(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + drop_path(y, self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class ResidualGroup(nn.Module):
    """The transformer blocks of one RSTB (official name: ``residual_group.blocks``)."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class RSTB(nn.Module):
    """Residual Swin Transformer Block: transformer blocks, a 3x3 conv, and a long skip."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 drop_paths: Sequence[float], img_size: int) -> None:
        super().__init__()
        self.residual_group = ResidualGroup(
            [
                SwinTransformerBlock(dim, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio,
                                     drop_paths[i], img_size)
                for i in range(depth)
            ]
        )
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x``: (B, H, W, C) tokens."""
        y = x
        for block in self.residual_group.blocks:
            y = block(y, mask)
        y = self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + y


class PatchNorm(nn.Module):
    """LayerNorm over the embedded tokens (official name: ``patch_embed.norm``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)


class SwinIR(nn.Module):
    """SwinIR for SR: shallow conv, residual Swin transformer groups, sub-pixel reconstruction."""

    mean: torch.Tensor

    def __init__(
        self,
        scale: int,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        upsampler: str = "pixelshuffle",
        img_size: int = 48,
        img_range: float = 1.0,
        drop_path_rate: float = 0.1,
        num_feat: int = 64,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise SpnirError(f"SwinIR: depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        if img_size <= window_size or img_size % window_size:
            raise SpnirError(f"SwinIR: img_size={img_size} must be a multiple of window_size={window_size} above it")
        if upsampler not in ("pixelshuffle", "pixelshuffledirect"):
            raise SpnirError(f"SwinIR: upsampler must be 'pixelshuffle' or 'pixelshuffledirect', got {upsampler!r}")
        self.scale, self.window_size, self.img_range, self.upsampler = scale, window_size, img_range, upsampler
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = PatchNorm(embed_dim)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear stochastic-depth decay
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            RSTB(embed_dim, d, h, window_size, mlp_ratio, rates[s:s + d], img_size)
            for d, h, s in zip(depths, num_heads, starts)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(0.01))
            self.upsample: nn.Module = PixelShuffleUpsample(scale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)
        else:
            self.upsample = OneStepUpsample(scale, embed_dim, 3)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        half = self.window_size // 2
        mask = shifted_window_mask(h, w, self.window_size, half).to(x.device, x.dtype)
        tokens = self.patch_embed.norm(x.permute(0, 2, 3, 1))
        for layer in self.layers:
            tokens = layer(tokens, mask)
        return self.norm(tokens).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        mean = self.mean.to(x.dtype)
        x = (pad_to_multiple(x, self.window_size, "reflect") - mean) * self.img_range
        feat = self.conv_first(x)
        feat = feat + self.conv_after_body(self.forward_features(feat))
        if self.upsampler == "pixelshuffle":
            out = self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        else:
            out = self.upsample(feat)
        return crop_to(out / self.img_range + mean, h * self.scale, w * self.scale)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@register_checkpoint_filter("swinir")
def swinir_checkpoint_filter(state: StateDict, model: nn.Module) -> StateDict:
    """Take the derived buffers (attention masks, position indices) from ``model``, not the file."""
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] not in DERIVED_BUFFERS}
    kept.update({k: v for k, v in own.items() if k.rsplit(".", 1)[-1] in DERIVED_BUFFERS})
    return kept


@register_model(
    "swinir-light",
    family="swinir",
    task="sr",
    scales=(2, 3, 4),
    params={2: 910_152, 3: 918_267, 4: 929_628},
    description="SwinIR lightweight: embed 60, depths 6x4, heads 6, window 8, mlp 2, pixelshuffledirect, img_size 64",
)
def swinir_light(scale: int, **overrides) -> SwinIR:
    config = dict(embed_dim=60, depths=(6,) * 4, num_heads=(6,) * 4, window_size=8, mlp_ratio=2.0,
                  upsampler="pixelshuffledirect", img_size=64)
    return SwinIR(scale, **{**config, **overrides})


@register_model(
    "swinir",
    family="swinir",
    task="sr",
    scales=(2, 3, 4),
    params={2: 11_752_487, 3: 11_937_127, 4: 11_900_199},
    description="SwinIR classical SR: embed 180, depths 6x6, heads 6, window 8, mlp 2, pixelshuffle, img_size 48",
)
def swinir(scale: int, **overrides) -> SwinIR:
    config = dict(embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=8, mlp_ratio=2.0,
                  upsampler="pixelshuffle", img_size=48)
    return SwinIR(scale, **{**config, **overrides})
