"""Where ImageNet VGG weights come from: a path, or torchvision's file names in the torch hub cache.

spnir never trains against random VGG features silently: :func:`resolve_vgg_weights` either finds the
ImageNet file or raises an error that says how to get it, and random weights are used only when asked for.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch

from spnir.atomic import atomic_path
from spnir.errors import SpnirError
from spnir.progress import shows_bar

# torchvision's released ImageNet weights: file name (with its sha256 prefix) and address.
TORCHVISION_FILES: dict[str, str] = {
    "vgg16": "vgg16-397923af.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
}
DOWNLOAD_ROOT = "https://download.pytorch.org/models/"


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``), as torch.hub uses."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_vgg_path(kind: str) -> Path:
    """Where the torchvision file for ``kind`` lives in the hub cache (whether or not it is there)."""
    return hub_checkpoint_dir() / TORCHVISION_FILES[_check_kind(kind)]


def resolve_vgg_weights(kind: str, vgg_weights: str | os.PathLike | None = "imagenet",
                        ask_random: str = "vgg_weights='random'") -> Path | None:
    """The ImageNet weight file to load for ``kind``, or ``None`` for ``vgg_weights="random"``.

    ``vgg_weights`` is ``"imagenet"`` (look in the torch hub cache), ``"random"``, or a path to a
    torchvision-format file. ``ask_random`` is how the caller's user asks for random weights, for the message
    of missing ImageNet weights (``--vgg-weights random`` on the command line).
    """
    _check_kind(kind)
    if vgg_weights is None or str(vgg_weights) == "random":
        return None
    if str(vgg_weights) == "imagenet":
        path = cached_vgg_path(kind)
        if not path.is_file():
            raise SpnirError(
                f"ImageNet {kind} weights not found at {path}. Place them with "
                f"`spnir weights {kind} --from FILE` (torchvision's {TORCHVISION_FILES[kind]}), "
                f"or `spnir weights {kind}` on a machine that is online; or give the file's path instead of imagenet. "
                f"To train against seeded random VGG features instead (not the method's feature space), "
                f"ask for it explicitly with {ask_random}."
            )
        return path
    path = Path(vgg_weights).expanduser()
    if not path.is_file():
        raise SpnirError(f"VGG weights file {path} does not exist (expected a torchvision {kind} .pth file)")
    return path


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_hash_prefix(kind: str) -> str:
    """The sha256 prefix torchvision's file name carries (``397923af`` for vgg16)."""
    return TORCHVISION_FILES[_check_kind(kind)].rsplit("-", 1)[1].split(".")[0]


def verify_vgg_file(kind: str, path: str | os.PathLike) -> Path:
    """``path`` if it is torchvision's ImageNet ``kind`` file (sha256 prefix of its released name), else an error."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SpnirError(f"{path}: no such file")
    actual, prefix = sha256_of(path), expected_hash_prefix(kind)
    if not actual.startswith(prefix):
        raise SpnirError(
            f"{path}: sha256 {actual[:8]}... does not match torchvision's {TORCHVISION_FILES[kind]} "
            f"(expected prefix {prefix}); this is not the ImageNet {kind} file"
        )
    return path


def install_vgg_weights(kind: str, source: str | os.PathLike | None = None) -> Path:
    """Place torchvision's ``kind`` weights in the hub cache, verifying the sha256 prefix of its name.

    ``source`` is a local file; without it the file is downloaded (needs a network connection).
    """
    dest = cached_vgg_path(kind)
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = expected_hash_prefix(kind)
    if source is None:
        url = DOWNLOAD_ROOT + TORCHVISION_FILES[kind]
        try:
            torch.hub.download_url_to_file(url, str(dest), hash_prefix=prefix, progress=shows_bar())
        except Exception as exc:  # network errors come in many types
            raise SpnirError(
                f"could not download {url} ({exc}); fetch the file elsewhere and run "
                f"`spnir weights {kind} --from FILE`"
            ) from exc
        return dest
    source = verify_vgg_file(kind, source)
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
    return dest


def _check_kind(kind: str) -> str:
    if kind not in TORCHVISION_FILES:
        raise SpnirError(f"unknown VGG kind {kind!r}; expected one of {', '.join(TORCHVISION_FILES)}")
    return kind
