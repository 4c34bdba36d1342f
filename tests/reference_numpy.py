"""Straightforward numpy versions of MATLAB's bicubic imresize, BT.601 luma, PSNR and SSIM.

Written from the definitions (one output row / one window offset at a time), for clarity rather than speed:
the tests check spnir's batched torch code against them, and bench/bench_eval.py times both side by side.
"""
from __future__ import annotations

import math

import numpy as np


def _cubic(x: float) -> float:
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax**3 - 2.5 * ax**2 + 1
    if ax <= 2:
        return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return 0.0


def _mirror(index: int, length: int) -> int:
    """0-based index reflected into [0, length) the way MATLAB pads ('symmetric', period 2 * length)."""
    index %= 2 * length
    return index if index < length else 2 * length - 1 - index


def _resize_rows(img: np.ndarray, scale: float) -> np.ndarray:
    """Resize axis 0 of a 2-D float64 array."""
    in_len = img.shape[0]
    out_len = int(math.ceil(round(in_len * scale, 9)))
    stretch = scale < 1
    width = 4.0 / scale if stretch else 4.0
    out = np.zeros((out_len, img.shape[1]))
    for i in range(out_len):
        centre = (i + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate
        first = math.floor(centre - width / 2)
        taps = range(first, first + math.ceil(width) + 2)
        weights = [scale * _cubic((centre - j) * scale) if stretch else _cubic(centre - j) for j in taps]
        total = sum(weights)
        for j, w in zip(taps, weights):
            out[i] += (w / total) * img[_mirror(j - 1, in_len)]
    return out


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` of an ``(H, W)`` or ``(H, W, C)`` float array, in float64."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3:
        return np.stack([imresize(img[..., c], scale) for c in range(img.shape[2])], axis=2)
    return _resize_rows(_resize_rows(img, scale).T, scale).T


def rgb_to_y(img: np.ndarray, rounded: bool) -> np.ndarray:
    """``(H, W, 3)`` RGB 0..255 -> ``(H, W)`` luma; ``rounded`` as MATLAB's rgb2ycbcr on uint8."""
    img = img.astype(np.float64)
    y = 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0
    return np.floor(y + 0.5) if rounded else y


def _prepare(a: np.ndarray, b: np.ndarray, crop: int, y: bool, rounded: bool) -> tuple[np.ndarray, np.ndarray]:
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    if y:
        return rgb_to_y(a, rounded)[..., None], rgb_to_y(b, rounded)[..., None]
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, crop: int = 0, y: bool = False, rounded: bool = False) -> float:
    a, b = _prepare(a, b, crop, y, rounded)
    return 10 * math.log10(255.0**2 / np.mean((a - b) ** 2))


def _filter_valid(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """2-D 'valid' filtering: every 11x11 neighbourhood weighted by ``window``."""
    return np.einsum("ijkl,kl->ij", np.lib.stride_tricks.sliding_window_view(img, window.shape), window)


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _filter_valid(a, window), _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - mu_a**2
    var_b = _filter_valid(b * b, window) - mu_b**2
    cov = _filter_valid(a * b, window) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(a: np.ndarray, b: np.ndarray, crop: int = 0, y: bool = False, rounded: bool = False) -> float:
    a, b = _prepare(a, b, crop, y, rounded)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))
