"""Synthetic degradations of clean images, one small function each, composable from config-like specs.

Every function takes and returns a ``(C, H, W)`` float tensor with values in ``[0, 1]`` (``noise`` may leave
that range unless ``clip=True``). Parameters are explicit; the functions that draw random numbers take a
``torch.Generator`` so that a seed reproduces the output exactly.

Functions: :func:`bicubic` (SR downscaling, MATLAB-compatible), :func:`haze` (atmospheric scattering),
:func:`rain` (streaks), :func:`blur` with :func:`gaussian_kernel` / :func:`motion_kernel`, :func:`noise`
(Gaussian, sigma in 0..255 units), :func:`jpeg`, :func:`quantize` (round to 8 bit).

Pipelines: :func:`build_degradation` turns a config (a list of step dicts) into a :class:`Compose`::

    deg = build_degradation([
        {"type": "blur", "kernel": "gaussian", "sigma": [0.2, 2.0]},
        {"type": "noise", "sigma": [0, 25]},
        {"type": "jpeg", "quality": [30, 95], "p": 0.5},
    ])
    lq = deg(gt, generator=torch.Generator().manual_seed(0))

A value given as ``[lo, hi]`` is drawn uniformly per image from the generator (integers for ``quality``,
``length`` and ``scale``); a list of strings is a uniform choice; ``p`` is the probability to apply the step.
A task name (``"sr"``, ``"dehaze"``, ``"derain"``, ``"deblur"``, ``"denoise"``, ``"jpeg"``) gives the preset in
:data:`PRESETS`.
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spnir.errors import SpnirError
from spnir.imageio import to_uint8
from spnir.imresize import imresize

# RESIDE's synthesis ranges (Li et al., "Benchmarking Single-Image Dehazing and Beyond", TIP 2019):
# indoor training set ITS: beta in [0.6, 1.8], A in [0.7, 1.0]; outdoor OTS: beta in [0.04, 0.2], A in [0.8, 1.0].
# RESIDE applied them to depth in different units (OTS: monocular depth estimates in metres); spnir's depth is
# relative ([0, 1], farthest = 1), so each preset carries ``depth_scale``, the depth its farthest point stands for
# in the preset's units (docs/data.md gives the sources and the resulting transmission).
HAZE_ITS: dict[str, Any] = {"beta": (0.6, 1.8), "airlight": (0.7, 1.0), "depth_scale": 1.0}
HAZE_OTS: dict[str, Any] = {"beta": (0.04, 0.2), "airlight": (0.8, 1.0), "depth_scale": 12.5}


def _check_image(img: torch.Tensor, name: str) -> None:
    if not isinstance(img, torch.Tensor) or img.dim() != 3:
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise SpnirError(f"{name}: expected a (C, H, W) image tensor, got {shape}")


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Clamp to ``[0, 1]`` and round to the 8-bit grid (``round(x * 255) / 255``), as saving a PNG does."""
    return img.clamp(0, 1).mul(255).round().div(255)


def mod_crop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom/right so that height and width are multiples of ``scale`` (the SR evaluation's mod-crop)."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def bicubic(img: torch.Tensor, scale: int, quantize_output: bool = True) -> torch.Tensor:
    """Downscale by the integer ``scale`` with MATLAB's bicubic ``imresize`` (the SR benchmarks' LR images).

    ``H`` and ``W`` must be multiples of ``scale`` (use :func:`mod_crop`). With ``quantize_output`` (default)
    the result is rounded to 8 bit, as benchmark LR files are.
    """
    _check_image(img, "bicubic")
    if not isinstance(scale, int) or scale < 1:
        raise SpnirError(f"bicubic: scale must be a positive integer, got {scale!r}")
    h, w = img.shape[-2:]
    if h % scale or w % scale:
        raise SpnirError(f"bicubic: image {w}x{h} (WxH) is not a multiple of scale {scale}; mod_crop it first")
    if scale == 1:
        return img.clone()
    out = imresize(img, 1.0 / scale)
    return quantize(out) if quantize_output else out


def depth_proxy(height: int, width: int) -> torch.Tensor:
    """Depth for haze when none is known: ``(1, H, W)`` rising linearly from 0 (bottom row) to 1 (top row).

    The ground-plane assumption of outdoor photographs: what is higher in the frame is farther away.
    """
    rows = torch.linspace(1.0, 0.0, height) if height > 1 else torch.zeros(1)
    return rows.view(1, height, 1).expand(1, height, width).clone()


def haze(
    img: torch.Tensor,
    beta: float,
    airlight: float | Sequence[float],
    depth: torch.Tensor | None = None,
) -> torch.Tensor:
    """Atmospheric scattering model ``I = J t + A (1 - t)`` with transmission ``t = exp(-beta d)``.

    ``depth`` is ``(H, W)`` or ``(1, H, W)`` in relative units (spnir's depth maps are scaled to ``[0, 1]``,
    farthest = 1: :func:`spnir.data.builtin.depth`); without it :func:`depth_proxy` is used. ``airlight`` is
    one value or one per channel. RESIDE's ranges: :data:`HAZE_ITS`, :data:`HAZE_OTS`, whose ``depth_scale``
    the ``haze`` pipeline step multiplies the relative depth by (this function applies ``depth`` as given).
    ``beta = 0`` returns the image unchanged.
    """
    _check_image(img, "haze")
    c, h, w = img.shape
    if beta < 0:
        raise SpnirError(f"haze: beta must be >= 0, got {beta}")
    d = depth_proxy(h, w) if depth is None else depth.reshape(1, *depth.shape[-2:]).to(img)
    if d.shape[-2:] != (h, w):
        raise SpnirError(f"haze: depth map is {d.shape[-1]}x{d.shape[-2]}, image is {w}x{h} (WxH)")
    a = torch.as_tensor(airlight, dtype=img.dtype).reshape(-1, 1, 1)
    if a.numel() not in (1, c):
        raise SpnirError(f"haze: airlight needs 1 or {c} values, got {a.numel()}")
    t = torch.exp(-beta * d)
    return img * t + a * (1 - t)


def _haze_step(img: torch.Tensor, beta: float, airlight: float | Sequence[float], depth_scale: float,
               depth: torch.Tensor | None = None) -> torch.Tensor:
    """The ``haze`` pipeline step: :func:`haze` on relative depth (or the proxy) multiplied by ``depth_scale``."""
    if depth_scale <= 0:
        raise SpnirError(f"haze: depth_scale must be > 0, got {depth_scale}")
    d = depth_proxy(*img.shape[-2:]) if depth is None else depth
    return haze(img, beta, airlight, d * depth_scale)


def gaussian_kernel(sigma: float, size: int | None = None) -> torch.Tensor:
    """Isotropic Gaussian blur kernel ``(size, size)`` summing to 1; ``size`` defaults to ``2 ceil(3 sigma) + 1``."""
    if sigma <= 0:
        raise SpnirError(f"gaussian_kernel: sigma must be > 0, got {sigma}")
    size = size or 2 * math.ceil(3 * sigma) + 1
    if size < 1 or size % 2 == 0:
        raise SpnirError(f"gaussian_kernel: size must be a positive odd number, got {size}")
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return (k / k.sum()).float()


def _line_kernel(length: float, angle: float) -> torch.Tensor:
    """A straight anti-aliased line of ``length`` pixels through the centre, unnormalised (values in [0, 1])."""
    if length < 1:
        raise SpnirError(f"kernel length must be >= 1 pixel, got {length}")
    size = 2 * math.ceil(length / 2) + 1
    k = np.zeros((size, size), dtype=np.float64)
    theta = math.radians(angle)
    dy, dx = math.cos(theta), math.sin(theta)  # 0 = vertical; positive runs top-left to bottom-right
    c = size // 2
    steps = max(2, int(math.ceil(length * 4)))
    for s in np.linspace(-(length - 1) / 2, (length - 1) / 2, steps):
        y, x = c + s * dy, c + s * dx
        y0, x0 = int(math.floor(y)), int(math.floor(x))
        fy, fx = y - y0, x - x0
        for yy, xx, wgt in ((y0, x0, (1 - fy) * (1 - fx)), (y0 + 1, x0, fy * (1 - fx)),
                            (y0, x0 + 1, (1 - fy) * fx), (y0 + 1, x0 + 1, fy * fx)):
            if 0 <= yy < size and 0 <= xx < size:
                k[yy, xx] += wgt
    k /= k.max()
    return torch.from_numpy(k).float()


def motion_kernel(length: float, angle: float) -> torch.Tensor:
    """Linear motion blur kernel: a line of ``length`` pixels at ``angle`` degrees (0 = vertical), summing to 1."""
    k = _line_kernel(length, angle)
    return k / k.sum()


def _filter(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    kh, kw = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise SpnirError(f"blur: kernel must have odd size, got {kw}x{kh}")
    c, h, w = img.shape
    ph, pw = kh // 2, kw // 2
    mode = "reflect" if ph < h and pw < w else "replicate"
    x = F.pad(img[None], (pw, pw, ph, ph), mode=mode)
    weight = kernel.to(img).expand(c, 1, kh, kw)
    return F.conv2d(x, weight, groups=c)[0]


def blur(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel with ``kernel`` (2-D, odd size, e.g. :func:`gaussian_kernel`,
    :func:`motion_kernel`), mirroring the borders (OpenCV's default ``BORDER_REFLECT_101``)."""
    _check_image(img, "blur")
    if kernel.dim() != 2:
        raise SpnirError(f"blur: kernel must be 2-D, got shape {tuple(kernel.shape)}")
    return _filter(img, kernel)


def noise(
    img: torch.Tensor, sigma: float, generator: torch.Generator | None = None, clip: bool = False
) -> torch.Tensor:
    """Add white Gaussian noise of standard deviation ``sigma / 255`` (``sigma`` in 0..255 units).

    Denoising benchmarks add the noise without clipping (the default); ``clip=True`` clamps to ``[0, 1]``.
    """
    _check_image(img, "noise")
    if sigma < 0:
        raise SpnirError(f"noise: sigma must be >= 0 (0..255 units), got {sigma}")
    n = torch.randn(img.shape, generator=generator, dtype=img.dtype) * (sigma / 255.0)
    out = img + n
    return out.clamp(0, 1) if clip else out


def jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode as JPEG at ``quality`` (1..100, PIL's libjpeg, 4:2:0 chroma) and decode again."""
    _check_image(img, "jpeg")
    if not 1 <= int(quality) <= 100:
        raise SpnirError(f"jpeg: quality must be in 1..100, got {quality}")
    if img.shape[0] != 3:
        raise SpnirError(f"jpeg: expected 3 channels, got {img.shape[0]}")
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        array = np.asarray(decoded.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(img.dtype).div(255.0)


def rain(
    img: torch.Tensor,
    density: float = 0.01,
    angle: float = 0.0,
    length: int = 15,
    intensity: float = 0.6,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Add rain streaks: random drops smeared along a line and blended toward white.

    ``density``: fraction of pixels that start a streak (0.002 light .. 0.03 heavy); ``angle``: degrees from
    vertical (positive: streaks run from top-left to bottom-right); ``length``: streak length in pixels;
    ``intensity``: opacity of a full streak in ``[0, 1]``. Each drop's brightness is uniform in
    ``[0.5, 1]``; the result is ``J (1 - a) + a`` with ``a = intensity * streaks``.
    """
    _check_image(img, "rain")
    if not 0 <= density <= 1 or not 0 <= intensity <= 1:
        raise SpnirError(f"rain: density and intensity must be in [0, 1], got {density}, {intensity}")
    _, h, w = img.shape
    drops = torch.rand((1, h, w), generator=generator)
    brightness = 0.5 + 0.5 * torch.rand((1, h, w), generator=generator)
    seeds = torch.where(drops < density, brightness, torch.zeros(()))
    streaks = _filter(seeds, _line_kernel(length, angle)).clamp(0, 1)
    alpha = (intensity * streaks).to(img)
    return img * (1 - alpha) + alpha


# ---- pipelines ------------------------------------------------------------------------------------------

def _blur_step(img: torch.Tensor, kernel: str = "gaussian", sigma: float = 1.0, length: int = 9,
               angle: float = 0.0) -> torch.Tensor:
    if kernel == "gaussian":
        return blur(img, gaussian_kernel(sigma))
    if kernel == "motion":
        return blur(img, motion_kernel(length, angle))
    raise SpnirError(f"blur: unknown kernel {kernel!r}; expected 'gaussian' or 'motion'")


@dataclass(frozen=True)
class _StepType:
    apply: Callable[..., torch.Tensor]
    params: dict[str, Any]  # name -> default
    random: bool = False  # takes generator=
    wants_depth: bool = False


STEP_TYPES: dict[str, _StepType] = {
    "bicubic": _StepType(lambda img, scale, quantize: bicubic(img, scale, quantize_output=quantize),
                         {"scale": 4, "quantize": True}),
    "haze": _StepType(_haze_step, {"beta": list(HAZE_ITS["beta"]), "airlight": list(HAZE_ITS["airlight"]),
                                   "depth_scale": HAZE_ITS["depth_scale"]}, wants_depth=True),
    "rain": _StepType(rain, {"density": 0.01, "angle": 0.0, "length": 15, "intensity": 0.6}, random=True),
    "blur": _StepType(_blur_step, {"kernel": "gaussian", "sigma": 1.0, "length": 9, "angle": 0.0}),
    "noise": _StepType(noise, {"sigma": 25.0, "clip": False}, random=True),
    "jpeg": _StepType(jpeg, {"quality": 75}),
    "quantize": _StepType(quantize, {}),
}
_INT_PARAMS = {"quality", "length", "scale"}

PRESETS: dict[str, list[dict]] = {
    "sr": [{"type": "bicubic", "scale": 4}],
    "dehaze": [{"type": "haze", **{k: list(v) if isinstance(v, tuple) else v for k, v in HAZE_ITS.items()}},
               {"type": "quantize"}],
    "derain": [{"type": "rain", "density": [0.004, 0.02], "angle": [-20, 20], "length": [10, 30],
                "intensity": [0.4, 0.9]}, {"type": "quantize"}],
    "deblur": [{"type": "blur", "kernel": "motion", "length": [5, 21], "angle": [0, 180]}, {"type": "quantize"}],
    "denoise": [{"type": "noise", "sigma": 25}],
    "jpeg": [{"type": "jpeg", "quality": [10, 40]}],
}


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def _sample_value(name: str, value: Any, generator: torch.Generator | None, where: str) -> Any:
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            return value[min(int(_uniform(generator) * len(value)), len(value) - 1)]
        if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise SpnirError(f"{where}: {name}={value!r}; expected a number, [lo, hi] or a list of names")
        lo, hi = value
        if lo > hi:
            raise SpnirError(f"{where}: {name} range [{lo}, {hi}] has lo > hi")
        if name in _INT_PARAMS:
            return int(lo) + min(int(_uniform(generator) * (int(hi) - int(lo) + 1)), int(hi) - int(lo))
        return lo + (hi - lo) * _uniform(generator)
    return value


class Step:
    """One configured degradation: a type from :data:`STEP_TYPES`, its parameter specs and a probability."""

    def __init__(self, spec: object, where: str = "degradation") -> None:
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise SpnirError(f"{where}: each step must be a mapping with a 'type' key, got {spec!r}")
        kind = spec["type"]
        if kind not in STEP_TYPES:
            raise SpnirError(f"{where}: unknown type {kind!r}; expected one of {', '.join(STEP_TYPES)}")
        self.kind, self.where = kind, f"{where} ({kind})"
        self.type = STEP_TYPES[kind]
        extra = set(spec) - set(self.type.params) - {"type", "p"}
        if extra:
            raise SpnirError(f"{self.where}: unknown key(s) {', '.join(sorted(extra))}; "
                             f"expected {', '.join(self.type.params) or 'none'} or p")
        self.p = float(spec.get("p", 1.0))
        if not 0 <= self.p <= 1:
            raise SpnirError(f"{self.where}: p must be in [0, 1], got {self.p}")
        self.specs = {k: spec.get(k, default) for k, default in self.type.params.items()}
        self.sample(torch.Generator().manual_seed(0))  # validate the specs now, not at the first image

    def sample(self, generator: torch.Generator | None) -> dict[str, Any] | None:
        """Concrete parameters for one image, or ``None`` when the step is skipped (``p``)."""
        apply = self.p >= 1 or _uniform(generator) < self.p
        params = {k: _sample_value(k, v, generator, self.where) for k, v in self.specs.items()}
        return params if apply else None

    def apply(self, img: torch.Tensor, params: Mapping[str, Any], generator: torch.Generator | None,
              depth: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = dict(params)
        if self.type.random:
            kwargs["generator"] = generator
        if self.type.wants_depth:
            kwargs["depth"] = depth
        return self.type.apply(img, **kwargs)

    @property
    def scale(self) -> int:
        """Size ratio input/output of this step (the SR scale for ``bicubic``, else 1)."""
        if self.kind != "bicubic":
            return 1
        scale = self.specs["scale"]
        if isinstance(scale, (list, tuple)):
            raise SpnirError(f"{self.where}: scale must be one integer for a training pipeline, got {scale}")
        return int(scale)


class Compose:
    """A degradation pipeline: steps applied in order, parameters drawn per image from the generator."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)

    @property
    def scale(self) -> int:
        """Total downscaling factor (GT size / LQ size)."""
        return math.prod(step.scale for step in self.steps)

    def sample(self, generator: torch.Generator | None = None) -> list[dict[str, Any] | None]:
        """Draw the parameters of every step for one image (``None`` = step skipped)."""
        return [step.sample(generator) for step in self.steps]

    def apply(self, img: torch.Tensor, params: Sequence[Mapping[str, Any] | None],
              generator: torch.Generator | None = None, depth: torch.Tensor | None = None) -> torch.Tensor:
        """Run the steps with the given parameters; random steps draw their noise from ``generator``."""
        for step, p in zip(self.steps, params):
            if p is not None:
                img = step.apply(img, p, generator, depth)
        return img

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None,
                 depth: torch.Tensor | None = None) -> torch.Tensor:
        """Degrade one ``(C, H, W)`` image; ``depth`` feeds ``haze`` steps."""
        return self.apply(img, self.sample(generator), generator, depth)

    def __repr__(self) -> str:
        return f"Compose({[dict(type=s.kind, p=s.p, **s.specs) for s in self.steps]})"


def build_degradation(config: str | Mapping[str, Any] | Sequence[Mapping[str, Any]], scale: int | None = None,
                      where: str = "degradation") -> Compose:
    """Build a :class:`Compose` from a config.

    ``config`` is a task preset name (a key of :data:`PRESETS`), one step dict, a list of step dicts, or a dict
    ``{"steps": [...]}``. ``scale`` overrides the ``bicubic`` steps' scale (e.g. ``build_degradation("sr", 2)``).
    ``where`` names the config in error messages (e.g. the YAML file and key). Bad types, keys or ranges raise
    :class:`~spnir.errors.SpnirError` here, not at the first image.
    """
    if isinstance(config, str):
        if config not in PRESETS:
            raise SpnirError(f"{where}: unknown preset {config!r}; expected one of {', '.join(PRESETS)}")
        config = PRESETS[config]
    if isinstance(config, Mapping):
        config = config["steps"] if "steps" in config else [config]
    if not isinstance(config, Sequence) or not config:
        raise SpnirError(f"{where}: expected a non-empty list of steps, got {config!r}")
    specs = [dict(step) if isinstance(step, Mapping) else step for step in config]
    if scale is not None:
        for spec in specs:
            if isinstance(spec, dict) and spec.get("type") == "bicubic":
                spec["scale"] = scale
    return Compose([Step(spec, f"{where}[{i}]") for i, spec in enumerate(specs)])


__all__ = [
    "HAZE_ITS", "HAZE_OTS", "PRESETS", "STEP_TYPES", "Compose", "Step", "bicubic", "blur", "build_degradation",
    "depth_proxy", "gaussian_kernel", "haze", "jpeg", "mod_crop", "motion_kernel", "noise", "quantize", "rain",
]
