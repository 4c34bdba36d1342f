"""``spnir restore``: run a preset with a checkpoint over images or folders, keeping the file names.

Safe to run twice and safe to run wrong: before any model loads it refuses an ``--out`` that is one of the
input folders (or the folder of an input file), names the first output that already exists unless
``--overwrite`` (replace them) or ``--skip-existing`` (keep them: continue an interrupted run) is given, and
writes PNG (lossless) unless ``--format same`` asks for the inputs' formats, lossy ones (JPEG, WebP) only at
the ``--quality`` the user sets. Outputs appear whole or not at all, so an existing output is a finished one (the
temporary file of a killed restore is removed by the next one). A
broken, oversized or too large image (one whose restore would not fit in memory, :mod:`spnir.restore`) is
skipped with the reason (``--on-error skip``, the default) or stops the run (``--on-error stop``).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from spnir.commands import (
    add_model_arguments,
    add_runtime_arguments,
    model_from_arguments,
    non_negative_int,
    output_folder,
    positive_int,
    runtime_device,
)
from spnir.errors import SpnirError
from spnir.progress import note, progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, type=output_folder,
                        help="output folder, not an input folder (file names are kept)")
    add_model_arguments(parser)
    parser.add_argument("--tile", type=positive_int, help="restore in tiles of this size (pixels of the input)")
    parser.add_argument("--tile-overlap", type=non_negative_int, default=32,
                        help="overlap of neighbouring tiles (default 32)")
    parser.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/rotations (x8 time)")
    parser.add_argument("--format", choices=("png", "same"), default="png",
                        help="png (default, lossless: photo.jpg -> photo.png) or same (the input's format; JPEG "
                             "and WebP need --quality)")
    parser.add_argument("--quality", type=int, metavar="1-100",
                        help="quality of JPEG/WebP outputs with --format same")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist in --out")
    parser.add_argument("--skip-existing", action="store_true",
                        help="keep outputs that already exist in --out and restore the others (continues an "
                             "interrupted run; outputs are written whole or not at all)")
    parser.add_argument("--on-error", choices=("skip", "stop"), default="skip",
                        help="a bad image is skipped and reported (default) or stops the run")
    add_runtime_arguments(parser)
    parser.add_argument("--half", action="store_true", help="float16 inference (cuda only)")


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Image files named directly plus the images of named folders, each once."""
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
    return list(dict.fromkeys(files))


def plan_outputs(files: list[Path], out_dir: Path, fmt: str) -> dict[Path, Path]:
    """``input -> output`` in ``out_dir``: the same name (``fmt="same"``) or the name with ``.png``; two
    inputs that would write the same output are refused."""
    plan: dict[Path, Path] = {}
    written: dict[Path, Path] = {}
    for path in files:
        out = out_dir / (path.name if fmt == "same" else path.with_suffix(".png").name)
        if out in written:
            raise SpnirError(f"{path} and {written[out]} would both be written as {out}")
        plan[path], written[out] = out, path
    return plan


def check_plan(plan: dict[Path, Path], inputs: list[str], out_dir: Path, fmt: str, quality: int | None,
               overwrite: bool, skip_existing: bool = False) -> None:
    """Refuse, before any work, to write into an input folder, over existing outputs (without
    ``--overwrite`` or ``--skip-existing``) or a lossy format at a quality nobody chose."""
    from spnir.imageio import LOSSY_FORMATS, image_format

    target = out_dir.resolve()
    folders = {Path(i).resolve(): Path(i) for i in inputs if Path(i).is_dir()}
    folders.update({p.parent.resolve(): p for p in plan if p.parent.resolve() not in folders})
    if target in folders:
        raise SpnirError(f"--out {out_dir} is where the input {folders[target]} lies; restored images would "
                         "replace or mix with the originals (a second run would restore them again): choose "
                         "another --out")
    if quality is not None and not 1 <= quality <= 100:
        raise SpnirError(f"--quality must be from 1 to 100; got {quality}")
    if fmt == "png" and quality is not None:
        raise SpnirError("--quality sets JPEG/WebP quality with --format same; PNG (the default) is lossless")
    lossy = [p for p in plan if image_format(plan[p]) in LOSSY_FORMATS]
    if fmt == "same" and lossy and quality is None:
        raise SpnirError(f"{lossy[0]} is {image_format(lossy[0])}: --format same would re-encode it lossy; give "
                         "--quality N (1-100), or leave --format png (lossless, the default)")
    existing = [out for out in plan.values() if out.exists()]
    for out in existing:
        same = next((p for p in plan if os.path.samefile(p, out)), None)
        if same is not None:
            raise SpnirError(f"{out} is the input {same} (a link to it): restoring would replace the original; "
                             "choose another --out")
    if existing and not (overwrite or skip_existing):
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise SpnirError(f"{existing[0]} already exists{more}; use --skip-existing to keep the outputs there and "
                         "restore the rest (an interrupted run), --overwrite to replace them, or another --out")


def run(args: argparse.Namespace) -> int:
    from spnir.archs.model_files import input_channels
    from spnir.atomic import remove_stale_temporaries
    from spnir.imageio import header_size, load_image, save_image, to_gray
    from spnir.restore import MemoryCheck

    if args.tile is not None and args.tile_overlap >= args.tile:
        raise SpnirError(f"--tile-overlap {args.tile_overlap} must be smaller than --tile {args.tile}")
    if args.overwrite and args.skip_existing:
        raise SpnirError("--overwrite replaces existing outputs and --skip-existing keeps them; give one")
    files = collect_inputs(args.inputs)
    out_dir = Path(args.out)
    plan = plan_outputs(files, out_dir, args.format)
    check_plan(plan, args.inputs, out_dir, args.format, args.quality, args.overwrite, args.skip_existing)
    kept = [path for path in files if args.skip_existing and plan[path].exists()]
    remove_stale_temporaries(out_dir)  # what a killed restore was writing
    device = runtime_device(args)
    if args.half and device.type != "cuda":
        raise SpnirError("--half needs a CUDA device (float16 on CPU is slow or unsupported)")
    model, scale = model_from_arguments(args, args.scale)
    model = model.eval().to(device)
    gray = input_channels(model) == 1  # 1-channel models (DnCNN) read and write grayscale images
    if args.half:
        model = model.half()
    fits = MemoryCheck(model, scale, device, 1 if gray else 3, tile=args.tile)
    todo = [path for path in files if path not in kept]
    skipped: list[str] = []
    told_gray = False
    for path in progress(todo, desc="restore", unit="img"):
        try:
            fits(*header_size(path))
            image = load_image(path)
            if image.notes:
                note(f"{path}: {'; '.join(image.notes)}")
            if gray and not told_gray and not torch.equal(image.data, image.data[:1].expand_as(image.data)):
                note(f"note: the model is grayscale (1 channel): colour images such as {path.name} are restored "
                     "and written in gray (MATLAB rgb2gray)")
                told_gray = True
            restored = _restore(model, to_gray(image.data) if gray else image.data, scale, args)
        except SpnirError as exc:
            reason = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
            if args.on_error == "stop":
                raise SpnirError(reason) from None
            skipped.append(reason)
            note(f"skipped {reason}")
            continue
        save_image(restored, plan[path], quality=args.quality)
    done = f"restored {len(todo) - len(skipped)} image(s) into {out_dir}"
    print(done + (f"; kept {len(kept)} finished output(s) already there" if kept else ""))
    if skipped:
        print(f"skipped {len(skipped)} image(s):\n" + "\n".join(f"  {reason}" for reason in skipped))
    return 1 if skipped else 0


def _restore(model: torch.nn.Module, image: torch.Tensor, scale: int, args: argparse.Namespace) -> torch.Tensor:
    """:func:`spnir.restore.restore_image` with the command's options; running out of memory (which
    :class:`~spnir.restore.MemoryCheck` did not foresee) becomes a skip reason."""
    from spnir.restore import restore_image

    try:
        return restore_image(model, image, scale, tile=args.tile, tile_overlap=args.tile_overlap,
                             self_ensemble=args.self_ensemble)
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not isinstance(exc, (MemoryError, torch.OutOfMemoryError)) and "alloc" not in str(exc).lower():
            raise
        advice = "use a smaller --tile" if args.tile else "restore it in tiles: --tile 256"
        raise SpnirError(f"out of memory ({_first_line(exc)}); {advice}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
