"""MATLAB's ``imresize(img, scale, 'bicubic')`` in torch: the resize behind every SR benchmark's LR images.

What makes it MATLAB's and not ``F.interpolate(mode='bicubic')``:
- the cubic kernel with ``a = -0.5`` (Keys), weights normalised to sum to one per output pixel;
- when downscaling, the kernel is stretched by ``1 / scale`` (antialiasing), so every input pixel under it counts;
- output size ``ceil(in * scale)``, coordinates mapped so pixel centres line up (``u = x / s + (1 - 1 / s) / 2``);
- borders mirrored symmetrically (``... 2 1 0 | 0 1 2 ...``), also when the kernel is wider than the image;
- rows are resized first, then columns (MATLAB's order when both scales are equal).

Each axis is a product with the ``(out, in)`` weight matrix of that axis, which is banded: an output pixel has
only ``taps`` (4 to ~18) non-zero weights. On CPU the product is taken band by band (blocks of 16 or 32
output pixels times the input pixels they touch): ~5x faster than the dense product at
1024 px (bench/bench_eval.py), with the bands cached per axis geometry. On other devices it stays one dense
product (the band split was measured on CPU only). Weights are computed in float64 and cast to the image's
dtype.

The result is not rounded: benchmark LR files are this output rounded to 8 bit, which the caller does.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch

from spnir.errors import SpnirError

_KERNEL_WIDTH = 4.0  # support of the cubic kernel, in input pixels at scale 1
# Output pixels per band on CPU, fastest at 1024 px (bench/bench_eval.py): small bands when downscaling,
# where each output pixel reads many input pixels.
_CPU_BAND_ROWS_DOWN, _CPU_BAND_ROWS_UP = 16, 32


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


class _Band(NamedTuple):
    """Output pixels ``[out_start, out_stop)`` of one axis = ``weights @ input[in_start:in_stop]``."""

    out_start: int
    out_stop: int
    in_start: int
    in_stop: int
    weights: torch.Tensor  # (out_stop - out_start, in_stop - in_start)


def _resize_bands(
    in_length: int, out_length: int, scale: float, antialiasing: bool, band_rows: int
) -> tuple[_Band, ...]:
    """The resize matrix of one axis cut into bands of ``band_rows`` output pixels, each restricted to the
    input pixels it touches (float64 weights on CPU)."""
    indices, weights = contributions(in_length, out_length, scale, antialiasing)
    bands = []
    for start in range(0, out_length, band_rows):
        stop = min(start + band_rows, out_length)
        band_indices = indices[start:stop]
        lo, hi = int(band_indices.min()), int(band_indices.max()) + 1
        rows = torch.arange(stop - start)[:, None].expand_as(band_indices)
        matrix = torch.zeros(stop - start, hi - lo, dtype=torch.float64)
        matrix.index_put_((rows.reshape(-1), (band_indices - lo).reshape(-1)), weights[start:stop].reshape(-1),
                          accumulate=True)
        bands.append(_Band(start, stop, lo, hi, matrix))
    return tuple(bands)


# CPU band plans are small (out x ~band span) and building them is ~5% of a 1024 px x4 down+up: cache them.
# Dense plans (one band, out x in) are rebuilt per call, as they can be large.
_cached_resize_bands = functools.lru_cache(maxsize=32)(_resize_bands)


def _resize_axis(img: torch.Tensor, axis: int, scale: float, antialiasing: bool) -> torch.Tensor:
    """Resize dim ``axis`` (-2: rows, -1: columns) of ``img``, band by band."""
    in_length = img.shape[axis]
    out_length = output_length(in_length, scale)
    if img.device.type == "cpu":
        band_rows = _CPU_BAND_ROWS_DOWN if scale < 1 else _CPU_BAND_ROWS_UP
        bands = _cached_resize_bands(in_length, out_length, scale, antialiasing, band_rows)
    else:
        bands = _resize_bands(in_length, out_length, scale, antialiasing, band_rows=out_length)
    shape = list(img.shape)
    shape[axis] = out_length
    out = img.new_empty(shape)
    for band in bands:
        weights = band.weights.to(device=img.device, dtype=img.dtype)
        if axis == -2:
            rows = img[..., band.in_start : band.in_stop, :]
            out[..., band.out_start : band.out_stop, :] = torch.matmul(weights, rows)
        else:
            out[..., band.out_start : band.out_stop] = torch.matmul(img[..., band.in_start : band.in_stop], weights.T)
    return out


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
    rows_resized = _resize_axis(img, -2, scale, antialiasing)  # rows first, then columns, as MATLAB
    return _resize_axis(rows_resized, -1, scale, antialiasing)
