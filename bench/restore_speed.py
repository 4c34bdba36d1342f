"""`spnir restore` speed per preset (output 512x512) and peak memory of tiled restore of a 4000x3000 photo.

    .venv/bin/python bench/restore_speed.py [--presets edsr-baseline,...] [--reps 3] [--threads N]
    .venv/bin/python bench/restore_speed.py --peak-memory dehazeformer-t --tile 256

Throughput: whole-image inference of random weights on one 512x512 output (SR presets get a 512/scale
input), median of ``--reps`` runs after one warm-up. Peak memory runs each tile size in a fresh process
and reports its maximum resident set size (``ru_maxrss``), input and output images included.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import torch
from spn_step import set_allocator

from spnir.archs import create_model, get_preset, list_models
from spnir.restore import restore_image

SR_SCALE = 4
PHOTO = (3000, 4000)  # H, W


def build(name: str, device: torch.device) -> tuple[torch.nn.Module, int]:
    preset = get_preset(name)
    scale = SR_SCALE if preset.scales else None
    torch.manual_seed(0)
    return create_model(name, scale=scale).eval().to(device), scale or 1


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(name: str, reps: int, device: torch.device) -> tuple[float, int]:
    model, scale = build(name, device)
    lq = torch.rand(1, 3, 512 // scale, 512 // scale, device=device)
    restore_image(model, lq, scale)
    times = []
    for _ in range(reps):
        synchronize(device)
        start = time.perf_counter()
        restore_image(model, lq, scale)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), scale


def peak_memory_child(name: str, tile: int, overlap: int, device: torch.device) -> None:
    """Prints output shape, seconds and peak memory in MiB (process RSS on CPU, allocated memory on GPU)."""
    model, scale = build(name, device)
    lq = torch.rand(1, 3, PHOTO[0] // scale, PHOTO[1] // scale, device=device)
    start = time.perf_counter()
    out = restore_image(model, lq, scale, tile=tile, tile_overlap=overlap)
    synchronize(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{tuple(out.shape)} {seconds:.1f} {peak_mib:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(list_models()))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--peak-memory", metavar="PRESET", help="measure tiled restore of a 4000x3000 image")
    parser.add_argument("--tile", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--allocator", choices=("kept", "system"), default="kept",
                        help="freed memory kept in the process (spnir restore's default) or malloc as the "
                             "system sets it")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_allocator(args.allocator)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.child:
        peak_memory_child(args.peak_memory, args.tile[0], args.overlap, device)
        return
    print(f"# restore benchmark on {args.device}: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"fp32, random weights, allocator {args.allocator}")
    if args.peak_memory:
        memory = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB"
        print(f"| preset | input | tile/overlap | output | seconds | {memory} |\n|---|---|---|---|---|---|")
        for tile in args.tile:
            cmd = [sys.executable, __file__, "--child", "--peak-memory", args.peak_memory, "--tile", str(tile),
                   "--overlap", str(args.overlap), "--device", args.device, "--allocator", args.allocator]
            cmd += ["--threads", str(args.threads)] if args.threads else []
            shape, seconds, peak = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.rsplit(" ", 2)
            scale = SR_SCALE if get_preset(args.peak_memory).scales else 1
            print(f"| {args.peak_memory} | {PHOTO[1] // scale}x{PHOTO[0] // scale} | {tile}/{args.overlap} | "
                  f"{shape} | {seconds} | {peak.strip()} |", flush=True)
        return
    print("| preset | input | output | seconds/image | megapixels out/s |\n|---|---|---|---|---|")
    for name in args.presets.split(","):
        seconds, scale = throughput(name, args.reps, device)
        print(f"| {name} | {512 // scale}x{512 // scale} | 512x512 | {seconds:.3f} | {0.262144 / seconds:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
