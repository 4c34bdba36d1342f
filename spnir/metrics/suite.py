"""The metrics of one run: PSNR/SSIM and, when asked for, LPIPS/DISTS, all on one image preparation.

``MetricSuite.build(["psnr", "ssim", "lpips"], settings, device=device)`` measures output/target batches
with :meth:`MetricSuite.measure` (``{metric: (N,) float64 tensor}``), the routine behind ``spnir eval`` and
the trainer's ``val.metrics``. Both images are cropped by ``settings.crop_border`` and rounded to 8 bit
as for PSNR/SSIM; LPIPS and DISTS always see RGB in ``[0, 1]`` (they are defined on colour images), also when
PSNR/SSIM are measured on the Y channel.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import torch

from spnir.errors import SpnirError
from spnir.metrics.perceptual import PERCEPTUAL, PerceptualMetric
from spnir.metrics.psnr_ssim import Image, MetricSettings, _prepare, _psnr_of_pixels, _ssim_of_pixels

METRICS: tuple[str, ...] = ("psnr", "ssim", "lpips", "dists")
LOWER_IS_BETTER: frozenset[str] = frozenset({"lpips", "dists"})


def check_metric_names(names: Iterable[str], origin: str = "metrics") -> list[str]:
    """``names`` as a list, each one of :data:`METRICS`, none twice."""
    names = list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names or len(set(names)) != len(names):
        raise SpnirError(f"{origin} = {names!r}: expected distinct names drawn from {', '.join(METRICS)}")
    return names


def direction(metric: str) -> str:
    """``"lower"`` or ``"higher"``: which values are better."""
    return "lower" if metric in LOWER_IS_BETTER else "higher"


def is_better(metric: str, value: float, than: float) -> bool:
    return value < than if metric in LOWER_IS_BETTER else value > than


class MetricSuite:
    """Named metrics measured with ``settings``; ``perceptual`` holds the LPIPS/DISTS networks in use."""

    def __init__(self, settings: MetricSettings, names: Sequence[str] = ("psnr", "ssim"),
                 perceptual: Mapping[str, PerceptualMetric] | None = None) -> None:
        self.settings, self.names = settings, check_metric_names(names)
        self.perceptual = dict(perceptual or {})
        missing = [n for n in self.names if n in PERCEPTUAL and n not in self.perceptual]
        if missing:
            raise SpnirError(f"metrics {missing} need their networks; build the suite with MetricSuite.build")

    @classmethod
    def build(cls, names: Sequence[str], settings: MetricSettings, vgg_weights: str | os.PathLike = "imagenet",
              device: torch.device | str = "cpu") -> MetricSuite:
        """The suite for ``names``; LPIPS/DISTS run on VGG16 ``vgg_weights`` and their cached learned files."""
        names = check_metric_names(names)
        networks = {n: PERCEPTUAL[n](vgg_weights).to(device) for n in names if n in PERCEPTUAL}
        return cls(settings, names, networks)

    def measure(self, output: Image, target: Image) -> dict[str, torch.Tensor]:
        """``{metric: (N,) float64 tensor on the CPU}`` for a batch (or one image)."""
        values: dict[str, torch.Tensor] = {}
        s = self.settings
        if {"psnr", "ssim"} & set(self.names):
            a, b = _prepare(output, target, s.crop_border, s.y_channel, s.convention, quantize=True)
            if "psnr" in self.names:
                values["psnr"] = _psnr_of_pixels(a, b).cpu()
            if "ssim" in self.names:
                values["ssim"] = _ssim_of_pixels(a, b).cpu()
        if self.perceptual:
            a, b = (_rgb(p) for p in _prepare(output, target, s.crop_border, False, s.convention, quantize=True))
            for name, network in self.perceptual.items():
                device = next(network.buffers()).device
                with torch.no_grad():
                    values[name] = network(a.to(device), b.to(device)).double().cpu()
        return {n: values[n] for n in self.names}

    def describe(self) -> str:
        """The settings line, with the direction of the metrics where lower is better."""
        lower = [n.upper() for n in self.names if n in LOWER_IS_BETTER]
        note = f"; {', '.join(lower)}: lower is better, on RGB" if lower else ""
        return self.settings.describe() + note

    def sources(self) -> list[str]:
        """The weight files the perceptual metrics use (one line each)."""
        return [f"{name}: {line}" for name, net in self.perceptual.items() for line in net.sources]


def _rgb(pixels: torch.Tensor) -> torch.Tensor:
    """float64 ``[0, 255]`` pixels -> float32 ``[0, 1]`` with three channels (grayscale repeated)."""
    x = (pixels / 255.0).float()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
