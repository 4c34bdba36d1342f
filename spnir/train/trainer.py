"""The one training loop. Tasks differ only in what :mod:`spnir.train.build` puts into it.

Per iteration (one optimiser step): for each of ``accumulate`` micro-batches, forward (optionally under
bf16/fp16 autocast), reconstruction loss plus the SPN term, backward of their sum over ``accumulate``;
then gradient clipping, one device-to-host transfer of the loss terms, the gradient's finiteness, the gradient
norm (when clipping or logging), the values the negatives' next step decides on (``step_inputs``) and the stop
flag (all ranks agree), the finiteness check, the optimiser and scheduler step, then the negatives' schedule
and the evaluation EMA.
With float16 a step the GradScaler skips for inf/NaN gradients advances the learning-rate schedule (the
iteration counts, as in BasicSR) but neither the negatives' schedule nor the EMA: both follow the optimiser
steps actually taken. A SIGINT/SIGTERM sets a flag that is honoured at the end of the iteration: a resumable
checkpoint is written and :meth:`Trainer.fit` returns.
"""
from __future__ import annotations

import contextlib
import functools
import math
import operator
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spnir.device import autocast_dtype
from spnir.ema import ModelEMA
from spnir.errors import SpnirError
from spnir.spn import NegativeLoss
from spnir.train.distributed import DistContext, all_reduce_sum
from spnir.train.optim import keep_kernels
from spnir.train.run_log import RunLogger
from spnir.train.training_state import CheckpointDir, rng_state, set_rng_state
from spnir.train.validation import Validator

STATE_FORMAT = "spnir-train-state"


class TrainingDiverged(SpnirError):
    """A loss term or the gradient became NaN/Inf; the message names the iteration and the term."""


@dataclass
class TrainParts:
    """Everything the loop needs; built from a config by :func:`spnir.train.build.build_parts`."""

    model: nn.Module                      # the plain network (its state_dict is what we save)
    forward: nn.Module                    # what runs the training forward: model, DDP and/or compiled
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: Callable[[int], Iterator[dict[str, Any]]]  # start step -> endless batch iterator
    total_iter: int
    spn: NegativeLoss | None = None       # the negative term of the spn section (SPN or another source)
    ema: ModelEMA | None = None
    validator: Validator | None = None
    amp: str = "none"
    grad_clip: float | None = None
    accumulate: int = 1                   # micro-batches per optimiser step
    channels_last: bool = False           # inputs in channels_last (build_parts converts the modules)
    notes: list[str] = field(default_factory=list)  # for the log: settings that have no effect here
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Schedule:
    """How often things happen, in iterations."""

    log_every: int = 100
    val_every: int = 5000
    ckpt_every: int = 5000
    val_use_ema: bool = True


@dataclass
class FitResult:
    iteration: int
    status: str                            # "completed" or "interrupted (SIGTERM)" etc.
    last_checkpoint: Path | None
    validation: dict[str, dict[str, float]]  # last validation results
    best: dict[str, dict[str, tuple[float, int]]]
    signal: int | None = None


class _StopRequests:
    """SIGINT/SIGTERM handlers that only set a flag (restored on exit)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Runs :class:`TrainParts` from ``start`` to ``total_iter``, checkpointing into ``checkpoints``."""

    def __init__(self, parts: TrainParts, ctx: DistContext, checkpoints: CheckpointDir, logger: RunLogger,
                 schedule: Schedule, on_iteration: Callable[[int], None] | None = None) -> None:
        self.parts, self.ctx, self.checkpoints, self.logger = parts, ctx, checkpoints, logger
        self.schedule = schedule
        self.on_iteration = on_iteration
        self.iteration = 0
        self.last_validation: dict[str, dict[str, float]] = {}
        self.amp_dtype = autocast_dtype(parts.amp, "train.amp")
        self.scaler = torch.amp.GradScaler(ctx.device.type) if self.amp_dtype is torch.float16 else None
        self.skipped_steps = 0  # float16 steps the GradScaler skipped (inf/NaN gradients)
        self._spn_step_inputs: dict[str, float] = {}  # the negative loss's step_inputs(), fetched by _fetch

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        p = self.parts
        return {
            "format": STATE_FORMAT,
            "version": 1,
            "iteration": self.iteration,
            "data_step": self.iteration,  # one batch per iteration; the sampler restarts from here
            "world_size": self.ctx.world_size,
            "model": p.model.state_dict(),
            "ema": p.ema.state_dict() if p.ema is not None else None,
            "spn": p.spn.state_dict() if p.spn is not None else None,
            "spn_feature_space": p.spn.feature_space if p.spn is not None else None,
            "optimizer": p.optimizer.state_dict(),
            "scheduler": p.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "validation": p.validator.best.state_dict() if p.validator is not None else None,
            "rng": rng_state(),
            "config": p.config,
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        p = self.parts
        for key, part in (("ema", p.ema), ("spn", p.spn)):
            if (state[key] is None) != (part is None):
                raise SpnirError(f"{source} was written {'with' if state[key] is not None else 'without'} "
                                 f"{key.upper()}, this config has it {'off' if part is None else 'on'}; "
                                 "resume with the run's own config")
        p.model.load_state_dict(state["model"])
        if p.ema is not None:
            p.ema.load_state_dict(state["ema"])
        if p.spn is not None:
            p.spn.load_state_dict(state["spn"])
        kernels: list[dict[str, Any]] = [
            {k: g[k] for k in ("fused", "foreach") if k in g} for g in p.optimizer.param_groups
        ]
        p.optimizer.load_state_dict(state["optimizer"])
        keep_kernels(p.optimizer, kernels)  # optim.fused/foreach are this run's (result-neutral), not the file's
        p.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        if p.validator is not None and state["validation"] is not None:
            p.validator.best.load_state_dict(state["validation"])
        set_rng_state(state["rng"])
        self.iteration = int(state["iteration"])

    def save_checkpoint(self) -> Path | None:
        """Write a resumable checkpoint (rank 0); returns its path (None on other ranks)."""
        if not self.ctx.is_main:
            return None
        return self.checkpoints.save(self.state_dict(), self.iteration)

    # ------------------------------------------------------------------------------------------- loop
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype)

    def _losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        p, device = self.parts, self.ctx.device
        layout = torch.channels_last if p.channels_last else torch.preserve_format
        lq = batch["lq"].to(device, non_blocking=True, memory_format=layout)
        gt = batch["gt"].to(device, non_blocking=True, memory_format=layout)
        with self._autocast():
            out = p.forward(lq)
            terms = {"pix": p.loss_fn(out.float(), gt)}
            if p.spn is not None:
                terms["spn"] = p.spn(lq, out, gt=gt, recon=terms["pix"])
        return terms

    def _micro_batches(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """``batch`` (this rank's samples of one optimiser step) cut into ``accumulate`` equal parts, in order."""
        count = self.parts.accumulate
        if count == 1:
            return [batch]
        size = len(batch["lq"])
        if size % count:
            raise SpnirError(f"a batch of {size} samples does not split into train.accumulate = {count} "
                             "equal micro-batches")
        return [{k: v[i * size // count:(i + 1) * size // count] for k, v in batch.items()} for i in range(count)]

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """DDP: no gradient all-reduce on the micro-batches before the last one."""
        ddp = getattr(self.parts.forward, "_orig_mod", self.parts.forward)
        if last or not isinstance(ddp, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return ddp.no_sync()

    def _backward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Forward and backward of every micro-batch; returns each term's mean over them (detached)."""
        p, count = self.parts, self.parts.accumulate
        p.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for i, micro in enumerate(self._micro_batches(batch)):
            with self._no_sync(last=i == count - 1):
                terms = self._losses(micro)
                total = functools.reduce(operator.add, terms.values())
                total = total / count if count > 1 else total
                (self.scaler.scale(total) if self.scaler is not None else total).backward()
            for name, term in terms.items():
                value = term.detach().float()
                sums[name] = value if name not in sums else sums[name] + value
        return {k: v / count for k, v in sums.items()} if count > 1 else sums

    def _gradient(self, measure_norm: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unscale (float16), clip; returns whether every gradient is finite and the norm (when clipping or
        ``measure_norm``), both still on the device."""
        p = self.parts
        if self.scaler is not None:
            self.scaler.unscale_(p.optimizer)
        params = [q for q in p.model.parameters() if q.grad is not None]
        norm = None
        if p.grad_clip or measure_norm:
            norm = torch.nn.utils.clip_grad_norm_(params, p.grad_clip or math.inf)
            return torch.isfinite(norm), norm
        return _all_finite([g for q in params if (g := q.grad) is not None], self.ctx.device), norm

    def _optimizer_step(self, grads_finite: bool) -> None:
        """The optimiser step (skipped by the GradScaler for non-finite gradients), the scheduler, then the
        negatives' schedule and the EMA when a step was taken."""
        p = self.parts
        if self.scaler is not None:
            self.scaler.step(p.optimizer)
            self.scaler.update()
        else:
            p.optimizer.step()
        p.scheduler.step()
        if not grads_finite:
            self.skipped_steps += 1
            return
        if p.spn is not None:
            p.spn.step(**self._spn_step_inputs)
        if p.ema is not None:
            p.ema.update()

    def _diverged_message(self, what: str, value: float) -> str:
        newest = self.checkpoints.newest()
        keep = (f"the last good checkpoint is {newest}" if newest is not None
                else "no checkpoint had been written yet")
        hint = (" The SPN term is unbounded below: lower spn.weight (the authors keep it at 0.01-0.1 of the "
                "reconstruction loss), use spn.weight: auto, or bound it with spn.max_distance."
                if self.parts.spn is not None else " Lower optim.lr or set train.grad_clip.")
        return f"{what} is {value} at iteration {self.iteration + 1}; training stopped, {keep}.{hint}"

    def _fetch(self, terms: dict[str, torch.Tensor], grads_finite: torch.Tensor, norm: torch.Tensor | None,
               stop: bool) -> tuple[dict[str, float], bool, float, bool]:
        """The one device-to-host transfer of an iteration (one all-reduce first): the terms' means over
        ranks, whether every rank's gradient is finite, the gradient norm, whether any rank asked to stop.
        Also fetches the negative loss's ``step_inputs()`` for :meth:`_optimizer_step`."""
        device = self.ctx.device
        step_inputs = self.parts.spn.step_inputs() if self.parts.spn is not None else {}
        slots = {
            **{("term", name): value for name, value in terms.items()},
            ("nonfinite", ""): (~grads_finite).float().reshape(()),  # > 0 when any rank's is non-finite
            ("stop", ""): torch.tensor(float(stop), device=device),
            ("grad_norm", ""): norm.detach().float() if norm is not None else torch.tensor(math.nan, device=device),
            **{("spn", name): value.float() for name, value in step_inputs.items()},
        }
        values = torch.stack([value.to(device) for value in slots.values()])
        fetched = dict(zip(slots, (all_reduce_sum(values, self.ctx) / self.ctx.world_size).tolist()))
        self._spn_step_inputs = {name: fetched["spn", name] for name in step_inputs}
        grad_norm = fetched["grad_norm", ""] if norm is not None else math.nan
        return ({name: fetched["term", name] for name in terms}, fetched["nonfinite", ""] == 0, grad_norm,
                fetched["stop", ""] > 0)

    def validate(self) -> dict[str, dict[str, float]]:
        """Evaluate (rank 0) the EMA model, or the model, on the validation sets; log and return the means."""
        p = self.parts
        if p.validator is None or not self.ctx.is_main:
            return {}
        model = p.ema.module if p.ema is not None and self.schedule.val_use_ema else p.model
        results = p.validator.run(model, self.iteration)
        self.last_validation = results
        self.logger.images(self.iteration, {f"{name}/{i:03d}": image for name, images in p.validator.images.items()
                                            for i, image in enumerate(images)})
        self.logger.scalars(self.iteration, {f"val/{s}/{m}": v for s, ms in results.items() for m, v in ms.items()})
        self.logger.message(p.validator.summary(results))
        return results

    def train_step(self, batch: dict[str, Any], stop_requested: bool = False,
                   measure_grad_norm: bool = True) -> tuple[dict[str, float], float, bool]:
        """One iteration (optimiser step) on ``batch``: the loss terms (averaged over ranks and micro-batches),
        the gradient norm (NaN when neither clipping nor ``measure_grad_norm``), and whether any rank asked to
        stop. Raises :class:`TrainingDiverged` on a NaN/Inf term, or on a NaN/Inf gradient without float16's
        GradScaler (which skips such steps instead)."""
        terms = self._backward(batch)
        grads_finite, norm = self._gradient(measure_grad_norm)
        values, finite, grad_norm, stop_now = self._fetch(terms, grads_finite, norm, stop_requested)
        for name, value in values.items():
            if not math.isfinite(value):
                raise TrainingDiverged(self._diverged_message(f"loss term {name!r}", value))
        if not finite and self.scaler is None:
            losses = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
            raise TrainingDiverged(self._diverged_message(f"the gradient norm of the loss ({losses})",
                                                          grad_norm if norm is not None else math.inf))
        self._optimizer_step(finite)
        self.iteration += 1
        return values, grad_norm, stop_now

    def fit(self) -> FitResult:
        """Train from the current iteration to ``total_iter``, validating, logging and checkpointing on the
        schedule; a SIGINT/SIGTERM ends it early with a resumable checkpoint."""
        p, sched = self.parts, self.schedule
        last_ckpt = self.checkpoints.newest() if self.ctx.is_main else None
        p.forward.train()
        batches = p.batches(self.iteration)
        with _StopRequests() as stop:
            step_seconds, steps = 0.0, 0  # train-step wall time since the last log (no validation, no I/O)
            while self.iteration < p.total_iter:
                logs = (self.iteration + 1) % sched.log_every == 0 or self.iteration + 1 == p.total_iter
                started = time.perf_counter()
                values, grad_norm, stop_now = self.train_step(next(batches), stop.signum is not None, logs)
                step_seconds, steps = step_seconds + time.perf_counter() - started, steps + 1
                it = self.iteration
                self.logger.progress(it, values)
                if it % sched.log_every == 0 or it == p.total_iter:
                    scalars = {f"loss/{k}": v for k, v in values.items()}
                    scalars["lr"] = p.optimizer.param_groups[0]["lr"]
                    scalars["it_per_s"] = self.logger.speed(it)
                    scalars["step_s"] = step_seconds / steps
                    step_seconds, steps = 0.0, 0
                    if math.isfinite(grad_norm):
                        scalars["grad_norm"] = grad_norm
                    if self.scaler is not None:
                        scalars["amp/skipped_steps"] = self.skipped_steps
                    if p.spn is not None:
                        scalars.update({f"spn/{k}": v for k, v in p.spn.stats().items()})
                    self.logger.scalars(it, scalars)
                if it % sched.val_every == 0 or it == p.total_iter:
                    self.validate()
                if it % sched.ckpt_every == 0 or it == p.total_iter or stop_now:
                    last_ckpt = self.save_checkpoint() or last_ckpt
                if self.on_iteration is not None:
                    self.on_iteration(it)
                if stop_now:
                    name = signal.Signals(stop.signum).name if stop.signum else "a signal on another rank"
                    self.logger.message(f"stopped by {name} at iteration {it}; checkpoint {last_ckpt}; "
                                        "resume from it to continue")
                    return FitResult(it, f"interrupted ({name})", last_ckpt, self.last_validation,
                                     self._best(), stop.signum)
        return FitResult(self.iteration, "completed", last_ckpt, self.last_validation, self._best())

    def _best(self) -> dict[str, dict[str, tuple[float, int]]]:
        return dict(self.parts.validator.best.best) if self.parts.validator is not None else {}


def _all_finite(grads: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Whether every gradient is finite, as a device tensor (one fused check per device and dtype, no norm)."""
    found = torch.zeros(1, device=device)
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for grad in grads:
        groups.setdefault((grad.device, grad.dtype), []).append(grad)
    one = torch.ones(1, device=device)
    for group in groups.values():
        # GradScaler's fused check, with an unscaling factor of 1 (the gradients are left as they are)
        torch._amp_foreach_non_finite_check_and_unscale_(group, found, one)
    return found == 0
