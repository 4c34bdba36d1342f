"""``spnir export``: a checkpoint as an ONNX file (verified in onnxruntime) or a safetensors file with metadata.

    spnir export --checkpoint run/model_final.pt --out edsr_x4.onnx --dynamic
    spnir export --checkpoint IMDN_x4.pth --model imdn --scale 4 --out imdn_x4.safetensors

The format follows ``--out``'s suffix (``.onnx``, ``.safetensors``); ``--format``, when given, must agree. An existing
``--out`` is replaced only with ``--overwrite``, and never when it is the checkpoint itself. See
:mod:`spnir.export` for what is verified.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from spnir.commands import add_model_arguments, model_from_arguments, output_file_like, positive_int
from spnir.errors import SpnirError

if TYPE_CHECKING:
    from torch import nn

SUFFIXES = {".onnx": "onnx", ".safetensors": "safetensors"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--out", required=True, type=output_file_like("model.onnx"),
                        help="file to write (.onnx or .safetensors)")
    parser.add_argument("--format", choices=("onnx", "safetensors"),
                        help="must agree with --out's suffix (the default)")
    parser.add_argument("--dynamic", action="store_true",
                        help="ONNX: height and width are free (from the model's minimum side to 8192); "
                             "default: fixed to the traced size")
    parser.add_argument("--size", type=positive_int,
                        help="ONNX: traced height in pixels of the input (its width is 1.5x); default 64, or the "
                             "model's minimum side")
    parser.add_argument("--opset", type=positive_int, help="ONNX opset, 18 or newer (default 18)")
    parser.add_argument("--half", action="store_true", help="float16 weights (ONNX: input and output too)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists")


def output_format(out: Path, chosen: str | None) -> str:
    """The format to write: the suffix of ``--out`` (``.onnx``, ``.safetensors``); ``--format`` must agree."""
    implied = SUFFIXES.get(out.suffix.lower())
    if implied is None:
        raise SpnirError(f"--out {out}: name it .onnx or .safetensors (the format follows the suffix)")
    if chosen is not None and chosen != implied:
        raise SpnirError(f"--out {out} ends in {out.suffix} but --format is {chosen}")
    return implied


def check_arguments(args: argparse.Namespace, fmt: str) -> None:
    """Refuse, before any model loads, options of the other format and an ``--out`` that would replace a file."""
    out, checkpoint = Path(args.out), Path(args.checkpoint)
    if fmt == "safetensors":
        given = [name for name, value in (("--dynamic", args.dynamic), ("--size", args.size),
                                           ("--opset", args.opset)) if value]
        if given:
            raise SpnirError(f"{', '.join(given)}: ONNX options; a safetensors export holds weights only")
    if fmt == "onnx":
        from spnir.export import DEFAULT_OPSET, check_opset, check_traced_size, require_export_packages

        require_export_packages()
        check_opset(args.opset or DEFAULT_OPSET)
        check_traced_size(args.size)
    if out.exists() and out.resolve() == checkpoint.resolve():
        raise SpnirError(f"--out {out} is the checkpoint itself; choose another --out")
    if out.exists() and not args.overwrite:
        raise SpnirError(f"{out} already exists; use --overwrite to replace it, or another --out")


def run(args: argparse.Namespace) -> int:
    from spnir.atomic import remove_stale_temporaries
    from spnir.export import DEFAULT_OPSET, MAX_SIZE, TOLERANCE, describe_model, min_size, opset_of
    from spnir.progress import note

    out = Path(args.out)
    fmt = output_format(out, args.format)
    check_arguments(args, fmt)
    remove_stale_temporaries(out.parent)  # what a killed export was writing
    model, scale = model_from_arguments(args, args.scale)
    info = describe_model(model)
    what = f"preset {info['preset']}" + (f" x{scale}" if scale > 1 else "") + (", fp16" if args.half else ", fp32")
    if fmt == "safetensors":
        _export_safetensors(model, out, args.half, what)
        return 0
    from spnir.export import export_onnx

    opset = args.opset or DEFAULT_OPSET
    note(f"exporting {what} to ONNX (opset {opset}); this traces the model and can take a minute")
    checks = export_onnx(model, out, dynamic=args.dynamic, size=args.size, opset=opset, half=args.half)
    first = checks[0]
    sizes = f"height/width {min_size(model)}..{MAX_SIZE}" if args.dynamic else f"fixed {first.height}x{first.width}"
    print(f"wrote {out} ({what}, {sizes}, opset {opset_of(out)}, {out.stat().st_size / 1e6:.1f} MB)")
    diffs = ", ".join(f"{c.height}x{c.width}: {c.max_diff:.2g}" for c in checks)
    print(f"onnxruntime vs PyTorch, max |difference| on [0, 1] images: {diffs} "
          f"(allowed {TOLERANCE['fp16' if args.half else 'fp32']:g})")
    return 0


def _export_safetensors(model: nn.Module, out: Path, half: bool, what: str) -> None:
    """Write (the library loads the file back and compares the weights, see :func:`spnir.export.export_safetensors`),
    then say what was written."""
    from spnir.export import export_safetensors, metadata_of

    export_safetensors(model, out, half=half)
    meta = metadata_of(out)
    tensors = len(model.state_dict())
    print(f"wrote {out} ({what}, {tensors} tensors, {out.stat().st_size / 1e6:.1f} MB); loads back with "
          f"--checkpoint {out}; metadata: " + ", ".join(f"spnir.{k}={meta[k]}" for k in ("preset", "scale", "task",
                                                                                        "version")))
