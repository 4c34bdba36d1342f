"""`spnir train`'s step alone, with malloc as the system sets it and with freed memory kept: time and peak memory.

    .venv/bin/python bench/allocator_step.py --config swinir-light --negatives 1 --steps 3 --threads 2

One fresh process per allocator (the setting is process-wide), each running only the train-loop step
(``Trainer.train_step`` with SPN), so the peak resident memory is that of a training process, not of the
many interleaved variants ``spn_step.py`` keeps in one process.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time

import torch
from spn_step import (
    CONFIGS,
    LAYER_WEIGHTS,
    PERIODS,
    SpnirStep,
    TrainerStep,
    batch,
    build,
    perturbed_copies,
    set_allocator,
)

from spnir import VGGFeatures


def run_one(config: str, negatives: int, steps: int) -> None:
    cfg = CONFIGS[config]
    vgg = VGGFeatures("vgg16", list(LAYER_WEIGHTS), vgg_weights="random")
    model = build(cfg)
    spn_step = SpnirStep(model, perturbed_copies(model, negatives), vgg, PERIODS[:negatives], (0.999,) * negatives)
    step = TrainerStep(spn_step, tempfile.mkdtemp())
    for i in range(steps):
        lq, gt = batch(cfg, i, torch.device("cpu"))
        start = time.perf_counter()
        step(lq, gt)
        print(f"  step {i + 1}: {time.perf_counter() - start:.2f} s, peak resident "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="edsr-baseline", choices=sorted(CONFIGS))
    parser.add_argument("--negatives", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--allocator", choices=("system", "kept", "both"), default="both")
    args = parser.parse_args()
    if args.allocator == "both":
        for mode in ("system", "kept"):
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--allocator", mode], check=True)
        return
    set_allocator(args.allocator)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.config}, N={args.negatives}, {torch.get_num_threads()} threads, allocator {args.allocator}:",
          flush=True)
    run_one(args.config, args.negatives, args.steps)


if __name__ == "__main__":
    main()
