"""``spnir eval``: PSNR/SSIM (and LPIPS/DISTS) of a method on benchmark sets, printed as a paper-like table and
saved as JSON.

    spnir eval --model bicubic --task sr --scale 4 --data Set5 Set14 --convention matlab --json out.json
    spnir eval --model edsr --checkpoint EDSR_x4.pth --scale 4 --data Set5
    spnir eval --model edsr --checkpoint EDSR_x4.pth --scale 4 --data Set5 --metrics psnr,ssim,lpips,dists
    spnir eval --model ffanet --checkpoint its.pk --task dehaze --pair SOTS/hazy SOTS/clear
    spnir eval --checkpoint runs/x/model.safetensors --scale 4 --data Set5   # spnir checkpoint: preset recorded
    spnir eval --model nafnet-width64 --checkpoint NAFNet-GoPro-width64.pth --task deblur --set local=true \
        --pair GoPro/test/blur GoPro/test/sharp
    spnir eval --model dncnn --checkpoint dncnn_25.pth --task denoise --sigma 25 --data Set12   # KAIR's protocol
    spnir eval --model swinir-real --checkpoint x.pth --scale 4 --data RealPhotos --tile 256   # large images

The model is built as ``spnir restore`` builds it (:func:`spnir.archs.model_files.model_for_inference`).
A 1-channel model (DnCNN) is fed grayscale images (:func:`spnir.imageio.to_gray`). ``--task denoise --sigma S``
makes the noisy input from clean images (``--noise-protocol``, see :mod:`spnir.evaluation`). ``--tile N`` restores
in tiles as ``spnir restore`` and training validation do (equal to whole images when a tile covers the image).
The defaults of ``--channel`` and ``--crop-border`` are the task's (:data:`spnir.evaluation.TASK_CONVENTIONS`).
"""
from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path

import torch

from spnir.atomic import atomic_path
from spnir.commands import (
    add_runtime_arguments,
    existing_file,
    existing_folder,
    model_from_arguments,
    non_negative_int,
    output_file,
    positive_int,
    runtime_device,
    vgg_weights_source,
)
from spnir.errors import SpnirError
from spnir.evaluation import (
    NOISE_PROTOCOLS,
    TASK_CONVENTIONS,
    TASKS,
    BenchmarkSet,
    Evaluator,
    Inference,
    NoiseProtocol,
    RestoreFn,
    find_set,
    format_table,
    model_restore,
    results_json,
)
from spnir.imresize import imresize
from spnir.metrics import CONVENTIONS
from spnir.metrics.suite import PERCEPTUAL, MetricSuite, check_metric_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", dest="preset", type=_method,
                        help="'bicubic' (default without --checkpoint) or a preset name; omit it for a spnir "
                             "checkpoint, which records its preset")
    parser.add_argument("--checkpoint", type=existing_file,
                        help="weights for --model (official release, BasicSR or spnir file)")
    parser.add_argument("--key", help="state dict inside the checkpoint, e.g. params_ema (default as BasicSR)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="preset override (YAML value) on top of a spnir checkpoint's recorded ones, e.g. "
                             "--set local=true (NAFNet's test-time local statistics); repeatable")
    parser.add_argument("--task", choices=TASKS,
                        help="restoration task (default: the one a spnir checkpoint records, else sr)")
    parser.add_argument("--scale", type=positive_int,
                        help="SR factor (required for --task sr unless a spnir checkpoint records it; 1 otherwise)")
    parser.add_argument("--data", nargs="+", default=[], metavar="DIR", type=existing_folder,
                        help="benchmark sets: a folder of HR images (SR), or a folder holding LQ/GT sub-folders")
    parser.add_argument("--pair", nargs=2, action="append", default=[], metavar=("LQ_DIR", "GT_DIR"),
                        type=existing_folder, help="a paired set given as two folders (repeatable)")
    parser.add_argument("--sigma", type=_sigma, metavar="S",
                        help="--task denoise: add Gaussian noise of this std (0..255 units) to clean --data images")
    parser.add_argument("--noise-protocol", choices=NOISE_PROTOCOLS,
                        help="with --sigma: float: noisy input neither clipped nor rounded (KAIR's test script, the "
                             "published tables); 8bit: clipped and rounded as a saved noisy file (default: float)")
    parser.add_argument("--noise-seed", type=int,
                        help="with --sigma: seed of numpy's RandomState, reset for every image as KAIR does "
                             "(default: 0)")
    parser.add_argument("--convention", choices=CONVENTIONS, default="basicsr",
                        help="Y channel as float (basicsr, PyTorch frameworks) or rounded to 8 bit (matlab, "
                             "the classic tables); default: basicsr")
    parser.add_argument("--channel", choices=("y", "rgb"),
                        help="measure on the Y channel or RGB (default: y for sr and derain, rgb otherwise)")
    parser.add_argument("--crop-border", type=non_negative_int,
                        help="pixels ignored at each edge (default: the scale for sr)")
    parser.add_argument("--metrics", default="psnr,ssim", type=_metric_list,
                        help="comma-separated, from psnr, ssim, lpips, dists (default: psnr,ssim); lpips and dists "
                             "(lower is better, on RGB) need `spnir weights vgg16` and `spnir weights lpips-vgg` / "
                             "`spnir weights dists`")
    parser.add_argument("--vgg-weights", default="imagenet", metavar="imagenet|FILE|random", type=vgg_weights_source,
                        help="VGG16 of lpips/dists: imagenet (the cached torchvision file, default), a torchvision "
                             "file, or random (seeded; for tests only, not the metrics' values)")
    parser.add_argument("--tile", type=positive_int, metavar="N",
                        help="restore in N x N LQ-pixel tiles (large images; default: whole images)")
    parser.add_argument("--tile-overlap", type=non_negative_int, default=32, metavar="PX",
                        help="overlap of neighbouring tiles in LQ pixels, blended (with --tile; default: 32)")
    parser.add_argument("--json", metavar="OUT", type=output_file, help="also write the numbers to this JSON file")
    parser.add_argument("--on-error", choices=("skip", "stop"), default="skip",
                        help="a bad image is skipped and reported (default) or stops the run")
    add_runtime_arguments(parser)


def _method(text: str) -> str:
    """``bicubic`` or a model preset; a typo names the near match."""
    from spnir.archs import list_models

    if text == "bicubic" or text in list_models():
        return text
    choices = ["bicubic", *list_models()]
    near = difflib.get_close_matches(text, choices, n=3)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    raise argparse.ArgumentTypeError(f"unknown method {text!r}{hint}; known: {', '.join(choices)}")


def _sigma(text: str) -> float:
    """A noise level from 0 to 255 (8-bit units)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{value:g} is out of range; expected a noise std from 0 to 255 (8-bit "
                                         "units, e.g. 25)")
    return value


def _metric_list(text: str) -> list[str]:
    try:
        return check_metric_names([t.strip() for t in text.split(",") if t.strip()], "--metrics")
    except SpnirError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _recorded(args: argparse.Namespace) -> None:
    """Fill ``--task`` and ``--scale`` from what a spnir checkpoint records, where they are not given."""
    if args.checkpoint and (args.task is None or (args.task == "sr" and args.scale is None)):
        from spnir.archs.model_files import checkpoint_preset, read_checkpoint
        from spnir.archs.registry import get_preset

        record = checkpoint_preset(read_checkpoint(args.checkpoint))
        if record and args.preset in (None, record["name"]):
            args.task = args.task or get_preset(record["name"]).task
            if args.scale is None and args.task == "sr":
                args.scale = record.get("scale")
    args.task = args.task or "sr"


def _scale(args: argparse.Namespace) -> int:
    if args.task == "sr":
        if args.scale is None or args.scale < 1:
            raise SpnirError("--task sr needs --scale N (a positive integer, e.g. --scale 4)")
        return args.scale
    if args.scale not in (None, 1):
        raise SpnirError(f"--task {args.task} works at scale 1; got --scale {args.scale}")
    return 1


def _model_restore(args: argparse.Namespace, scale: int, device: torch.device) -> tuple[RestoreFn, str, int]:
    from spnir.archs.model_files import input_channels
    from spnir.archs.registry import preset_record
    from spnir.restore import MemoryCheck

    if not args.checkpoint:
        raise SpnirError(f"--model {args.preset} needs --checkpoint PATH (its trained weights)")
    model, _ = model_from_arguments(args, scale)
    model.eval().to(device)
    channels = input_channels(model)
    fits = MemoryCheck(model, scale, device, channels, tile=args.tile)
    restore_tiles = model_restore(model, Inference(scale, args.tile, args.tile_overlap), device)

    def restore(lq: torch.Tensor) -> torch.Tensor:
        fits(*lq.shape[-2:])
        return restore_tiles(lq)

    record = preset_record(model)
    assert record is not None  # model_for_inference builds spnir presets only
    return restore, record["name"], channels


def _restore(args: argparse.Namespace, scale: int, device: torch.device) -> tuple[RestoreFn, str, int]:
    """``(restore, method name, input channels)``."""
    if args.preset == "bicubic" or (args.preset is None and not args.checkpoint):
        if args.checkpoint or args.overrides:
            raise SpnirError("--model bicubic takes no --checkpoint and no --set")
        if args.task != "sr":
            raise SpnirError(f"--model bicubic is the SR baseline; --task {args.task} needs a trained --model")
        if args.tile is not None:
            raise SpnirError("--tile restores a network in tiles; --model bicubic resizes whole images")
        return (lambda lq: imresize(lq, scale)), "Bicubic", 3
    return _model_restore(args, scale, device)


def _sets(args: argparse.Namespace, scale: int) -> list[BenchmarkSet]:
    noise_options = [o for o, v in (("--noise-protocol", args.noise_protocol), ("--noise-seed", args.noise_seed))
                     if v is not None]
    if noise_options and args.sigma is None:
        raise SpnirError(f"{' and '.join(noise_options)} shape the noise --sigma S adds (--task denoise on clean "
                         "--data folders); without --sigma there is no noise to shape")
    if args.sigma is not None and args.task != "denoise":
        raise SpnirError(f"--sigma adds noise for --task denoise; got --task {args.task}")
    if args.sigma is not None and args.pair:
        raise SpnirError("--sigma makes the noisy input from clean --data folders; --pair sets bring their own")
    clean = args.sigma is not None
    sets = [BenchmarkSet(Path(d).name, Path(d)) if clean else find_set(d, args.task, scale) for d in args.data]
    sets += [BenchmarkSet(_pair_name(Path(lq), Path(gt)), Path(gt), Path(lq)) for lq, gt in args.pair]
    if not sets:
        raise SpnirError("no benchmark sets given; use --data DIR [DIR ...] or --pair LQ_DIR GT_DIR")
    names = [s.name for s in sets]
    clash = next((n for n in names if n == "Avg." or names.count(n) > 1), None)
    if clash is not None:
        folders = ", ".join(str(s.lq_dir or s.gt_dir) for s in sets if s.name == clash)
        what = "the average's column" if clash == "Avg." else "another set"
        raise SpnirError(f"set {clash!r} ({folders}) has the name of {what}; the table and JSON need one name "
                         "per column: give the sets folders of different names")
    return sets


def _pair_name(lq: Path, gt: Path) -> str:
    """``SOTS/hazy`` + ``SOTS/clear`` -> ``SOTS``; unrelated folders -> the GT folder's name."""
    lq, gt = lq.resolve(), gt.resolve()
    return gt.parent.name if lq.parent == gt.parent and gt.parent.name else gt.name


def run(args: argparse.Namespace) -> int:
    _recorded(args)
    scale = _scale(args)
    if args.tile is not None and args.tile_overlap >= args.tile:
        raise SpnirError(f"--tile-overlap {args.tile_overlap} must be smaller than --tile {args.tile}")
    noise_protocol: NoiseProtocol = args.noise_protocol or "float"  # argparse's choices are NOISE_PROTOCOLS
    noise_seed = args.noise_seed or 0
    sets = _sets(args, scale)
    device = runtime_device(args)
    restore, method, channels = _restore(args, scale, device)
    settings = TASK_CONVENTIONS[args.task].settings(scale, args.convention, None if args.channel is None else
                                                     args.channel == "y", args.crop_border)
    if PERCEPTUAL.keys() & set(args.metrics):
        from spnir.weights.vgg import resolve_feature_space

        resolve_feature_space("vgg16", args.vgg_weights)  # missing ImageNet weights: said before any image
    metrics = MetricSuite.build(args.metrics, settings, args.vgg_weights, device)
    # The published bicubic rows come from MATLAB's script that resizes Y alone, in float (see evaluation doc).
    classic = method == "Bicubic" and args.convention == "matlab" and settings.y_channel
    evaluator = Evaluator(restore, settings, scale=scale, lr_protocol="classic" if classic else "rgb8",
                          on_error=args.on_error, device=device, metrics=metrics, channels=channels,
                          noise_sigma=args.sigma, noise_protocol=noise_protocol, noise_seed=noise_seed)
    results = [evaluator.run_set(s) for s in sets]
    caption = metrics.describe() + (f", x{scale}" if args.task == "sr" else f", {args.task}")
    if classic:
        caption += ", bicubic by the classic MATLAB protocol (Y resized in float)"
    if args.sigma is not None:
        caption += (f", Gaussian noise sigma {args.sigma:g} ({noise_protocol} noisy input"
                    f"{', not clipped or rounded' if noise_protocol == 'float' else ', clipped and rounded'}, "
                    f"seed {noise_seed} per image)")
    if channels == 1:
        caption += ", grayscale"
    if args.task == "sr":
        method = f"{method} x{scale}"
    print(format_table(method, results, caption))
    for line in metrics.sources():
        print(f"weights {line}")
    if args.json:
        _write_json(Path(args.json), results_json(results))
    empty = [r for r in results if not r.images]
    if empty:
        first = empty[0].skipped[0].reason if empty[0].skipped else "no image"
        print(f"{len(empty)} of {len(results)} set(s) measured nothing: {', '.join(r.name for r in empty)} "
              f"(first reason: {first})")
        return 1
    return 0


def _write_json(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
