"""MATLAB's ``imresize(img, scale, 'bicubic')`` in torch: the resize behind every SR benchmark's LR images.

What makes it MATLAB's and not ``F.interpolate(mode='bicubic')``:
- the cubic kernel with ``a = -0.5`` (Keys), weights normalised to sum to one per output pixel;
- when downscaling, the kernel is stretched by ``1 / scale`` (antialiasing), so every input pixel under it counts;
- output size ``ceil(in * scale)``, coordinates mapped so pixel centres line up (``u = x / s + (1 - 1 / s) / 2``);
- borders mirrored symmetrically (``... 2 1 0 | 0 1 2 ...``), also when the kernel is wider than the image;
- rows are resized first, then columns (MATLAB's order when both scales are equal).

Each axis is one matrix product with a banded ``(out, in)`` weight matrix, so a batch resizes in two BLAS calls.

The result is not rounded: benchmark LR files are this output rounded to 8 bit, which the caller does.
"""
from __future__ import annotations

import math

import torch

from spnir.errors import SpnirError

_KERNEL_WIDTH = 4.0  # support of the cubic kernel, in input pixels at scale 1


def output_length(in_length: int, scale: float) -> int:
    """``ceil(in_length * scale)`` as MATLAB computes it, immune to ``1/3 * 9 = 2.9999999999999996``."""
    return int(math.ceil(round(in_length * scale, 9)))


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def contributions(
    in_length: int, out_length: int, scale: float, antialiasing: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which input pixels feed each output pixel, and with what weight, along one axis.

    Returns ``(indices, weights)``, both ``(out_length, taps)``: 0-based input indices already mirrored into
    ``[0, in_length)`` and float64 weights whose rows sum to one.
    """
    stretch = scale < 1 and antialiasing
    width = _KERNEL_WIDTH / scale if stretch else _KERNEL_WIDTH
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output pixel centre
    left = torch.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * cubic(distance * scale) if stretch else cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # MATLAB's symmetric border: period 2n, second half mirrored (index -1 -> 0, n -> n - 1).
    period = 2 * in_length
    zero_based = torch.remainder(indices.long() - 1, period)
    zero_based = torch.where(zero_based >= in_length, period - 1 - zero_based, zero_based)
    return zero_based, weights


def resize_matrix(in_length: int, out_length: int, scale: float, antialiasing: bool = True) -> torch.Tensor:
    """The ``(out_length, in_length)`` float64 matrix that resizes one axis (mirrored taps accumulated)."""
    indices, weights = contributions(in_length, out_length, scale, antialiasing)
    rows = torch.arange(out_length)[:, None].expand_as(indices)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    return matrix.index_put_((rows.reshape(-1), indices.reshape(-1)), weights.reshape(-1), accumulate=True)


@torch.no_grad()
def imresize(img: torch.Tensor, scale: float, antialiasing: bool = True) -> torch.Tensor:
    """Resize ``(C, H, W)`` or ``(N, C, H, W)`` float images by ``scale`` like MATLAB's bicubic ``imresize``.

    Output is ``ceil(H * scale) x ceil(W * scale)``, same dtype and device, not clamped nor rounded.
    """
    if not isinstance(img, torch.Tensor) or img.dim() not in (3, 4):
        shape = tuple(img.shape) if hasattr(img, "shape") else type(img).__name__
        raise SpnirError(f"imresize expects a (C, H, W) or (N, C, H, W) tensor, got {shape}")
    if not img.is_floating_point():
        raise SpnirError(f"imresize expects a float tensor (values in [0, 1]), got {img.dtype}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise SpnirError(f"imresize scale must be a positive number, got {scale!r}")
    height, width = img.shape[-2:]
    rows = resize_matrix(height, output_length(height, scale), scale, antialiasing)
    cols = resize_matrix(width, output_length(width, scale), scale, antialiasing)
    rows, cols = (m.to(device=img.device, dtype=img.dtype) for m in (rows, cols))
    return torch.matmul(torch.matmul(rows, img), cols.T)  # rows first, then columns, as MATLAB
