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

import math
from dataclasses import dataclass, field
from typing import Iterable, Literal, Union

import numpy as np
import torch

from spnir.errors import SpnirError

Convention = Literal["basicsr", "matlab"]
CONVENTIONS: tuple[str, ...] = ("basicsr", "matlab")
Image = Union[np.ndarray, torch.Tensor]

_Y_WEIGHTS = (65.481, 128.553, 24.966)  # BT.601 luma of RGB in [0, 255], divided by 255 below
_SSIM_WINDOW, _SSIM_SIGMA = 11, 1.5
_SSIM_C1, _SSIM_C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def to_pixels(img: Image, quantize: bool = True) -> torch.Tensor:
    """Any accepted image as a float64 ``(N, C, H, W)`` tensor of 8-bit pixel values ``[0, 255]``."""
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise SpnirError(f"numpy images must be uint8 (H, W, C) with values 0..255, got dtype {img.dtype}")
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3:
            raise SpnirError(f"numpy images must be (H, W, C), got shape {img.shape}")
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(torch.float64)[None]
    if isinstance(img, torch.Tensor):
        if img.dim() == 3:
            img = img[None]
        if img.dim() != 4:
            raise SpnirError(f"image tensors must be (N, C, H, W) or (C, H, W), got shape {tuple(img.shape)}")
        if not img.is_floating_point():
            raise SpnirError(f"image tensors must be float in [0, 1], got dtype {img.dtype}")
        pixels = img.detach().to(torch.float64).clamp(0, 1) * 255.0 if quantize else img.detach().double() * 255.0
        return pixels.round() if quantize else pixels
    raise SpnirError(f"expected a numpy uint8 image or a torch tensor, got {type(img).__name__}")


def rgb_to_y(pixels: torch.Tensor, convention: Convention = "basicsr") -> torch.Tensor:
    """``(N, 3, H, W)`` RGB in ``[0, 255]`` -> ``(N, 1, H, W)`` BT.601 luma in ``[16, 235]``.

    ``"matlab"`` rounds to 8 bit half away from zero, as MATLAB's ``rgb2ycbcr`` on uint8; single-channel
    input is returned as is.
    """
    _check_convention(convention)
    if pixels.shape[1] == 1:
        return pixels
    if pixels.shape[1] != 3:
        raise SpnirError(f"Y channel needs RGB images (3 channels), got {pixels.shape[1]} channels")
    r, g, b = pixels[:, 0:1], pixels[:, 1:2], pixels[:, 2:3]
    y = (_Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b) / 255.0 + 16.0
    return torch.floor(y + 0.5) if convention == "matlab" else y


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise SpnirError(f"unknown metric convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")


def _prepare(
    img: Image, ref: Image, crop_border: int, y_channel: bool, convention: Convention, quantize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_convention(convention)
    a, b = to_pixels(img, quantize), to_pixels(ref, quantize)
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
    if y_channel:
        a, b = rgb_to_y(a, convention), rgb_to_y(b, convention)
    return a, b


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
    a, b = _prepare(img, ref, crop_border, y_channel, convention, quantize)
    mse = (a - b).pow(2).mean(dim=(1, 2, 3))
    values = 10.0 * torch.log10(255.0**2 / mse)  # mse == 0 gives inf, as BasicSR
    return _as_result(values, img)


def gaussian_window(size: int = _SSIM_WINDOW, sigma: float = _SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian (``cv2.getGaussianKernel`` / MATLAB ``fspecial``), float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of the last two dims, as in-place weighted sums of shifted views
    (several times faster than a float64 convolution on CPU)."""
    taps = window.tolist()
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
    a, b = _prepare(img, ref, crop_border, y_channel, convention, quantize)
    if min(a.shape[-2:]) < _SSIM_WINDOW:
        raise SpnirError(f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} px after cropping, "
                         f"got {a.shape[-2]}x{a.shape[-1]}")
    window = gaussian_window().to(a.device)
    mu_a, mu_b, sq_a, sq_b, prod = _filter_valid(torch.stack([a, b, a * a, b * b, a * b]), window)
    var_a, var_b, cov = sq_a - mu_a * mu_a, sq_b - mu_b * mu_b, prod - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + _SSIM_C1) * (2 * cov + _SSIM_C2)) / (
        (mu_a * mu_a + mu_b * mu_b + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    )
    return _as_result(ssim_map.mean(dim=(2, 3)).mean(dim=1), img)


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
        kwargs = dict(crop_border=self.crop_border, y_channel=self.y_channel, convention=self.convention)
        return _per_image(psnr(output, target, **kwargs)), _per_image(ssim(output, target, **kwargs))

    def describe(self) -> str:
        channel = "Y channel" if self.y_channel else "RGB"
        return f"{channel}, border {self.crop_border} px, convention {self.convention}"


def _per_image(values: torch.Tensor | float) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64) if isinstance(values, float) else values.cpu()


@dataclass
class Scores:
    """Per-image PSNR/SSIM accumulated over a set; ``psnr``/``ssim`` are the means (NaN when empty)."""

    per_image_psnr: list[float] = field(default_factory=list)
    per_image_ssim: list[float] = field(default_factory=list)

    def add(self, psnr_values: torch.Tensor, ssim_values: torch.Tensor) -> None:
        self.per_image_psnr.extend(float(v) for v in psnr_values)
        self.per_image_ssim.extend(float(v) for v in ssim_values)

    @property
    def images(self) -> int:
        return len(self.per_image_psnr)

    @property
    def psnr(self) -> float:
        return sum(self.per_image_psnr) / self.images if self.images else math.nan

    @property
    def ssim(self) -> float:
        return sum(self.per_image_ssim) / self.images if self.images else math.nan


def evaluate_pairs(pairs: Iterable[tuple[Image, Image]], settings: MetricSettings) -> Scores:
    """Mean PSNR/SSIM over ``(output, target)`` pairs, each one image or a same-size batch.

    The one routine behind ``spnir eval`` and the trainer's validation, so both report identical numbers.
    """
    scores = Scores()
    for output, target in pairs:
        scores.add(*settings.measure(output, target))
    return scores
