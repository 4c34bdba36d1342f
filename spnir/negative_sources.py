"""Where the negatives of a negative loss come from, behind one small interface.

A *source* is an ``nn.Module`` with

- ``negatives(lq, out, gt) -> list[Tensor]``: the negative images for this batch, each shaped like ``out``,
  detached (no gradient ever reaches a source);
- ``step()``: called once after each optimiser step (a no-op for stateless sources);
- ``state_dict()`` / ``load_state_dict()``: what an exact resume needs (empty for stateless sources);
- optionally ``step_inputs() -> dict[str, Tensor]``: device values the next ``step`` decides on, by keyword;
  a loop may fetch them with its own values in one transfer and call ``step(**fetched_floats)``.

Sources:

- :class:`~spnir.negatives.NegativeBank` (``history``): SPN's negative models, lagging EMA copies of the
  network (its ``step_inputs()``: the batch residual of the adaptive refresh).
- :class:`InputNegatives` (``input``): the degraded input, upsampled to the output size with MATLAB-style
  bicubic :func:`~spnir.imresize.imresize` when the output is larger (SR); CR of AECR-Net uses the hazy input.
- :class:`FrozenNegatives` (``frozen``): the outputs of given frozen models (CCR builds its consensus
  negatives from such models).
- :class:`DegradedGTNegatives` (``degraded-gt``): the ground truth passed through a seeded degradation
  pipeline (:func:`spnir.data.degrade.build_degradation`, e.g. blur and noise), as PCL-style SR methods do.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from spnir.ema import unwrap
from spnir.errors import SpnirError
from spnir.imresize import imresize


class NegativeSource(Protocol):
    """What a negative loss calls on its source (an ``nn.Module``), as a type: the interface above."""

    def negatives(self, lq: torch.Tensor, out: torch.Tensor, gt: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The negative images for this batch, each shaped like ``out``, detached."""
        ...

    @property
    def step(self) -> Callable[..., list[int]]:
        """``step(**inputs)``: after each optimiser step; ``inputs`` are the floats of ``step_inputs()``, if any
        (a source without ``step_inputs`` takes none)."""
        ...


class InputNegatives(nn.Module):
    """The degraded input as the negative, bicubic-upsampled to the output size when that is larger."""

    @torch.no_grad()
    def negatives(self, lq: torch.Tensor, out: torch.Tensor, gt: torch.Tensor | None = None) -> list[torch.Tensor]:
        lq = lq.detach()
        if lq.shape[-2:] == out.shape[-2:]:
            return [lq.to(out.dtype)]
        (h, w), (oh, ow) = lq.shape[-2:], out.shape[-2:]
        if oh % h or ow % w or oh // h != ow // w:
            raise SpnirError(f"input negatives: the output {ow}x{oh} (WxH) is not an integer upscaling of the "
                             f"input {w}x{h} with one factor for both sides")
        return [imresize(lq.float(), oh // h).to(out.dtype)]

    def step(self) -> list[int]:
        return []


class FrozenNegatives(nn.Module):
    """The outputs of frozen models on ``lq`` (no autograd; the models never train nor enter the state dict).

    The models are kept outside the module tree, so the loss's ``state_dict`` stays small; ``.to(device)``
    still moves them.
    """

    models: list[nn.Module]

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        models = [unwrap(m) for m in models]
        if not models:
            raise SpnirError("frozen negatives need at least one model")
        for i, model in enumerate(models):
            if not isinstance(model, nn.Module):
                raise SpnirError(f"frozen negatives: entry {i} is a {type(model).__name__}, expected an nn.Module")
            model.eval().requires_grad_(False)
        self.__dict__["models"] = models

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for model in self.models:
            model._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> FrozenNegatives:
        return super().train(False)

    @torch.no_grad()
    def negatives(self, lq: torch.Tensor, out: torch.Tensor, gt: torch.Tensor | None = None) -> list[torch.Tensor]:
        results = [model(lq.detach()) for model in self.models]
        for i, neg in enumerate(results):
            if neg.shape != out.shape:
                raise SpnirError(f"frozen negatives: model {i} returned {tuple(neg.shape)}, the trained network "
                                 f"{tuple(out.shape)}; the frozen models must solve the same task")
        return results

    def step(self) -> list[int]:
        return []


class DegradedGTNegatives(nn.Module):
    """``count`` negatives per batch: each image of ``gt`` through a seeded degradation pipeline.

    ``degradations`` is what :func:`~spnir.data.degrade.build_degradation` takes (a list of steps such as
    ``[{"type": "blur", "sigma": [0.5, 2.0]}, {"type": "noise", "sigma": [0, 15]}]``). Random parameters come
    from one ``torch.Generator`` seeded with ``seed``; its state is in the state dict, so a resumed run draws
    the same negatives. A pipeline that changes the size (a ``bicubic`` step) is followed by bicubic
    upsampling back to the ground truth's size.
    """

    def __init__(self, degradations: Any, seed: int = 0, count: int = 1) -> None:
        super().__init__()
        if not isinstance(count, int) or count < 1:
            raise SpnirError(f"count = {count!r}: expected an integer >= 1")
        from spnir.data.degrade import build_degradation  # the toolkit's image pipeline (pillow)

        self.degradation = build_degradation(degradations, where="degradations")
        self.count = count
        self.generator = torch.Generator().manual_seed(int(seed))

    @torch.no_grad()
    def _degrade(self, img: torch.Tensor) -> torch.Tensor:
        lq = self.degradation(img.detach().float().cpu(), generator=self.generator)
        if lq.shape[-2:] != img.shape[-2:]:
            factor = img.shape[-1] / lq.shape[-1]
            lq = imresize(lq, factor)
            if lq.shape[-2:] != img.shape[-2:]:
                raise SpnirError(f"degraded-gt negatives: the pipeline maps {tuple(img.shape[-2:])} to a size that "
                                 "bicubic upsampling cannot bring back exactly; crop patches to a multiple of its "
                                 "scale")
        return lq.to(device=img.device, dtype=img.dtype)

    def negatives(self, lq: torch.Tensor, out: torch.Tensor, gt: torch.Tensor | None = None) -> list[torch.Tensor]:
        if gt is None:
            raise SpnirError("degraded-gt negatives are made from the ground truth: pass gt, as in "
                             "loss(lq, out, gt=gt)")
        return [torch.stack([self._degrade(img) for img in gt]).to(out.dtype) for _ in range(self.count)]

    def step(self) -> list[int]:
        return []

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])


# ``spn.source`` -> (the ``spn`` options, seed) -> source; ``history`` (SPN's negative models) is built by
# :class:`spnir.spn.SPN` from the network itself; ``frozen`` takes the models its caller loaded from ``frozen``.
SOURCES: dict[str, Callable[[Mapping[str, Any], int], nn.Module] | None] = {
    "history": None,
    "input": lambda options, seed: InputNegatives(),
    "frozen": lambda options, seed: FrozenNegatives(options["frozen"]),
    "degraded-gt": lambda options, seed: DegradedGTNegatives(options["degradations"], seed=seed,
                                                             count=options["count"]),
}


def check_source_options(options: Mapping[str, Any], prefix: str = "") -> None:
    """What the source ``options["source"]`` needs among ``options``, checked before any work starts; errors
    name each key after ``prefix`` (a config passes ``"spn."``)."""
    source = options["source"]
    if source not in SOURCES:
        raise SpnirError(f"{prefix}source = {source!r} is not one of {list(SOURCES)}")
    if source == "frozen" and not options["frozen"]:
        raise SpnirError(f"{prefix}source = frozen needs {prefix}frozen: a list of spnir model checkpoint files")
    if source == "degraded-gt":
        if not options["degradations"]:
            raise SpnirError(f"{prefix}source = degraded-gt needs {prefix}degradations, e.g. "
                             "[{type: blur, sigma: [0.5, 2]}, {type: noise, sigma: [0, 15]}]")
        try:
            DegradedGTNegatives(options["degradations"], count=options["count"])
        except SpnirError as exc:
            raise SpnirError(f"{prefix}{exc}") from None
