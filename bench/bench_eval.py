"""Evaluation speed: spnir's batched torch resize + PSNR/SSIM vs a straightforward numpy version, side by side.

Per image: MATLAB-bicubic downscale x4, round, upscale x4, then PSNR and SSIM on Y (border 4). The numpy side
is tests/reference_numpy.py (row-at-a-time resize, sliding-window SSIM). Both run in this process on the same
images; the ratio is what matters, not the absolute times.

    .venv/bin/python bench/bench_eval.py [--images 4] [--size 512] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import reference_numpy as ref  # noqa: E402

from spnir.imresize import imresize  # noqa: E402
from spnir.metrics import MetricSettings  # noqa: E402


def spnir_pipeline(hr: torch.Tensor, scale: int, settings: MetricSettings) -> tuple[float, float]:
    lr = imresize(hr, 1 / scale).clamp(0, 1).mul(255).round().div(255)
    sr = imresize(lr, scale)
    p, s = settings.measure(sr[None], hr[None])
    return float(p[0]), float(s[0])


def numpy_pipeline(hr: np.ndarray, scale: int) -> tuple[float, float]:
    lr = np.clip(np.round(ref.imresize(hr / 255.0, 1 / scale) * 255), 0, 255) / 255
    sr = np.clip(np.round(ref.imresize(lr, scale) * 255), 0, 255).astype(np.uint8)
    return ref.psnr(sr, hr, scale, True), ref.ssim(sr, hr, scale, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 256, (args.size, args.size, 3)).astype(np.uint8) for _ in range(args.images)]
    tensors = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images]
    settings = MetricSettings(crop_border=4, y_channel=True, convention="basicsr")
    spnir_pipeline(tensors[0][:, :64, :64], 4, settings)  # warm-up

    start = time.perf_counter()
    ours = [spnir_pipeline(t, 4, settings) for t in tensors]
    t_torch = time.perf_counter() - start
    start = time.perf_counter()
    theirs = [numpy_pipeline(im, 4) for im in images]
    t_numpy = time.perf_counter() - start

    worst = max(max(abs(a[0] - b[0]), abs(a[1] - b[1])) for a, b in zip(ours, theirs))
    print(f"{args.images} images {args.size}x{args.size}, x4 down+up + PSNR/SSIM (Y), {args.threads} thread(s)")
    print(f"  spnir torch : {t_torch:8.3f} s  ({t_torch / args.images * 1000:7.1f} ms/image)")
    print(f"  numpy       : {t_numpy:8.3f} s  ({t_numpy / args.images * 1000:7.1f} ms/image)")
    print(f"  speed-up    : {t_numpy / t_torch:8.1f}x   (largest metric difference {worst:.2e})")


if __name__ == "__main__":
    main()
