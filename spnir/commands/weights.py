"""``spnir weights vgg16|vgg19|lpips-vgg|dists [--from FILE] [--check]``: put a weight file in the torch hub
cache, or check a file (the cached one, or ``--from FILE``) against its sha256.

vgg16/vgg19: torchvision's ImageNet VGG file; vgg16-caffe: Oxford's ImageNet VGG16 in Caffe's input convention
(:data:`spnir.weights.vgg.KNOWN_FILES`). lpips-vgg/dists: the learned weights of LPIPS (VGG) and DISTS, read
out of an installed ``lpips``/``DISTS_pytorch`` package, a wheel or sdist (``--from``) or the file itself, never
importing those packages (see :mod:`spnir.weights.perceptual`)."""
from __future__ import annotations

import argparse

from spnir.commands import existing_file
from spnir.errors import SpnirError
from spnir.weights.perceptual import LEARNED_FILES, cached_learned_path, install_learned_weights, verify_learned_file
from spnir.weights.vgg import KNOWN_FILES, cached_vgg_path, install_vgg_weights, verify_vgg_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=[*KNOWN_FILES, *LEARNED_FILES], help="which weights")
    parser.add_argument(
        "--from", dest="source", metavar="FILE", type=existing_file,
        help="a local copy (verified by sha256): torchvision's file for vgg16/vgg19, the Caffe-convention "
             "safetensors file for vgg16-caffe; for lpips-vgg/dists a wheel, "
             "sdist or the file itself. Without it: download (vgg), or the installed package, else pip download",
    )
    parser.add_argument("--check", action="store_true",
                        help="only verify a file: the cached one, or the --from FILE; nothing is written")


def run(args: argparse.Namespace) -> int:
    learned = args.kind in LEARNED_FILES
    if args.check:
        path = args.source or (cached_learned_path(args.kind) if learned else cached_vgg_path(args.kind))
        if args.source is None and not path.is_file():
            print(f"{args.kind}: missing at {path}")
            return 1
        try:
            (verify_learned_file if learned else verify_vgg_file)(args.kind, path)
        except SpnirError as exc:
            print(f"{args.kind}: {exc}")
            return 1
        what = "the released file" if learned else f"the file of {KNOWN_FILES[args.kind].description}"
        print(f"{args.kind}: {path} is {what}" + ("" if args.source else " (cached)"))
        return 0
    if learned:
        dest, origin = install_learned_weights(args.kind, args.source)
        print(f"{args.kind}: learned weights from {origin} verified (sha256) and placed at {dest}")
        return 0
    dest = install_vgg_weights(args.kind, args.source)
    print(f"{args.kind}: {KNOWN_FILES[args.kind].description} verified and placed at {dest}")
    return 0
