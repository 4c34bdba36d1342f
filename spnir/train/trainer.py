"""The one training loop. Tasks differ only in what :mod:`spnir.train.build` puts into it.

Per iteration: forward (optionally under bf16/fp16 autocast), reconstruction loss plus the SPN term,
a finiteness check of every term (all ranks agree), backward, gradient clipping, optimiser and
scheduler step, then the negatives' schedule and the evaluation EMA. A SIGINT/SIGTERM sets a flag that is
honoured at the end of the iteration: a resumable checkpoint is written and :meth:`Trainer.fit` returns.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from spnir.ema import ModelEMA
from spnir.errors import SpnirError
from spnir.spn import SPN
from spnir.train.checkpoint import CheckpointDir, rng_state, set_rng_state
from spnir.train.distributed import DistContext, all_reduce_sum
from spnir.train.logging import RunLogger
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
    spn: SPN | None = None
    ema: ModelEMA | None = None
    validator: Validator | None = None
    amp: str = "none"
    grad_clip: float | None = None
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

    def __enter__(self) -> "_StopRequests":
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
        if parts.amp == "fp16" and ctx.device.type != "cuda":
            raise SpnirError("train.amp = fp16 needs a CUDA device (its GradScaler); use bf16 on the CPU")
        self.scaler = torch.amp.GradScaler("cuda") if parts.amp == "fp16" else None

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
        p.optimizer.load_state_dict(state["optimizer"])
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
        if self.parts.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.parts.amp == "bf16" else torch.float16
        return torch.autocast(self.ctx.device.type, dtype=dtype)

    def _losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        p, device = self.parts, self.ctx.device
        lq = batch["lq"].to(device, non_blocking=True)
        gt = batch["gt"].to(device, non_blocking=True)
        with self._autocast():
            out = p.forward(lq)
            terms = {"pix": p.loss_fn(out.float(), gt)}
            if p.spn is not None:
                terms["spn"] = p.spn(lq, out, gt=gt, recon=terms["pix"])
        return terms

    def _step(self, terms: dict[str, torch.Tensor]) -> float:
        """Backward and update; returns the gradient norm (NaN when not measured)."""
        p = self.parts
        total = sum(terms.values())
        p.optimizer.zero_grad(set_to_none=True)
        grad_norm = math.nan
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(p.optimizer)
            if p.grad_clip:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(p.model.parameters(), p.grad_clip))
            self.scaler.step(p.optimizer)  # skips steps with non-finite gradients, by design
            self.scaler.update()
        else:
            total.backward()
            norm = torch.nn.utils.clip_grad_norm_(p.model.parameters(), p.grad_clip or math.inf)
            grad_norm = float(norm)
            if not math.isfinite(grad_norm):
                values = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in terms.items())
                raise TrainingDiverged(self._diverged_message(f"the gradient norm of the loss ({values})",
                                                              grad_norm))
            p.optimizer.step()
        p.scheduler.step()
        if p.spn is not None:
            p.spn.step()
        if p.ema is not None:
            p.ema.update()
        return grad_norm

    def _diverged_message(self, what: str, value: float) -> str:
        newest = self.checkpoints.newest()
        keep = (f"the last good checkpoint is {newest}" if newest is not None
                else "no checkpoint had been written yet")
        hint = (" The SPN term is unbounded below: lower spn.weight (the authors keep it at 0.01-0.1 of the "
                "reconstruction loss), use spn.weight: auto, or bound it with spn.max_distance."
                if self.parts.spn is not None else " Lower optim.lr or set train.grad_clip.")
        return f"{what} is {value} at iteration {self.iteration + 1}; training stopped, {keep}.{hint}"

    def _reduce(self, terms: dict[str, torch.Tensor], stop: bool) -> tuple[dict[str, float], bool]:
        """Mean of each term over ranks and whether any rank asked to stop (one all-reduce)."""
        values = torch.stack([t.detach().float() for t in terms.values()]
                             + [torch.tensor(float(stop), device=self.ctx.device)])
        values = all_reduce_sum(values, self.ctx) / self.ctx.world_size
        numbers = values.tolist()
        return dict(zip(terms, numbers[:-1])), numbers[-1] > 0

    def validate(self) -> dict[str, dict[str, float]]:
        """Evaluate (rank 0) the EMA model, or the model, on the validation sets; log and return the means."""
        p = self.parts
        if p.validator is None or not self.ctx.is_main:
            return {}
        model = p.ema.module if p.ema is not None and self.schedule.val_use_ema else p.model
        results = p.validator.run(model, self.iteration)
        self.last_validation = results
        self.logger.scalars(self.iteration, {f"val/{s}/{m}": v for s, ms in results.items() for m, v in ms.items()})
        self.logger.message(p.validator.summary(results))
        return results

    def train_step(self, batch: dict[str, Any], stop_requested: bool = False) -> tuple[dict[str, float], float, bool]:
        """One iteration on ``batch``: the loss terms (averaged over ranks), the gradient norm, and whether
        any rank asked to stop. Raises :class:`TrainingDiverged` on a NaN/Inf term."""
        terms = self._losses(batch)
        values, stop_now = self._reduce(terms, stop_requested)
        for name, value in values.items():
            if not math.isfinite(value):
                raise TrainingDiverged(self._diverged_message(f"loss term {name!r}", value))
        grad_norm = self._step(terms)
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
            while self.iteration < p.total_iter:
                values, grad_norm, stop_now = self.train_step(next(batches), stop.signum is not None)
                it = self.iteration
                self.logger.progress(it, values)
                if it % sched.log_every == 0 or it == p.total_iter:
                    scalars = {f"loss/{k}": v for k, v in values.items()}
                    scalars["lr"] = p.optimizer.param_groups[0]["lr"]
                    scalars["it_per_s"] = self.logger.speed(it)
                    if math.isfinite(grad_norm):
                        scalars["grad_norm"] = grad_norm
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
                                        "continue with --resume auto")
                    return FitResult(it, f"interrupted ({name})", last_ckpt, self.last_validation,
                                     self._best(), stop.signum)
        return FitResult(self.iteration, "completed", last_ckpt, self.last_validation, self._best())

    def _best(self) -> dict[str, dict[str, tuple[float, int]]]:
        return dict(self.parts.validator.best.best) if self.parts.validator is not None else {}
