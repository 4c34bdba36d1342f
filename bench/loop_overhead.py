"""The training loop's cost beyond the SPN object's own step, and gradient accumulation's cost.

    .venv/bin/python bench/loop_overhead.py [--config edsr-baseline] [--negatives 1] [--reps 9] [--device cpu]
    python bench/loop_overhead.py --device cuda --variants   # + bf16, bf16+compile, channels_last, peak memory

In one process, interleaved: every repetition runs each step once, in turn, on the same batch, so a neighbour
on a shared CPU slows all of them alike; the table gives medians and their ratios.

- ``plain L1 step``: the model with L1 and Adam alone (no SPN), for scale.
- ``SPN object``: the README's drop-in loop (model, L1 + ``spn(lq, out)``, backward, Adam, ``spn.step()``,
  EMA update), reading the loss back once.
- ``Trainer``: ``spnir train``'s iteration (``Trainer.train_step``) with the same model, SPN and EMA: the
  finiteness check, the one transfer, the schedule; the gradient norm is not measured (as between log steps).
- ``Trainer K=2``: the same samples as two micro-batches of half the batch (``train.accumulate: 2``).
- ``SPN object, 2 halves``: the drop-in step run on each half of the batch in turn (two optimiser steps): what
  two half-size passes through the network and VGG cost on this machine, without any accumulation logic; the
  floor that ``Trainer K=2`` is compared with.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
from spn_step import CONFIGS, Config, PlainStep, SpnirStep, batch, build, perturbed_copies, set_allocator, synchronize

from spnir import VGGFeatures
from spnir.ema import ModelEMA
from spnir.losses import L1Loss
from spnir.train.distributed import DistContext
from spnir.train.run_log import RunLogger
from spnir.train.trainer import Schedule, Trainer, TrainParts
from spnir.train.training_state import CheckpointDir

LAYER_WEIGHTS = {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5}
PERIODS = (100, 200, 500, 1000)


class HalvesStep:
    """A step called on the first and then the second half of the batch."""

    def __init__(self, step) -> None:
        self.step = step

    def __call__(self, lq, gt):
        half = len(lq) // 2
        return self.step(lq[:half], gt[:half]) + self.step(lq[half:], gt[half:])


class TrainerStep:
    """``Trainer.train_step`` around a :class:`SpnirStep`'s model and SPN (its own Adam and EMA)."""

    def __init__(self, step: SpnirStep, device: torch.device, accumulate: int = 1, amp: str = "none",
                 channels_last: bool = False, compile: bool = False) -> None:
        model = step.model
        if channels_last:
            model.to(memory_format=torch.channels_last)
            step.spn.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        parts = TrainParts(
            model=model, forward=torch.compile(model) if compile else model, loss_fn=L1Loss(), optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), batches=None,
            total_iter=10**9, spn=step.spn, ema=ModelEMA(model, 0.999), amp=amp, accumulate=accumulate,
            channels_last=channels_last)
        self.trainer = Trainer(parts, DistContext(device=device), CheckpointDir(tempfile.mkdtemp()),
                               RunLogger(None, 10**9), Schedule())

    def __call__(self, lq, gt):
        values, _, _ = self.trainer.train_step({"lq": lq, "gt": gt}, measure_grad_norm=False)
        return sum(values.values())


def make_steps(cfg: Config, n_neg: int, vgg: VGGFeatures, device: torch.device, variants: bool) -> dict:
    base = build(cfg).to(device)
    negatives = perturbed_copies(base, n_neg)
    periods, decays = PERIODS[:n_neg], (0.999,) * n_neg

    def spn_step(**kw) -> SpnirStep:
        return SpnirStep(copy.deepcopy(base), negatives, copy.deepcopy(vgg), periods, decays, **kw)

    steps = {"plain L1 step": PlainStep(copy.deepcopy(base)), "SPN object": spn_step(),
             "Trainer": TrainerStep(spn_step(), device),
             "Trainer K=2": TrainerStep(spn_step(), device, accumulate=2),
             "SPN object, 2 halves": HalvesStep(spn_step())}
    if variants:
        steps["Trainer bf16"] = TrainerStep(spn_step(), device, amp="bf16")
        steps["Trainer bf16+compile"] = TrainerStep(spn_step(), device, amp="bf16", compile=True)
        steps["Trainer bf16+compile+channels_last"] = TrainerStep(spn_step(), device, amp="bf16", compile=True,
                                                                  channels_last=True)
        steps["Trainer channels_last"] = TrainerStep(spn_step(), device, channels_last=True)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="edsr-baseline")
    parser.add_argument("--negatives", default="1")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", action="store_true", help="bf16, compile, channels_last (for the GPU)")
    parser.add_argument("--quick", action="store_true", help="quarter batch, for a fast look")
    parser.add_argument("--skip", default="", help="comma-separated steps to leave out, e.g. 'plain L1 step'")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_allocator("kept")
    device = torch.device(args.device)
    vgg = VGGFeatures("vgg16", list(LAYER_WEIGHTS), vgg_weights="random").to(device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {args.reps} interleaved reps")
    print("| model | batch/patch | N | step | median s | / SPN object | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        if args.quick:
            cfg = Config(cfg.preset, cfg.scale, max(2, cfg.batch // 4), cfg.patch)
        for n_neg in (int(n) for n in args.negatives.split(",")):
            steps = make_steps(cfg, n_neg, vgg, device, args.variants)
            for key in filter(None, args.skip.split(",")):
                steps.pop(key)
            lq, gt = batch(cfg, 0, device)
            peaks = {}
            for key, step in steps.items():  # warm-up (and compile), then the peak memory of one step
                step(lq, gt)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    step(lq, gt)
                    peaks[key] = torch.cuda.max_memory_allocated() / 2**20
            times: dict[str, list[float]] = {k: [] for k in steps}
            for rep in range(args.reps):
                lq, gt = batch(cfg, rep + 1, device)
                order = list(steps) if rep % 2 == 0 else list(reversed(steps))  # alternate who goes first
                for key in order:
                    synchronize(device)
                    t = time.perf_counter()
                    steps[key](lq, gt)
                    synchronize(device)
                    times[key].append(time.perf_counter() - t)
            med = {k: statistics.median(v) for k, v in times.items()}
            for key, seconds in med.items():
                peak = f"{peaks[key]:.0f}" if key in peaks else "-"
                print(f"| {name} | {cfg.batch}/{cfg.patch} | {n_neg} | {key} | {seconds:.4f} | "
                      f"{seconds / med['SPN object']:.3f} | {peak} |", flush=True)


if __name__ == "__main__":
    main()
