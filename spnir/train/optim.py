"""Optimisers (Adam, AdamW) and learning-rate schedules from the config.

A schedule is a closed-form factor of the base learning rate as a function of the step (or the epoch,
with ``scheduler.unit: epoch``), wrapped in ``LambdaLR``: its state is one counter, so a resumed run
continues with exactly the learning rate it would have had.
"""
from __future__ import annotations

import bisect
import math
from typing import Any, Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from spnir.errors import SpnirError

Factor = Callable[[int], float]


def build_optimizer(params: Iterable[torch.nn.Parameter], optim: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam or AdamW from the ``optim`` section (``fused`` / ``foreach``: PyTorch's implementations)."""
    cls = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[optim["type"]]
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


def schedule_factor(sched: dict[str, Any], total: int, base_lr: float) -> Factor:
    """``t -> lr(t) / base_lr`` for the ``scheduler`` section; ``total`` is the run length in its unit."""
    kind = sched["type"]
    eta = sched["eta_min"] / base_lr
    if kind == "constant":
        main: Factor = lambda t: 1.0
    elif kind == "multistep":
        milestones, gamma = list(sched["milestones"]), sched["gamma"]
        main = lambda t: gamma ** bisect.bisect_right(milestones, t)
    elif kind == "cosine":
        t_max = sched["t_max"] or total
        main = lambda t: eta + (1.0 - eta) * 0.5 * (1.0 + math.cos(math.pi * t / t_max))
    elif kind == "cosine_restarts":
        main = _cosine_restarts(sched["periods"], sched["restart_weights"] or [1.0] * len(sched["periods"]), eta)
    elif kind == "linear":
        main = lambda t: max(0.0, 1.0 - t / total)
    else:
        raise SpnirError(f"unknown scheduler type {kind!r}")
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
