"""Which VGG feature space a run uses: a weight file *and* the input convention it was trained with.

Vocabulary of ``vgg_weights`` (Python, config ``spn.vgg_weights`` / ``val.vgg_weights``, ``--vgg-weights``):

- ``imagenet``: torchvision's ImageNet file (``vgg16-397923af.pth`` / ``vgg19-dcbb9e9d.pth``) from the torch hub
  cache; torchvision's input convention (RGB in [0, 1], minus mean, divided by std). The method's own file.
- ``imagenet-caffe``: Oxford's original ImageNet VGG16 (the weights Keras ships), placed in the hub cache by
  ``spnir weights vgg16-caffe --from FILE``; Caffe's input convention (x255, BGR, minus the BGR mean, no std).
- ``random``: seeded random weights (not an ImageNet feature space; said wherever the space is named).
- a path to a torchvision-layout file (``.pth`` or ``.safetensors``), optionally prefixed ``caffe:`` or
  ``torchvision:`` to state its convention. Without a prefix a safetensors file's metadata (``input: caffe...``)
  decides, and a file without metadata is taken as torchvision's convention.

spnir never trains against random VGG features silently: :func:`resolve_feature_space` either finds the file or
raises an error that says how to get it, and random weights are used only when asked for.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from spnir.atomic import atomic_path
from spnir.errors import Param, ParameterError, SpnirError

CONVENTIONS = ("torchvision", "caffe")
NAMED_SPACES = ("imagenet", "imagenet-caffe", "random")


@dataclass(frozen=True)
class KnownFile:
    """A released VGG weight file spnir knows by name and hash."""

    kind: str  # the architecture: vgg16 or vgg19
    file_name: str  # its name in the torch hub cache
    sha256: str  # the full hash or the prefix its released name carries
    convention: str  # input convention it was trained with
    description: str  # the feature space in words
    url: str | None  # where it can be downloaded, if anywhere


KNOWN_FILES: dict[str, KnownFile] = {
    "vgg16": KnownFile("vgg16", "vgg16-397923af.pth", "397923af", "torchvision",
                       "ImageNet VGG16, torchvision weights", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "vgg19": KnownFile("vgg19", "vgg19-dcbb9e9d.pth", "dcbb9e9d", "torchvision",
                       "ImageNet VGG19, torchvision weights", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"),
    "vgg16-caffe": KnownFile("vgg16", "vgg16_caffe_features-af14aae0.safetensors",
                             "af14aae0a1de40777b3344416df793e8066f87e4578b65dbdcbf15106d5aed33", "caffe",
                             "ImageNet VGG16, Caffe weights (Oxford's original, Caffe input convention)", None),
}


@dataclass(frozen=True)
class FeatureSpace:
    """A resolved ``vgg_weights``: the file to load (``None`` for random weights), its input convention, and the
    space in words (for start lines, reports and checkpoints)."""

    path: Path | None
    convention: str
    description: str


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``), as torch.hub uses."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_vgg_path(name: str) -> Path:
    """Where the known file ``name`` (``vgg16``, ``vgg19``, ``vgg16-caffe``) lives in the hub cache."""
    return hub_checkpoint_dir() / known_file(name).file_name


def known_file(name: str) -> KnownFile:
    """The known file ``name``, or an error listing them."""
    if name not in KNOWN_FILES:
        raise SpnirError(f"unknown VGG weights {name!r}; expected one of {', '.join(KNOWN_FILES)}")
    return KNOWN_FILES[name]


ASK_RANDOM = Param("vgg_weights", "random")  # how a caller of VGGFeatures asks for random weights


def resolve_feature_space(kind: str, vgg_weights: str | os.PathLike | None = "imagenet", seed: int = 0,
                          ask_random: Param = ASK_RANDOM) -> FeatureSpace:
    """The feature space ``vgg_weights`` names for a ``kind`` network (see the module docstring).

    ``ask_random`` is how the caller's user asks for random weights, for the message of missing ImageNet weights
    (a command words it as its option, ``--vgg-weights random``).
    """
    _check_kind(kind)
    text = "random" if vgg_weights is None else str(vgg_weights)
    if text == "random":
        return FeatureSpace(None, "torchvision",
                            f"{kind} with seeded random weights (seed {seed}), not an ImageNet feature space")
    if text in ("imagenet", "imagenet-caffe"):
        name = kind if text == "imagenet" else f"{kind}-caffe"
        if name not in KNOWN_FILES:
            raise SpnirError(f"no Caffe-convention {kind} file is known to spnir (only vgg16-caffe); give the file's "
                             f"path as caffe:PATH instead of imagenet-caffe")
        known = KNOWN_FILES[name]
        path = cached_vgg_path(name)
        if not path.is_file():
            source = ("torchvision's " if known.convention == "torchvision" else "") + known.file_name.split("-")[0]
            raise ParameterError(
                f"{known.description} not found at {path}. Place it with `spnir weights {name} --from FILE` "
                f"({source} file)"
                + (f", or `spnir weights {name}` on a machine that is online" if known.url else "")
                + "; or give the file's path instead. To train against seeded random VGG features instead (not "
                "the method's feature space), ask for it explicitly with ", ask_random, ".")
        return FeatureSpace(path, known.convention, known.description)
    stated, _, rest = text.partition(":")
    if stated in CONVENTIONS and rest:
        text = rest
    else:
        stated = ""
    path = Path(text).expanduser()
    if not path.is_file():
        raise SpnirError(f"VGG weights file {path} does not exist (expected a torchvision-layout {kind} file, or "
                         f"one of {', '.join(NAMED_SPACES)})")
    declared = declared_convention(path)
    if stated and declared and stated != declared:
        raise SpnirError(f"{path}: this file was trained with {declared}'s input convention (its "
                         f"{'metadata' if path.suffix == '.safetensors' else 'name'} says so), but {stated}:"
                         f" was asked for; drop the prefix or use {declared}:{path}")
    convention = stated or declared or "torchvision"
    label = "Caffe" if convention == "caffe" else "torchvision"
    return FeatureSpace(path, convention, f"{kind.upper()} weights from {path} ({label} input convention)")


def declared_convention(path: Path) -> str | None:
    """The input convention a file says it expects: a safetensors header's ``input`` metadata, or a known
    file's name; ``None`` when the file does not say."""
    for known in KNOWN_FILES.values():
        if path.name == known.file_name:
            return known.convention
    if path.suffix != ".safetensors":
        return None
    try:
        with open(path, "rb") as fh:
            size = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(min(size, 1 << 20)))
    except (OSError, ValueError, struct.error):
        return None  # the loader names an unreadable file
    metadata = (header.get("__metadata__") if isinstance(header, dict) else None) or {}
    stated = str(metadata.get("input", "")).split(":")[0].strip().lower()
    return stated if stated in CONVENTIONS else None


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_hash_prefix(name: str) -> str:
    """The sha256 (or the prefix its released name carries: ``397923af`` for vgg16) of the known file ``name``."""
    return known_file(name).sha256


def verify_vgg_file(name: str, path: str | os.PathLike) -> Path:
    """``path`` if it is the known file ``name`` (by sha256), else an error that says what it is, if spnir knows."""
    known = known_file(name)
    path = Path(path).expanduser()
    if not path.is_file():
        raise SpnirError(f"{path}: no such file")
    actual, expected = sha256_of(path), expected_hash_prefix(name)
    if not actual.startswith(expected):
        other = next((n for n, k in KNOWN_FILES.items() if n != name and actual.startswith(k.sha256)), None)
        what = (f"it is {KNOWN_FILES[other].description}: use `spnir weights {other}`" if other
                else f"this is not the file of {known.description}")
        raise SpnirError(f"{path}: sha256 {actual[:8]}... does not match {known.file_name} "
                         f"(expected {expected[:8]}...); {what}")
    return path


def install_vgg_weights(name: str, source: str | os.PathLike | None = None) -> Path:
    """Place the known file ``name`` in the hub cache, verified by sha256.

    ``source`` is a local file; without it the file is downloaded where it can be (needs a network connection).
    """
    known = known_file(name)
    dest = cached_vgg_path(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source is None:
        if known.url is None:
            raise SpnirError(f"{known.description} has no download address; give a copy with "
                             f"`spnir weights {name} --from FILE`")
        from spnir.progress import shows_bar  # tqdm, from the toolkit extra: imported only to download

        try:
            torch.hub.download_url_to_file(known.url, str(dest), hash_prefix=known.sha256, progress=shows_bar())
        except Exception as exc:  # network errors come in many types
            raise SpnirError(
                f"could not download {known.url} ({exc}); fetch the file elsewhere and run "
                f"`spnir weights {name} --from FILE`"
            ) from exc
        return dest
    source = verify_vgg_file(name, source)
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
    return dest


def _check_kind(kind: str) -> str:
    from spnir.features import VGG_KINDS  # the module that builds them (it imports this one)

    if kind not in VGG_KINDS:
        raise SpnirError(f"unknown VGG kind {kind!r}; expected one of {', '.join(VGG_KINDS)}")
    return kind
