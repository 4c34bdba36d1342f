"""Sub-commands of the ``spnir`` command line (see :mod:`spnir.cli`), and the options several of them share."""
from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--cpu-allocator``, for the commands that run a model (restore, eval)."""
    from spnir.allocator import CHOICES

    parser.add_argument("--device", default="auto", help="auto (default: cuda when available, else cpu), cpu, cuda "
                                                         "or cuda:N")
    parser.add_argument("--cpu-allocator", choices=CHOICES, default="keep",
                        help="keep (default): freed CPU memory stays in the process, no page faults per image "
                             "(glibc); system: leave malloc as it is")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--model``, ``--scale``, ``--key`` and ``--set``: the model that restore and export
    build (:func:`spnir.archs.model_files.model_for_inference`, read by :func:`model_from_arguments`); eval has
    its own ``--model`` (``bicubic`` too) and ``--scale`` (the task's)."""
    parser.add_argument("--checkpoint", required=True, type=existing_file,
                        help=".pth/.pt/.safetensors weights (official or spnir)")
    parser.add_argument("--model", dest="preset", type=preset_name,
                        help="preset name (see docs/models.md); optional for spnir checkpoints")
    parser.add_argument("--scale", type=positive_int, help="upscaling factor of SR presets")
    parser.add_argument("--key", help="entry of the checkpoint holding the weights, e.g. params_ema")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="preset override (YAML value), e.g. --set local=true, --set img_size=64; repeatable")


def preset_overrides(items: list[str]) -> dict[str, Any]:
    """``--set local=true --set img_size=64`` (restore, eval, export) -> ``{"local": True, "img_size": 64}``,
    each value read as YAML."""
    from spnir.errors import SpnirError
    from spnir.yamlfile import parse_yaml

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpnirError(f"--set {item!r}: expected KEY=VALUE, e.g. --set local=true")
        overrides[key.strip()] = parse_yaml(value, f"--set {key.strip()}")
    return overrides


def model_from_arguments(args: argparse.Namespace, scale: int | None) -> tuple[nn.Module, int]:
    """The model that ``--checkpoint``, ``--model``, ``--key`` and ``--set`` name at ``scale``, its weights
    loaded, and its scale."""
    from spnir.archs.model_files import model_for_inference

    return model_for_inference(args.checkpoint, args.preset, scale, args.key, preset_overrides(args.overrides))


def runtime_device(args: argparse.Namespace) -> torch.device:
    """Apply ``--cpu-allocator`` and return the device ``--device`` names."""
    from spnir.allocator import use_cpu_allocator
    from spnir.device import pick_device

    use_cpu_allocator(args.cpu_allocator)
    return pick_device(args.device, setting="--device")


# -- argument types: each refuses a bad value while the command line is parsed, before anything loads -------
def positive_int(text: str) -> int:
    """An integer >= 1 (``--tile``, ``--scale``)."""
    return int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (``--crop-border``, ``--tile-overlap``)."""
    return int_at_least(text, 0)


def int_at_least(text: str, low: int) -> int:
    """``text`` as an integer >= ``low``, or argparse's error saying so."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; expected an integer >= {low}")
    return value


def existing_file(text: str) -> str:
    """A file that exists (``--checkpoint``, ``-c``, ``--from``)."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; expected a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return text


def existing_folder(text: str) -> str:
    """A folder that exists (``--data``, ``--pair``)."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {'a file, not a folder' if path.exists() else 'no such folder'}")
    return text


def output_file_like(example: str) -> Callable[[str], str]:
    """The argument type of a file to write: not an existing folder (the error suggests ``example`` in it),
    and not inside a path that is a file."""

    def output_file(text: str) -> str:
        path = Path(text).expanduser()
        if path.is_dir() or text.endswith(("/", os.sep)):
            raise argparse.ArgumentTypeError(f"{text} is a folder; expected a file name to write, e.g. "
                                             f"{path / example}")
        _parents_are_folders(path, text)
        return text

    return output_file


output_file = output_file_like("out.json")  # ``--json``


def output_folder(text: str) -> str:
    """A folder to write into (created if missing): not an existing file (``--out``)."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; expected a folder to write into")
    _parents_are_folders(path, text)
    return text


def _parents_are_folders(path: Path, text: str) -> None:
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise argparse.ArgumentTypeError(f"{text}: {blocking} is a file, so nothing can be written below it")


def preset_name(text: str) -> str:
    """A registered model preset (``--model``); a typo names the near match."""
    from spnir.archs import get_preset
    from spnir.errors import SpnirError

    try:
        get_preset(text)
    except SpnirError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def vgg_weights_source(text: str) -> str:
    """A name of :data:`spnir.weights.vgg.NAMED_SPACES` or an existing file, optionally ``caffe:``/``torchvision:``
    prefixed (``--vgg-weights``); a typo names the near match."""
    from spnir.weights.vgg import CONVENTIONS, NAMED_SPACES

    stated, _, rest = text.partition(":")
    path = rest if stated in CONVENTIONS and rest else text
    if text in NAMED_SPACES or Path(path).expanduser().is_file():
        return text
    near = difflib.get_close_matches(text, NAMED_SPACES, n=1)
    hint = f"did you mean {near[0]}? " if near else ""
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither {', '.join(NAMED_SPACES)} nor an existing file; {hint}expected imagenet (torchvision's "
        f"cached file), imagenet-caffe (Oxford's VGG16, Caffe convention), random, or a file path")

