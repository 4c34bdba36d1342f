"""``spnir weights vgg16|vgg19 [--from FILE] [--check]``: put torchvision's ImageNet VGG file in the torch hub
cache, or check a file (the cached one, or ``--from FILE``) against torchvision's sha256."""
from __future__ import annotations

import argparse

from spnir.commands import existing_file
from spnir.errors import SpnirError
from spnir.vgg_weights import TORCHVISION_FILES, cached_vgg_path, install_vgg_weights, verify_vgg_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=sorted(TORCHVISION_FILES), help="which VGG")
    parser.add_argument(
        "--from", dest="source", metavar="FILE", type=existing_file,
        help="a local copy of torchvision's file (verified by sha256); without it, download",
    )
    parser.add_argument("--check", action="store_true",
                        help="only verify a file: the cached one, or the --from FILE; nothing is written")


def run(args: argparse.Namespace) -> int:
    if args.check:
        path = args.source or cached_vgg_path(args.kind)
        if args.source is None and not path.is_file():
            print(f"{args.kind}: missing at {path}")
            return 1
        try:
            verify_vgg_file(args.kind, path)
        except SpnirError as exc:
            print(f"{args.kind}: {exc}")
            return 1
        print(f"{args.kind}: {path} is torchvision's ImageNet file" + ("" if args.source else " (cached)"))
        return 0
    dest = install_vgg_weights(args.kind, args.source)
    print(f"{args.kind}: ImageNet weights verified and placed at {dest}")
    return 0
