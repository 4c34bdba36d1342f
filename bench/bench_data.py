"""Is data loading a bottleneck? Patches per second of spnir's sampling pipelines vs one training step.

Pipelines (GT patch ``--patch``, batch ``--batch``):
  paired-disk   PairedFolder over a DIV2K-style folder written to a temp dir (HR + bicubic LR x4 PNGs made from
                the builtin images): every sample decodes two PNG files, as a BasicSR disk loader does
  paired-cache  the same with cache=True (decoded once, in memory)
  clean-sr      builtin images in memory, LR made on the fly by MATLAB-bicubic x4 of each GT patch
  clean-derain  builtin images in memory, rain streaks made on the fly (derain preset), same GT patch size
Each runs with DataLoader workers 0 and 2. The training step is EDSR-baseline x4 (spnir.archs) on a batch of
LQ patches: forward, L1 loss, backward, Adam step. ``ratio`` = step time / batch time: above 1, loading keeps up
even in the same process; with workers it overlaps the step.

Run: ``.venv/bin/python bench/bench_data.py`` (add ``--threads N`` to set torch's CPU threads). DataLoader workers
run torch with one thread; with ``workers 0`` the sampling runs under the main process's thread count, and on a
busy machine torch's intra-op threading makes the many small tensor ops slow: compare ``--threads 1``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from spnir.archs import create_model
from spnir.data import CleanImages, EpochSampler, PairedFolder, PatchDataset, build_degradation, builtin
from spnir.data.degrade import bicubic, mod_crop
from spnir.imageio import save_image


def write_div2k_like(root: Path, scale: int) -> PairedFolder:
    for name in builtin.names("train"):
        hr = mod_crop(builtin.image(name), scale)
        save_image(hr, root / "HR" / f"{name}.png")
        save_image(bicubic(hr, scale), root / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")
    return PairedFolder(root / "LR_bicubic" / f"X{scale}", root / "HR", scale=scale)


def time_loader(dataset: PatchDataset, batch: int, workers: int, batches: int) -> float:
    """Seconds per batch over ``batches`` batches, worker start-up included (prefetching cannot flatter it)."""
    sampler = EpochSampler(len(dataset), base_seed=0)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True)
    start = time.perf_counter()
    it = iter(loader)
    for _ in range(batches):
        next(it)
    elapsed = (time.perf_counter() - start) / batches
    del it
    return elapsed


def time_step(batch: int, lq_patch: int, scale: int, steps: int) -> float:
    model = create_model("edsr-baseline", scale=scale)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    lq = torch.rand(batch, 3, lq_patch, lq_patch)
    gt = torch.rand(batch, 3, lq_patch * scale, lq_patch * scale)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.l1_loss(model(lq), gt).backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=192, help="GT patch side (LQ = patch / scale for SR)")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per pipeline")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = 4
    enlarge = max(1, (args.batch * (args.batches + 4)) // len(builtin.names("train")) + 1)
    with tempfile.TemporaryDirectory() as tmp:
        paired = write_div2k_like(Path(tmp), scale)
        clean = CleanImages.builtin("train")
        pipelines = {
            "paired-disk": PatchDataset(paired, args.patch, enlarge_ratio=enlarge),
            "paired-cache": PatchDataset(paired, args.patch, enlarge_ratio=enlarge, cache=True),
            "clean-sr": PatchDataset(clean, args.patch, degradation=build_degradation("sr", scale=scale),
                                     enlarge_ratio=enlarge),
            "clean-derain": PatchDataset(clean, args.patch, degradation=build_degradation("derain"),
                                         enlarge_ratio=enlarge),
        }
        step_s = time_step(args.batch, args.patch // scale, scale, args.steps)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
              f"GT patch {args.patch}")
        print(f"EDSR-baseline x{scale} training step (LQ {args.patch // scale}px): {step_s * 1000:.0f} ms")
        print(f"{'pipeline':<14}{'workers':>8}{'patches/s':>11}{'ms/batch':>10}{'ratio':>8}")
        for name, dataset in pipelines.items():
            for workers in (0, 2):
                batch_s = time_loader(dataset, args.batch, workers, args.batches)
                print(f"{name:<14}{workers:>8}{args.batch / batch_s:>11.0f}{batch_s * 1000:>10.0f}"
                      f"{step_s / batch_s:>8.1f}")


if __name__ == "__main__":
    main()
