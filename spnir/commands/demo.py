"""``spnir demo``: plain vs SPN training of one small network on the embedded photographs."""
from __future__ import annotations

import argparse

from spnir.commands import int_at_least, output_folder, vgg_weights_source
from spnir.optional import require


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=output_folder,
                        help="output folder (default runs/demo, or runs/demo-2, -3, ... when that holds a demo)")
    parser.add_argument("--overwrite", action="store_true", help="replace the demo already in --out")
    parser.add_argument("--iterations", type=at_least_two, default=400,
                        help="iterations per run, at least 2 (default 400)")
    parser.add_argument(
        "--vgg-weights", default=None, type=vgg_weights_source,
        help="imagenet, random or a torchvision file (default: ImageNet if cached, else random, said plainly)",
    )


def at_least_two(text: str) -> int:
    """``--iterations``: the demo validates and compares at least twice per run."""
    return int_at_least(text, 2)


def run(args: argparse.Namespace) -> int:
    from spnir.demo import free_demo_folder, run_demo

    for module in ("matplotlib", "skimage"):  # before minutes of training, not after
        require(module, "the demo")

    out = args.out if args.out is not None else free_demo_folder("runs/demo")
    run_demo(out, args.iterations, args.vgg_weights, overwrite=args.overwrite)
    return 0
