"""Reading and writing images as float tensors, with clear errors for files that are not what we expect.

Convention everywhere in spnir: an image is a ``float32`` tensor ``(3, H, W)``, RGB, values in ``[0, 1]``;
8-bit files map ``v -> v / 255`` and are written back with ``round(clamp(x, 0, 1) * 255)`` as BasicSR's
``tensor2img`` does.

What is converted, and reported in :attr:`LoadedImage.notes`:
- grayscale (``L``, palette without colour) is replicated to three channels, as the SR field does for
  Set14's ``bridge.png``;
- RGBA / LA with a fully opaque alpha channel drop the alpha channel.

One-channel models get :func:`to_gray` of the image (the file's own gray values for a grayscale file).

What is rejected with a :class:`~spnir.errors.SpnirError` naming the file: unreadable or truncated files,
images with real transparency, 16-bit files (benchmarks and metrics assume 8 bits per channel), and headers
claiming more pixels than Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS`` times two, 179
megapixels by default; a 69-byte PNG can claim 20000x20000). Images between half that limit and the limit
are read without Pillow's warning; whether restoring them fits in memory is :mod:`spnir.restore`'s check.
"""
from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from spnir.atomic import atomic_path
from spnir.errors import SpnirError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LOSSY_FORMATS = ("JPEG", "WEBP")  # Pillow format names that lose information when written


@dataclass
class LoadedImage:
    """An image read from disk: ``data`` is ``(3, H, W)`` float32 in ``[0, 1]``."""

    data: torch.Tensor
    path: Path
    notes: list[str] = field(default_factory=list)


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has one of the image extensions spnir reads."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder`` (raises if it is missing or holds no images)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SpnirError(f"{folder}: not a folder of images")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and is_image_file(p))
    if not files:
        raise SpnirError(
            f"{folder}: no image files found (expected {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as fh:
        head = fh.read(25)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 25:
        return head[24]
    return None


_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def _refuse_missing_or_wide(path: Path) -> None:
    """What shows before opening the image: a missing file, a 16-bit PNG."""
    if not path.is_file():
        raise SpnirError(f"{path}: no such image file")
    if _png_bit_depth(path) == 16:
        raise SpnirError(f"{path}: 16-bit PNG; expected 8 bits per channel (convert it to 8-bit first)")


def _refuse_wide_mode(path: Path, mode: str) -> None:
    if mode in _WIDE_MODES:
        raise SpnirError(f"{path}: {mode} image (16/32-bit); expected 8 bits per channel")


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """``Image.open(path)``; a decompression bomb becomes :class:`SpnirError` naming the file, and Pillow's
    warning below its limit stays quiet (one line per bad image, nothing else on stderr)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                yield img
    except Image.DecompressionBombError as exc:
        claimed, limit = (re.findall(r"\d+", str(exc)) + ["?", "?"])[:2]
        raise SpnirError(f"{path}: refused: its header claims {claimed} pixels, over Pillow's decompression-bomb "
                         f"limit of {limit}; expected a smaller image (or a damaged or hostile file)") from None


def header_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header, without decoding the pixels; what the header shows
    :func:`load_image` would refuse (not an image, 16/32-bit) is refused here, naming the file. A truncated
    file or real transparency shows only when decoding (``data.verify``, :func:`load_image`)."""
    path = Path(path)
    _refuse_missing_or_wide(path)
    try:
        with _opened(path) as img:
            width, height = img.size
            mode = img.mode
    except SpnirError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SpnirError(f"{path}: cannot read image header ({exc}); expected an intact image file") from exc
    _refuse_wide_mode(path, mode)
    if width < 1 or height < 1:
        raise SpnirError(f"{path}: image of size {width}x{height}; expected at least one pixel")
    return height, width


def load_image(path: str | os.PathLike) -> LoadedImage:
    """Read an 8-bit image file as ``(3, H, W)`` float32 RGB in ``[0, 1]``; see the module doc."""
    path = Path(path)
    notes: list[str] = []
    _refuse_missing_or_wide(path)
    try:
        with _opened(path) as img:
            img.load()
            mode = img.mode
            _refuse_wide_mode(path, mode)
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                mode = img.mode
            if mode in ("RGBA", "LA"):
                alpha = np.asarray(img.getchannel("A"))
                if alpha.min() < 255:
                    raise SpnirError(
                        f"{path}: image has transparency (alpha channel below 255); expected opaque RGB"
                    )
                notes.append("opaque alpha channel dropped")
                img = img.convert("RGB" if mode == "RGBA" else "L")
                mode = img.mode
            if mode in ("L", "1"):
                notes.append("grayscale, replicated to 3 channels")
                img = img.convert("RGB")
            elif mode != "RGB":
                notes.append(f"{mode} converted to RGB")
                img = img.convert("RGB")
            array = np.asarray(img, dtype=np.uint8)
    except SpnirError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SpnirError(f"{path}: cannot read image ({exc}); expected an intact 8-bit image file") from exc
    data = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
    return LoadedImage(data=data, path=path, notes=notes)


# MATLAB's rgb2gray weights (the ones behind the gray BSD68 and Set12 files).
RGB2GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def to_gray(image: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` (or ``(N, 3, H, W)``) -> one channel: the channel itself when all three are equal (a
    grayscale file read as RGB, exactly), else MATLAB ``rgb2gray`` rounded to 8 bit as on a uint8 image.
    One-channel input is returned as it is."""
    channels = image.shape[-3]
    if channels == 1:
        return image
    if channels != 3:
        raise SpnirError(f"to_gray: expected 1 or 3 channels, got shape {tuple(image.shape)}")
    first = image.narrow(-3, 0, 1)
    if torch.equal(image, first.expand_as(image)):
        return first.contiguous()
    weights = torch.tensor(RGB2GRAY_WEIGHTS, dtype=torch.float64).view(3, 1, 1)
    gray = (image.double() * 255 * weights).sum(dim=-3, keepdim=True).round().clamp(0, 255) / 255
    return gray.to(image.dtype)


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Shortcut for ``load_image(path).data``."""
    return load_image(path).data


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8, rounding as BasicSR's ``tensor2img``;
    ``(1, H, W)`` -> ``(H, W)`` (a grayscale file)."""
    if image.dim() != 3:
        raise SpnirError(f"expected a (C, H, W) image tensor, got shape {tuple(image.shape)}")
    array = image.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).cpu()
    return array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()


def image_format(path: str | os.PathLike) -> str:
    """The Pillow format written for ``path``'s extension (``PNG``, ``JPEG``, ...; PNG when unknown)."""
    return Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")


def save_image(image: torch.Tensor, path: str | os.PathLike, quality: int | None = None) -> Path:
    """Write a ``(3, H, W)`` float image as 8-bit in the format of ``path``'s extension; the file appears whole
    or not at all.

    A lossy format (JPEG, WebP) is written only at a ``quality`` the caller gives (1-100; JPEG with full
    chroma resolution, 4:4:4); lossless formats ignore ``quality``.
    """
    path = Path(path)
    fmt = image_format(path)
    options: dict[str, int] = {}
    if fmt in LOSSY_FORMATS:
        if quality is None or not 1 <= quality <= 100:
            raise SpnirError(f"{path}: {fmt} is lossy; writing it needs a quality from 1 to 100, got {quality}")
        options = {"quality": quality, "subsampling": 0} if fmt == "JPEG" else {"quality": quality}
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format=fmt, **options)
    return path
