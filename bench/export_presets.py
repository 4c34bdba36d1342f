"""Every preset at its full (official) size exported to ONNX with dynamic height/width, then checked in
onnxruntime against PyTorch: the table of ``docs/models.md`` ("Export"). Seeded random weights (the
differences depend on the architecture, not on trained values). Minutes per large preset on a CPU.

    python bench/export_presets.py [--presets edsr,swinir-light] [--half] [--out-dir /tmp/spnir-export]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from spnir.archs import create_model, list_models
from spnir.archs.registry import get_preset
from spnir.export import TOLERANCE, export_onnx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(list_models()), help="comma-separated (default: all)")
    parser.add_argument("--half", action="store_true", help="float16 exports")
    parser.add_argument("--out-dir", type=Path, help="keep the .onnx files here (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.out_dir or Path(tempfile.mkdtemp(prefix="spnir-export-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {'fp16' if args.half else 'fp32'}, threads {torch.get_num_threads()}")
    print("| preset | scale | traced | checked sizes: max abs difference | export s | MB |")
    print("|---|---|---|---|---|---|")
    for name in args.presets.split(","):
        preset = get_preset(name)
        scale = preset.scales[-1] if preset.scales else None
        torch.manual_seed(0)
        model = create_model(name, scale).eval()
        path = folder / f"{name}.onnx"
        start = time.perf_counter()
        checks = export_onnx(model, path, dynamic=True, half=args.half)
        seconds = time.perf_counter() - start
        sizes = ", ".join(f"{c.height}x{c.width}: {c.max_diff:.1e}" for c in checks)
        print(f"| {name} | {scale or 1} | {checks[0].height}x{checks[0].width} | {sizes} | {seconds:.0f} | "
              f"{path.stat().st_size / 1e6:.1f} |", flush=True)
    print(f"allowed: {TOLERANCE['fp16' if args.half else 'fp32']:g}; files in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
