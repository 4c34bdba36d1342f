"""``spnir weights vgg16|vgg19 [--from FILE]``: put torchvision's ImageNet VGG file in the torch hub cache."""
from __future__ import annotations

import argparse

from spnir.vgg_weights import TORCHVISION_FILES, cached_vgg_path, install_vgg_weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=sorted(TORCHVISION_FILES), help="which VGG")
    parser.add_argument(
        "--from", dest="source", metavar="FILE",
        help="a local copy of torchvision's file (verified by sha256); without it, download",
    )
    parser.add_argument("--check", action="store_true", help="only say whether the cache holds the file")


def run(args: argparse.Namespace) -> int:
    if args.check:
        path = cached_vgg_path(args.kind)
        print(f"{args.kind}: {'present' if path.is_file() else 'missing'} at {path}")
        return 0 if path.is_file() else 1
    dest = install_vgg_weights(args.kind, args.source)
    print(f"{args.kind}: ImageNet weights verified and placed at {dest}")
    return 0
