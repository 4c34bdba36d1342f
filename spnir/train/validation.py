"""Validation during training: PSNR/SSIM (and LPIPS/DISTS, ``val.metrics``) per set, measured by
:func:`spnir.evaluation.evaluate_images` (the routine of ``spnir eval``), and the best value of each with the
iteration it came from (kept in checkpoints, so resume keeps it).

Inference is :func:`spnir.evaluation.model_restore` (:func:`spnir.restore.restore_image`, the routine of
``spnir restore``): whole images, or tiles (``val.tile``, ``val.tile_overlap``; equal to whole-image inference
when a tile covers the image), optionally under bf16/fp16 autocast (``val.amp``)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from spnir.data.datasets import Items
from spnir.evaluation import Inference, dataset_samples, evaluate_images, model_restore
from spnir.metrics import MetricSettings
from spnir.metrics.suite import MetricSuite, is_better


@dataclass
class ValidationSet:
    name: str
    dataset: Items
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
                 device: torch.device, inference: Inference | None = None, suite: MetricSuite | None = None
                 ) -> None:
        self.sets, self.metrics, self.settings, self.device = list(sets), list(metrics), settings, device
        self.suite = suite or MetricSuite(settings, self.metrics)  # LPIPS/DISTS need MetricSuite.build
        self.inference = inference or Inference()
        self.best = BestScores()
        self.images: dict[str, list[torch.Tensor]] = {}

    def restore(self, model: nn.Module, lq: torch.Tensor) -> torch.Tensor:
        """``model``'s output for one LQ batch on the device, float32 in [0, 1]."""
        return model_restore(model, self.inference, self.device, "val.amp")(lq)

    @torch.no_grad()
    def run(self, model: nn.Module, iteration: int) -> dict[str, dict[str, float]]:
        """``{set: {metric: mean}}`` for ``model`` (restored to its train/eval mode afterwards)."""
        was_training = model.training
        model.eval()
        results = {}
        self.images = {}
        restore = model_restore(model, self.inference, self.device, "val.amp")
        try:
            for vset in self.sets:
                measured = evaluate_images(restore, dataset_samples(vset.dataset), self.suite, vset.name,
                                           self.device, on_error="stop", keep=self.inference.save_images)
                self.images[vset.name] = measured.outputs
                results[vset.name] = {m: measured.mean(m) for m in self.suite.names}
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
