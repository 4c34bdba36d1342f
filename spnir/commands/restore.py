"""``spnir restore``: run a preset with a checkpoint over images or folders, keeping the file names."""
from __future__ import annotations

import argparse
from pathlib import Path

from spnir.commands import (
    add_runtime_arguments, existing_file, non_negative_int, output_folder, positive_int, preset_name, runtime_device,
)
from spnir.errors import SpnirError
from spnir.progress import note, progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, type=output_folder, help="output folder (file names are kept)")
    parser.add_argument("--checkpoint", required=True, type=existing_file,
                        help=".pth/.pt/.safetensors weights (official or spnir)")
    parser.add_argument("--model", type=preset_name,
                        help="preset name (see docs/models.md); optional for spnir checkpoints")
    parser.add_argument("--scale", type=positive_int, help="upscaling factor of SR presets")
    parser.add_argument("--key", help="entry of the checkpoint holding the weights, e.g. params_ema")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="preset override (YAML value), e.g. --set local=true, --set img_size=64; repeatable")
    parser.add_argument("--tile", type=positive_int, help="restore in tiles of this size (pixels of the input)")
    parser.add_argument("--tile-overlap", type=non_negative_int, default=32,
                        help="overlap of neighbouring tiles (default 32)")
    parser.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/rotations (x8 time)")
    add_runtime_arguments(parser)
    parser.add_argument("--half", action="store_true", help="float16 inference (cuda only)")


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Image files named directly plus the images of named folders; names must not collide."""
    from spnir.imageio import is_image_file, list_images

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += list_images(item)
        elif item.is_file():
            if not is_image_file(item):
                raise SpnirError(f"{item}: not an image file name this tool reads")
            files.append(item)
        else:
            raise SpnirError(f"{item}: no such file or folder")
    seen: dict[str, Path] = {}
    for path in files:
        if path.name in seen and seen[path.name] != path:
            raise SpnirError(f"{path} and {seen[path.name]} would both be written as {path.name}")
        seen[path.name] = path
    return list(dict.fromkeys(files))


def run(args: argparse.Namespace) -> int:
    from spnir.imageio import load_image, save_image
    from spnir.restore import restore_image

    from spnir.archs.checkpoint import model_for_inference, parse_overrides

    if args.tile is not None and args.tile_overlap >= args.tile:
        raise SpnirError(f"--tile-overlap {args.tile_overlap} must be smaller than --tile {args.tile}")
    files = collect_inputs(args.inputs)
    device = runtime_device(args)
    if args.half and device.type != "cuda":
        raise SpnirError("--half needs a CUDA device (float16 on CPU is slow or unsupported)")
    model, scale = model_for_inference(args.checkpoint, args.model, args.scale, args.key,
                                       parse_overrides(args.overrides), cli=True)
    model = model.eval().to(device)
    if args.half:
        model = model.half()
    out_dir = Path(args.out)
    for path in progress(files, desc="restore", unit="img"):
        image = load_image(path)
        for text in image.notes:
            note(f"{path}: {text}")
        try:
            restored = restore_image(model, image.data, scale, tile=args.tile, tile_overlap=args.tile_overlap,
                                     self_ensemble=args.self_ensemble)
        except SpnirError as exc:
            raise SpnirError(f"{path}: {exc}") from None
        save_image(restored, out_dir / path.name)
    print(f"restored {len(files)} image(s) into {out_dir}")
    return 0
