"""Validation during training: PSNR/SSIM per set with :mod:`spnir.metrics` (the routine ``spnir eval`` uses),
and the best value of each with the iteration it came from (kept in checkpoints, so resume keeps it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from spnir.metrics import MetricSettings, Scores


@dataclass
class ValidationSet:
    name: str
    dataset: Dataset
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) left out at the start


@dataclass
class BestScores:
    """``best[set][metric] = (value, iteration)``; higher is better for PSNR and SSIM."""

    best: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)

    def update(self, iteration: int, results: dict[str, dict[str, float]]) -> None:
        for name, metrics in results.items():
            for metric, value in metrics.items():
                old = self.best.setdefault(name, {}).get(metric)
                if old is None or value > old[0]:
                    self.best[name][metric] = (value, iteration)

    def state_dict(self) -> dict[str, Any]:
        return {"best": {s: {m: [v, i] for m, (v, i) in ms.items()} for s, ms in self.best.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = {s: {m: (float(v), int(i)) for m, (v, i) in ms.items()} for s, ms in state["best"].items()}


class Validator:
    """Evaluates a model on every validation set, one whole image at a time."""

    def __init__(self, sets: Sequence[ValidationSet], metrics: Sequence[str], settings: MetricSettings,
                 device: torch.device) -> None:
        self.sets, self.metrics, self.settings, self.device = list(sets), list(metrics), settings, device
        self.best = BestScores()

    @torch.no_grad()
    def run(self, model: nn.Module, iteration: int) -> dict[str, dict[str, float]]:
        """``{set: {metric: mean}}`` for ``model`` (restored to its train/eval mode afterwards)."""
        was_training = model.training
        model.eval()
        results = {}
        try:
            for vset in self.sets:
                scores = Scores()
                for i in range(len(vset.dataset)):
                    item = vset.dataset[i]
                    lq = item["lq"].unsqueeze(0).to(self.device)
                    out = model(lq).float().clamp(0, 1)
                    scores.add(*self.settings.measure(out, item["gt"].unsqueeze(0).to(self.device)))
                results[vset.name] = {m: getattr(scores, m) for m in self.metrics}
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
