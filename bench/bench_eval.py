"""Evaluation speed: spnir's batched torch resize + PSNR/SSIM vs a straightforward numpy version, side by side.

Per image: MATLAB-bicubic downscale x4, round, upscale x4, then PSNR and SSIM on Y (border 4). The numpy side
is tests/reference_numpy.py (row-at-a-time resize, sliding-window SSIM). Both run in this process on the same
images; the ratio is what matters, not the absolute times. spnir's time is also split by stage, and each
image is first decoded from a PNG (``spnir.imageio.load_image``), as in an evaluation loop. The images are
uniform noise: the arithmetic does not depend on content, but PNG decoding is slower than for photographs.

Times are medians over the images, wall clock and CPU time of this process: on a shared machine the CPU time
is the steadier of the two (with ``--threads 1`` it excludes the time other jobs hold the core).

    .venv/bin/python bench/bench_eval.py [--images 4] [--size 1024] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import reference_numpy as ref  # noqa: E402

from spnir.imageio import load_image, save_image  # noqa: E402
from spnir.imresize import imresize  # noqa: E402
from spnir.metrics import MetricSettings  # noqa: E402

SCALE = 4
SETTINGS = MetricSettings(crop_border=SCALE, y_channel=True, convention="basicsr")


class Clock:
    """Per-stage wall and CPU times, one sample per image."""

    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[float, float]]] = {}

    def time(self, stage: str, fn: Callable, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args)
        self.samples.setdefault(stage, []).append((time.perf_counter() - wall, time.process_time() - cpu))
        return result

    def median_ms(self, stage: str) -> tuple[float, float]:
        walls, cpus = zip(*self.samples[stage])
        return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


def spnir_pipeline(hr: torch.Tensor, clock: Clock) -> tuple[float, float]:
    lr = clock.time("downscale + round", lambda: imresize(hr, 1 / SCALE).clamp(0, 1).mul(255).round().div(255))
    sr = clock.time("upscale", imresize, lr, SCALE)
    p, s = clock.time("PSNR + SSIM", SETTINGS.measure, sr[None], hr[None])
    return float(p[0]), float(s[0])


def numpy_pipeline(hr: np.ndarray) -> tuple[float, float]:
    lr = np.clip(np.round(ref.imresize(hr / 255.0, 1 / SCALE) * 255), 0, 255) / 255
    sr = np.clip(np.round(ref.imresize(lr, SCALE) * 255), 0, 255).astype(np.uint8)
    return ref.psnr(sr, hr, SCALE, True), ref.ssim(sr, hr, SCALE, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 256, (args.size, args.size, 3)).astype(np.uint8) for _ in range(args.images)]
    tensors = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images]
    spnir_pipeline(tensors[0], Clock())  # warm-up (and the resize bands of this size)

    clock = Clock()
    with tempfile.TemporaryDirectory() as folder:
        paths = [save_image(tensor, Path(folder) / f"{i}.png") for i, tensor in enumerate(tensors)]
        ours = []
        for path, tensor in zip(paths, tensors):  # as an evaluation loop: read an image, measure it
            clock.time("decode PNG", load_image, path)
            ours.append(clock.time("spnir torch", spnir_pipeline, tensor, clock))
    theirs = [clock.time("numpy", numpy_pipeline, image) for image in images]

    worst = max(max(abs(a[0] - b[0]), abs(a[1] - b[1])) for a, b in zip(ours, theirs))
    print(f"{args.images} images {args.size}x{args.size}, x{SCALE} down+up + PSNR/SSIM (Y), "
          f"{args.threads} thread(s); median per image, wall / CPU")
    for stage in ("spnir torch", "  downscale + round", "  upscale", "  PSNR + SSIM", "numpy", "decode PNG"):
        wall, cpu = clock.median_ms(stage.strip())
        print(f"  {stage:<20}: {wall:8.1f} / {cpu:8.1f} ms")
    torch_wall, torch_cpu = clock.median_ms("spnir torch")
    numpy_wall, numpy_cpu = clock.median_ms("numpy")
    decode_cpu = clock.median_ms("decode PNG")[1]
    print(f"  speed-up vs numpy   : {numpy_wall / torch_wall:8.1f}x wall, {numpy_cpu / torch_cpu:.1f}x CPU   "
          f"(largest metric difference {worst:.2e})")
    print(f"  100 such images, decoding included: {(torch_cpu + decode_cpu) / 10:.1f} s of CPU time")


if __name__ == "__main__":
    main()
