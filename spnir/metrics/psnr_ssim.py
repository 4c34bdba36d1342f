"""PSNR and SSIM as SR/restoration papers compute them, batched in torch (float64).

Inputs are RGB images, either a numpy ``(H, W, 3)`` uint8 array (one image) or a torch ``(N, C, H, W)`` /
``(C, H, W)`` float tensor in ``[0, 1]``. Float tensors are first rounded to 8 bit exactly as an image saved
to disk would be (``round(clamp(x, 0, 1) * 255)``, BasicSR's ``tensor2img``), because published numbers are
computed on 8-bit results; pass ``quantize=False`` to measure the raw floats.

Options:
- ``crop_border``: pixels ignored on each edge (SR papers use the scale factor);
- ``y_channel``: measure the luma ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (ITU-R BT.601) only;
- ``convention``: how Y is formed, the one thing on which the field's two traditions differ:
  ``"basicsr"``: Y kept as float64, not rounded (BasicSR's ``calculate_psnr/ssim(test_y_channel=True)``, what
  PyTorch frameworks report); ``"matlab"``: Y rounded to 8 bit, as MATLAB's ``rgb2ycbcr`` does on uint8 images
  (the bicubic rows of the classic SR tables). Without ``y_channel`` both conventions are identical.

SSIM is Wang et al.'s: 11x11 Gaussian window (sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``, 'valid'
filtering, averaged over the map and, for RGB, over the three channels.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from spnir.errors import SpnirError

Convention = Literal["basicsr", "matlab"]
CONVENTIONS: tuple[str, ...] = ("basicsr", "matlab")
Image = np.ndarray | torch.Tensor

_Y_WEIGHTS = (65.481, 128.553, 24.966)  # BT.601 luma of RGB in [0, 255], divided by 255 below
_SSIM_WINDOW, _SSIM_SIGMA = 11, 1.5
_SSIM_C1, _SSIM_C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
_SSIM_STRIP_ROWS = 32  # SSIM map rows per strip on CPU (bench/bench_eval.py: 16 to 64 are about equally fast)


def _as_nchw(img: Image) -> torch.Tensor:
    """An accepted image as an ``(N, C, H, W)`` tensor, not converted: uint8 (numpy input) or float in [0, 1]."""
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise SpnirError(f"numpy images must be uint8 (H, W, C) with values 0..255, got dtype {img.dtype}")
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3:
            raise SpnirError(f"numpy images must be (H, W, C), got shape {img.shape}")
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    if isinstance(img, torch.Tensor):
        if img.dim() == 3:
            img = img[None]
        if img.dim() != 4:
            raise SpnirError(f"image tensors must be (N, C, H, W) or (C, H, W), got shape {tuple(img.shape)}")
        if not img.is_floating_point():
            raise SpnirError(f"image tensors must be float in [0, 1], got dtype {img.dtype}")
        return img.detach()
    raise SpnirError(f"expected a numpy uint8 image or a torch tensor, got {type(img).__name__}")


def _pixels(img: torch.Tensor, quantize: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """float64 pixel values of a tensor from :func:`_as_nchw` (rounded to 8 bit when ``quantize``), written
    into ``out`` when given."""
    pixels = img.to(torch.float64, copy=True) if out is None else out.copy_(img)
    if img.dtype == torch.uint8:
        return pixels
    return pixels.clamp_(0, 1).mul_(255.0).round_() if quantize else pixels.mul_(255.0)


def rgb_to_y(pixels: torch.Tensor, convention: Convention = "basicsr") -> torch.Tensor:
    """``(N, 3, H, W)`` RGB in ``[0, 255]`` -> ``(N, 1, H, W)`` BT.601 luma in ``[16, 235]``.

    ``"matlab"`` rounds to 8 bit half away from zero, as MATLAB's ``rgb2ycbcr`` on uint8; single-channel
    input is returned as is.
    """
    _check_convention(convention)
    if _check_y_channels(pixels) == 1:
        return pixels
    return _luma(lambda c, out: pixels[:, c : c + 1].clone() if out is None else out.copy_(pixels[:, c : c + 1]),
                 convention)


def _check_y_channels(img: torch.Tensor) -> int:
    if img.shape[1] not in (1, 3):
        raise SpnirError(f"Y channel needs RGB images (3 channels), got {img.shape[1]} channels")
    return img.shape[1]


def _luma(channel: Callable[[int, torch.Tensor | None], torch.Tensor], convention: Convention) -> torch.Tensor:
    """``(w0 R + w1 G + w2 B) / 255 + 16`` (rounded for ``"matlab"``) from ``channel(c, out)``: channel ``c`` as
    a new float64 ``(N, 1, H, W)`` tensor, or written into ``out``. One channel at a time, so the float64
    RGB image never exists (fewer fresh pages: ~1/3 of the metric time at 1024 px); the rounding steps are
    the formula's (no fused multiply-add), so MATLAB's rounding of Y sees the same values."""
    y = channel(0, None).mul_(_Y_WEIGHTS[0])
    term = channel(1, None).mul_(_Y_WEIGHTS[1])
    y.add_(term).add_(channel(2, term).mul_(_Y_WEIGHTS[2])).div_(255.0).add_(16.0)
    return y.add_(0.5).floor_() if convention == "matlab" else y


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise SpnirError(f"unknown metric convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")


def _prepare(
    img: Image, ref: Image, crop_border: int, y_channel: bool, convention: Convention, quantize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images as float64 pixel tensors, cropped, as Y when ``y_channel``; cropped before converting."""
    _check_convention(convention)
    a, b = _as_nchw(img), _as_nchw(ref)
    b = b.to(a.device)
    if a.shape != b.shape:
        raise SpnirError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)} (as N, C, H, W)")
    if crop_border < 0:
        raise SpnirError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        if min(a.shape[-2:]) <= 2 * crop_border:
            raise SpnirError(f"image {tuple(a.shape[-2:])} is too small to crop {crop_border} px on each edge")
        a = a[..., crop_border:-crop_border, crop_border:-crop_border]
        b = b[..., crop_border:-crop_border, crop_border:-crop_border]
    if not y_channel or _check_y_channels(a) == 1:
        return _pixels(a, quantize), _pixels(b, quantize)

    def luma(x: torch.Tensor) -> torch.Tensor:
        return _luma(lambda c, out: _pixels(x[:, c : c + 1], quantize, out), convention)

    return luma(a), luma(b)


def _as_result(values: torch.Tensor, img: Image) -> torch.Tensor | float:
    return float(values[0]) if isinstance(img, np.ndarray) else values


def psnr(
    img: Image,
    ref: Image,
    crop_border: int = 0,
    y_channel: bool = False,
    convention: Convention = "basicsr",
    quantize: bool = True,
) -> torch.Tensor | float:
    """PSNR in dB (peak 255): a float for numpy input, a float64 ``(N,)`` tensor for torch input."""
    return _as_result(_psnr_of_pixels(*_prepare(img, ref, crop_border, y_channel, convention, quantize)), img)


def _psnr_of_pixels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = (a - b).square_().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse)  # mse == 0 gives inf, as BasicSR


def gaussian_window(size: int = _SSIM_WINDOW, sigma: float = _SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian (``cv2.getGaussianKernel`` / MATLAB ``fspecial``), float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """Separable 'valid' filtering of the last two dims, as in-place weighted sums of shifted views
    (several times faster than a float64 convolution on CPU)."""
    h, w = x.shape[-2] - len(taps) + 1, x.shape[-1] - len(taps) + 1
    rows = x[..., 0:h, :] * taps[0]
    for k in range(1, len(taps)):
        rows.add_(x[..., k : k + h, :], alpha=taps[k])
    out = rows[..., :, 0:w] * taps[0]
    for k in range(1, len(taps)):
        out.add_(rows[..., :, k : k + w], alpha=taps[k])
    return out


def ssim(
    img: Image,
    ref: Image,
    crop_border: int = 0,
    y_channel: bool = False,
    convention: Convention = "basicsr",
    quantize: bool = True,
) -> torch.Tensor | float:
    """SSIM (mean of the map, channels averaged): a float for numpy input, a float64 ``(N,)`` tensor for torch."""
    return _as_result(_ssim_of_pixels(*_prepare(img, ref, crop_border, y_channel, convention, quantize)), img)


def _ssim_of_pixels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of float64 pixel tensors. On CPU the map is computed in strips of
    ``_SSIM_STRIP_ROWS`` rows, so that the filtering passes stay in cache (~4x faster at 1024 px)."""
    if min(a.shape[-2:]) < _SSIM_WINDOW:
        raise SpnirError(f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} px after cropping, "
                         f"got {a.shape[-2]}x{a.shape[-1]}")
    taps = gaussian_window().tolist()
    map_rows, map_cols = a.shape[-2] - _SSIM_WINDOW + 1, a.shape[-1] - _SSIM_WINDOW + 1
    strip_rows = _SSIM_STRIP_ROWS if a.device.type == "cpu" else map_rows
    total = torch.zeros(a.shape[:2], dtype=torch.float64, device=a.device)
    for start in range(0, map_rows, strip_rows):
        rows = slice(start, min(start + strip_rows, map_rows) + _SSIM_WINDOW - 1)
        total += _ssim_map(a[..., rows, :], b[..., rows, :], taps).sum(dim=(2, 3))
    return (total / (map_rows * map_cols)).mean(dim=1)


def _ssim_map(a: torch.Tensor, b: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """The SSIM map of ``a`` and ``b`` ('valid': ``len(taps) - 1`` rows and columns fewer)."""
    stats = a.new_empty((4, *a.shape))  # a, b, a^2 + b^2, ab: var_a + var_b is all SSIM needs of the variances
    stats[0].copy_(a)
    stats[1].copy_(b)
    torch.mul(a, a, out=stats[2]).addcmul_(b, b)
    torch.mul(a, b, out=stats[3])
    mu_a, mu_b, sum_sq, prod = _filter_valid(stats, taps)
    mu_ab = mu_a * mu_b
    numerator = (mu_ab * 2).add_(_SSIM_C1).mul_(prod.sub_(mu_ab).mul_(2).add_(_SSIM_C2))  # (2 mu_ab + C1)(2 cov + C2)
    mu_sq = mu_a.mul_(mu_a).addcmul_(mu_b, mu_b)
    denominator = sum_sq.sub_(mu_sq).add_(_SSIM_C2).mul_(mu_sq.add_(_SSIM_C1))  # (var_a + var_b + C2)(mu_sq + C1)
    return numerator.div_(denominator)


@dataclass(frozen=True)
class MetricSettings:
    """How a benchmark is measured; ``describe()`` is the line printed under every table."""

    crop_border: int = 0
    y_channel: bool = True
    convention: Convention = "basicsr"

    def __post_init__(self) -> None:
        _check_convention(self.convention)

    def measure(self, output: Image, target: Image) -> tuple[torch.Tensor, torch.Tensor]:
        """``(psnr, ssim)`` per image, each a float64 ``(N,)`` tensor."""
        a, b = _prepare(output, target, self.crop_border, self.y_channel, self.convention, quantize=True)
        return _psnr_of_pixels(a, b).cpu(), _ssim_of_pixels(a, b).cpu()

    def describe(self) -> str:
        channel = "Y channel" if self.y_channel else "RGB"
        return f"{channel}, border {self.crop_border} px, convention {self.convention}"
