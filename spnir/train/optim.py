"""Optimisers (Adam, AdamW) and learning-rate schedules from the config.

A schedule is a closed-form factor of the base learning rate as a function of the step (or the epoch,
with ``scheduler.unit: epoch``), wrapped in ``LambdaLR``: its state is one counter, so a resumed run
continues with exactly the learning rate it would have had.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from spnir.errors import SpnirError

Factor = Callable[[int], float]

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}


def build_optimizer(params: Iterable[torch.nn.Parameter], optim: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam or AdamW from the ``optim`` section (``fused`` / ``foreach``: PyTorch's implementations)."""
    cls = OPTIMIZERS[optim["type"]]
    return cls(params, lr=optim["lr"], betas=tuple(optim["betas"]), weight_decay=optim["weight_decay"],
               eps=optim["eps"], fused=optim.get("fused"), foreach=optim.get("foreach"))


def keep_kernels(optimizer: torch.optim.Optimizer, kernels: list[dict[str, Any]]) -> None:
    """After ``optimizer.load_state_dict``: put back each group's ``fused``/``foreach`` choice (the loaded
    groups carry the checkpoint's) and keep each ``step`` counter where that kernel reads it (on the
    parameter's device for fused/capturable, else on the CPU)."""
    for group, chosen in zip(optimizer.param_groups, kernels):
        group.update(chosen)
        on_device = bool(group.get("fused") or group.get("capturable"))
        for param in group["params"]:
            step = optimizer.state.get(param, {}).get("step")
            if torch.is_tensor(step):
                optimizer.state[param]["step"] = step.to(param.device if on_device else "cpu", torch.float32)


def _constant(sched: dict[str, Any], total: int, eta: float) -> Factor:
    return lambda t: 1.0


def _multistep(sched: dict[str, Any], total: int, eta: float) -> Factor:
    milestones, gamma = list(sched["milestones"]), sched["gamma"]
    return lambda t: gamma ** bisect.bisect_right(milestones, t)


def _cosine(sched: dict[str, Any], total: int, eta: float) -> Factor:
    t_max = sched["t_max"] or total
    return lambda t: eta + (1.0 - eta) * 0.5 * (1.0 + math.cos(math.pi * t / t_max))


def _restarts(sched: dict[str, Any], total: int, eta: float) -> Factor:
    return _cosine_restarts(sched["periods"], sched["restart_weights"] or [1.0] * len(sched["periods"]), eta)


def _linear(sched: dict[str, Any], total: int, eta: float) -> Factor:
    return lambda t: max(0.0, 1.0 - t / total)


# ``scheduler.type`` -> (section, run length, eta_min / lr) -> factor of the base lr before warmup
SCHEDULERS: dict[str, Callable[[dict[str, Any], int, float], Factor]] = {
    "constant": _constant,
    "multistep": _multistep,
    "cosine": _cosine,
    "cosine_restarts": _restarts,
    "linear": _linear,
}


def check_schedule(sched: dict[str, Any], prefix: str = "") -> None:
    """The options each schedule needs, checked before any work starts; errors name each key after ``prefix``
    (a config passes ``"scheduler."``)."""
    if sched["type"] not in SCHEDULERS:
        raise SpnirError(f"{prefix}type = {sched['type']!r} is not one of {list(SCHEDULERS)}")
    if sched["type"] == "multistep" and sorted(sched["milestones"]) != list(sched["milestones"]):
        raise SpnirError(f"{prefix}milestones must increase; got {sched['milestones']}")
    if sched["type"] == "cosine_restarts":
        if not sched["periods"]:
            raise SpnirError(f"{prefix}type cosine_restarts needs {prefix}periods")
        if sched["restart_weights"] and len(sched["restart_weights"]) != len(sched["periods"]):
            raise SpnirError(f"{prefix}restart_weights needs one entry per period ({len(sched['periods'])}); "
                             f"got {sched['restart_weights']}")


def schedule_factor(sched: dict[str, Any], total: int, base_lr: float) -> Factor:
    """``t -> lr(t) / base_lr`` for the ``scheduler`` section; ``total`` is the run length in its unit."""
    check_schedule(sched)
    main = SCHEDULERS[sched["type"]](sched, total, sched["eta_min"] / base_lr)
    warmup = sched["warmup"]
    if warmup <= 0:
        return main
    return lambda t: main(t) * min(1.0, (t + 1) / warmup)


def _cosine_restarts(periods: list[int], weights: list[float], eta: float) -> Factor:
    """BasicSR's CosineAnnealingRestartLR: cosine cycles of the given lengths, each starting at its weight.

    As there, cycle ``k`` covers iterations ``(end_{k-1}, end_k]``: the last iteration of a cycle reaches the
    minimum and the restart comes one iteration later."""
    ends = [sum(periods[: i + 1]) for i in range(len(periods))]

    def factor(t: int) -> float:
        cycle = bisect.bisect_left(ends, t)
        if cycle >= len(periods):
            return eta
        start = ends[cycle - 1] if cycle else 0
        progress = (t - start) / periods[cycle]
        return eta + weights[cycle] * 0.5 * (1.0 - eta) * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, sched: dict[str, Any], total_iter: int, iters_per_epoch: int
) -> LambdaLR:
    """The ``scheduler`` section as a ``LambdaLR`` stepped once per iteration."""
    base_lr = optimizer.param_groups[0]["lr"]
    if sched["unit"] == "epoch":
        per_epoch = max(1, iters_per_epoch)
        factor = schedule_factor(sched, math.ceil(total_iter / per_epoch), base_lr)
        return LambdaLR(optimizer, lambda t: factor(t // per_epoch))
    return LambdaLR(optimizer, schedule_factor(sched, total_iter, base_lr))
