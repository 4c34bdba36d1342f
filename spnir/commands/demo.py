"""``spnir demo``: plain vs SPN training of one small network on the embedded photographs."""
from __future__ import annotations

import argparse

from spnir.commands import output_folder, positive_int, vgg_weights_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", type=output_folder, help="output folder (default runs/demo)")
    parser.add_argument("--iterations", type=positive_int, default=400, help="iterations per run (default 400)")
    parser.add_argument(
        "--vgg-weights", default=None, type=vgg_weights_source,
        help="imagenet, random or a torchvision file (default: ImageNet if cached, else random, said plainly)",
    )


def run(args: argparse.Namespace) -> int:
    from spnir.demo import run_demo

    run_demo(args.out, args.iterations, args.vgg_weights)
    return 0
