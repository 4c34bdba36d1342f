"""Exponential moving averages of model weights with fused ``torch._foreach`` ops.

``ema_update_(avg, src, decay)`` does ``avg = decay * avg + (1 - decay) * src`` on every floating-point
parameter and copies buffers, in a handful of fused kernel launches instead of a Python loop per tensor.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from spnir.errors import SpnirError


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def check_same_architecture(reference: nn.Module, other: nn.Module, what: str) -> None:
    """Raise when ``other`` does not have exactly ``reference``'s parameter and buffer names and shapes."""
    ref = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in other.state_dict().items()}
    if ref == got:
        return
    missing = sorted(set(ref) - set(got))[:5]
    unexpected = sorted(set(got) - set(ref))[:5]
    shapes = [f"{k}: {got[k]} vs {ref[k]}" for k in ref if k in got and got[k] != ref[k]][:5]
    details = "; ".join(
        part for part in (
            f"missing {missing}" if missing else "",
            f"unexpected {unexpected}" if unexpected else "",
            f"shapes differ {shapes}" if shapes else "",
        ) if part
    )
    raise SpnirError(f"{what} is not the same architecture as the target model: {details}")


class _Pairing:
    """Matched float parameter / buffer lists of two modules of one architecture."""

    def __init__(self, avg: nn.Module, src: nn.Module) -> None:
        avg_params = dict(avg.named_parameters())
        src_params = dict(src.named_parameters())
        self.avg_params = [avg_params[k] for k in src_params]
        self.src_params = list(src_params.values())
        avg_buffers = dict(avg.named_buffers())
        src_buffers = dict(src.named_buffers())
        self.avg_buffers = [avg_buffers[k] for k in src_buffers]
        self.src_buffers = list(src_buffers.values())


@torch.no_grad()
def ema_update_(avg: nn.Module, src: nn.Module, decay: float, pairing: _Pairing | None = None) -> None:
    """In place: ``avg = decay * avg + (1 - decay) * src`` for parameters; buffers are copied."""
    pairing = pairing or _Pairing(avg, src)
    params = [(a, s) for a, s in zip(pairing.avg_params, pairing.src_params) if a.is_floating_point()]
    if params:
        averaged = [a for a, _ in params]
        sources = [s.detach() for _, s in params]
        if decay == 0.0:
            torch._foreach_copy_(averaged, sources)
        else:
            torch._foreach_mul_(averaged, decay)
            torch._foreach_add_(averaged, sources, alpha=1.0 - decay)
    for a, s in zip(pairing.avg_buffers, pairing.src_buffers):
        a.copy_(s)


class ModelEMA(nn.Module):
    """An averaged copy of a model for evaluation (BasicSR's ``net_g_ema``, decay 0.999).

    ``update()`` after each optimiser step; ``module`` is the averaged model, always in eval mode.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise SpnirError(f"EMA decay must be in [0, 1); got {decay}")
        self.decay = decay
        source = unwrap(model)
        self.module = copy.deepcopy(source).eval().requires_grad_(False)
        self.__dict__["_source"] = source  # not a submodule: its weights are not ours to save
        self._pairing = _Pairing(self.module, source)

    def update(self) -> None:
        ema_update_(self.module, self._source, self.decay, self._pairing)

    def train(self, mode: bool = True) -> "ModelEMA":
        return super().train(False)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
