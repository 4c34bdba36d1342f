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
        compiled = getattr(model, "_orig_mod", None)
        if isinstance(compiled, nn.Module):
            model = compiled
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


def _slots(module: nn.Module, names: list[str], kind: str) -> list[tuple[dict, str]]:
    """(the owning module's ``_parameters`` or ``_buffers`` dict, key) of each dotted name."""
    slots = []
    for name in names:
        prefix, _, leaf = name.rpartition(".")
        slots.append((getattr(module.get_submodule(prefix), kind), leaf))
    return slots


class _Pairing:
    """Matched parameters and buffers of two modules of one architecture: ``avg`` follows ``src``.

    It holds where each tensor lives (module and name), not the tensors: ``Module.to()``, ``.cuda()``,
    ``.double()`` and ``load_state_dict(assign=True)`` put new tensors there, and :meth:`tensors` reads the
    ones there now. ``owner`` is what a user calls ``avg`` (``"spn"``, ``"ema"``), for the error raised
    when only one of the two was moved.
    """

    def __init__(self, avg: nn.Module, src: nn.Module, owner: str) -> None:
        self.owner = owner
        param_names = [name for name, _ in src.named_parameters()]
        buffer_names = [name for name, _ in src.named_buffers()]
        self.names = param_names + buffer_names
        self.param_count = len(param_names)
        self._avg = _slots(avg, param_names, "_parameters") + _slots(avg, buffer_names, "_buffers")
        self._src = _slots(src, param_names, "_parameters") + _slots(src, buffer_names, "_buffers")

    def tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """The current ``(avg params, src params, avg buffers, src buffers)``; raises :class:`SpnirError` when a
        pair differs in device or dtype."""
        avg = [slots[key] for slots, key in self._avg]
        src = [slots[key] for slots, key in self._src]
        for name, a, s in zip(self.names, avg, src):
            self._check(name, a, s)
        n = self.param_count
        return avg[:n], src[:n], avg[n:], src[n:]

    def check(self) -> None:
        """The first pair's device and dtype only: a cheap test, before each use of ``avg``, that both modules
        were moved together."""
        if self.names:
            (avg_slots, key), (src_slots, src_key) = self._avg[0], self._src[0]
            self._check(self.names[0], avg_slots[key], src_slots[src_key])

    def _check(self, name: str, a: torch.Tensor, s: torch.Tensor) -> None:
        if a.device != s.device or a.dtype != s.dtype:
            raise SpnirError(
                f"the model's {name} is {s.dtype} on {s.device} but {self.owner}'s is {a.dtype} on {a.device}: one "
                f"was moved without the other; move both, model.to(...) and {self.owner}.to(...)"
            )


@torch.no_grad()
def ema_update_(avg: nn.Module, src: nn.Module, decay: float, pairing: _Pairing | None = None) -> None:
    """In place: ``avg = decay * avg + (1 - decay) * src`` for parameters; buffers are copied."""
    pairing = pairing or _Pairing(avg, src, "avg")
    avg_params, src_params, avg_buffers, src_buffers = pairing.tensors()
    params = [(a, s) for a, s in zip(avg_params, src_params) if a.is_floating_point()]
    if params:
        averaged = [a for a, _ in params]
        sources = [s.detach() for _, s in params]
        if decay == 0.0:
            torch._foreach_copy_(averaged, sources)
        else:
            torch._foreach_mul_(averaged, decay)
            torch._foreach_add_(averaged, sources, alpha=1.0 - decay)
    if avg_buffers:
        torch._foreach_copy_(avg_buffers, src_buffers)


def check_decay(decay: float, name: str = "EMA decay") -> None:
    """The rule :class:`ModelEMA` enforces: ``decay`` in [0, 1) (1 would never move); errors name ``name``."""
    if not 0.0 <= decay < 1.0:
        raise SpnirError(f"{name} = {decay!r}: expected a number in [0, 1)")


class ModelEMA(nn.Module):
    """An averaged copy of a model for evaluation (BasicSR's ``net_g_ema``, decay 0.999).

    ``update()`` after each optimiser step; ``module`` is the averaged model, always in eval mode.
    """

    _source: nn.Module

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        check_decay(decay)
        self.decay = decay
        source = unwrap(model)
        self.module = copy.deepcopy(source).eval().requires_grad_(False)
        self.__dict__["_source"] = source  # not a submodule: its weights are not ours to save
        self._pairing = _Pairing(self.module, source, "ema")

    def update(self) -> None:
        ema_update_(self.module, self._source, self.decay, self._pairing)

    def train(self, mode: bool = True) -> ModelEMA:
        return super().train(False)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
