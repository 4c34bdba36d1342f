"""Validation during training: PSNR/SSIM (and LPIPS/DISTS, ``val.metrics``) per set with :mod:`spnir.metric_suite` (the routine ``spnir eval`` uses),
and the best value of each with the iteration it came from (kept in checkpoints, so resume keeps it).

Inference is :func:`spnir.restore.restore_image`, the routine of ``spnir restore``: whole images, or tiles
(``val.tile``, ``val.tile_overlap``; equal to whole-image inference when a tile covers the image), optionally
under bfloat16/float16 autocast (``val.amp``)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from spnir.device import autocast_dtype
from spnir.metric_suite import MetricSuite, is_better
from spnir.metrics import MetricSettings
from spnir.restore import restore_image

@dataclass(frozen=True)
class Inference:
    """How validation restores an image: ``scale``, tiling (``tile=None``: whole), autocast (``none``/``bfloat16``/
    ``float16``), and how many restored images of each set to keep for looking at (``save_images``)."""

    scale: int = 1
    tile: int | None = None
    tile_overlap: int = 32
    amp: str = "none"
    save_images: int = 0


@dataclass
class ValidationSet:
    name: str
    dataset: Dataset
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) left out at the start


@dataclass
class BestScores:
    """``best[set][metric] = (value, iteration)``; higher is better for PSNR and SSIM, lower for LPIPS/DISTS."""

    best: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)

    def update(self, iteration: int, results: dict[str, dict[str, float]]) -> None:
        for name, metrics in results.items():
            for metric, value in metrics.items():
                old = self.best.setdefault(name, {}).get(metric)
                if old is None or is_better(metric, value, old[0]):
                    self.best[name][metric] = (value, iteration)

    def state_dict(self) -> dict[str, Any]:
        return {"best": {s: {m: [v, i] for m, (v, i) in ms.items()} for s, ms in self.best.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = {s: {m: (float(v), int(i)) for m, (v, i) in ms.items()} for s, ms in state["best"].items()}


class Validator:
    """Evaluates a model on every validation set, one image at a time (whole or tiled, see :class:`Inference`).

    After :meth:`run`, ``images[set]`` holds the first ``inference.save_images`` restored images (CPU, [0, 1])."""

    def __init__(self, sets: Sequence[ValidationSet], metrics: Sequence[str], settings: MetricSettings,
                 device: torch.device, inference: Inference = Inference(), suite: MetricSuite | None = None) -> None:
        self.sets, self.metrics, self.settings, self.device = list(sets), list(metrics), settings, device
        self.suite = suite or MetricSuite(settings, self.metrics)  # LPIPS/DISTS need MetricSuite.build
        self.inference = inference
        self.best = BestScores()
        self.images: dict[str, list[torch.Tensor]] = {}

    def restore(self, model: nn.Module, lq: torch.Tensor) -> torch.Tensor:
        """``model``'s output for one LQ batch on the device, float32 in [0, 1]."""
        inf = self.inference
        dtype = autocast_dtype(inf.amp, "val.amp")
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with autocast:
            out = restore_image(model, lq.to(self.device), inf.scale, inf.tile, inf.tile_overlap)
        return out.float().clamp(0, 1)

    @torch.no_grad()
    def run(self, model: nn.Module, iteration: int) -> dict[str, dict[str, float]]:
        """``{set: {metric: mean}}`` for ``model`` (restored to its train/eval mode afterwards)."""
        was_training = model.training
        model.eval()
        results = {}
        self.images = {}
        try:
            for vset in self.sets:
                values: dict[str, list[float]] = {m: [] for m in self.metrics}
                kept = self.images[vset.name] = []
                for i in range(len(vset.dataset)):
                    item = vset.dataset[i]
                    out = self.restore(model, item["lq"].unsqueeze(0))
                    if i < self.inference.save_images:
                        kept.append(out[0].cpu())
                    for m, v in self.suite.measure(out, item["gt"].unsqueeze(0).to(self.device)).items():
                        values[m] += v.tolist()
                results[vset.name] = {m: sum(v) / len(v) if v else float("nan") for m, v in values.items()}
        finally:
            model.train(was_training)
        self.best.update(iteration, results)
        return results

    def summary(self, results: dict[str, dict[str, float]]) -> str:
        """One line per set: the values and the best of each metric with its iteration."""
        lines = []
        for name, metrics in results.items():
            parts = []
            for metric, value in metrics.items():
                best, at = self.best.best[name][metric]
                parts.append(f"{metric} {value:.4f} (best {best:.4f} @ {at})")
            lines.append(f"val {name}: " + ", ".join(parts))
        return "\n".join(lines)
