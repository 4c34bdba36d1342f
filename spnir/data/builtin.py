"""A small real image set with no download: the photographs bundled with scikit-image.

Only files that ship inside the scikit-image wheel are used (``lily``, ``eagle``, ``skin``, ``kidney`` and others
need a download and are left out). Images are ``(3, H, W)`` float32 RGB in ``[0, 1]``; grayscale ones are
replicated to three channels, as :mod:`spnir.imageio` does.

Split (fixed, by scene, so the two stereo views never straddle it):

- ``train``: astronaut, coffee, rocket, hubble_deep_field, immunohistochemistry, retina, brick, grass, gravel,
  moon, coins
- ``val``: chelsea, camera, motorcycle_left, motorcycle_right

``retina`` (1411x1411) is reduced 3x by box averaging to 470x470 so that the set stays small.

Depth: :func:`depth` returns real depth for ``motorcycle_left`` from the Middlebury 2014 ground-truth disparity
bundled with it: ``Z = f B / (d + doffs)`` with the calibration of the 4x down-sampled images (``f = 994.978`` px,
``B = 193.001`` mm, ``doffs = 31.086`` px), i.e. depth is proportional to ``1 / (d + doffs)``. Pixels without
ground truth (occlusions, NaN/inf) take the farther of their nearest valid neighbours in the row, the usual
occlusion fill. By default depth is divided by its maximum (farthest = 1), the relative units
:func:`spnir.data.degrade.haze` expects; ``metric=True`` gives metres.
"""
from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np
import torch

from spnir.errors import SpnirError
from spnir.imageio import save_image
from spnir.optional import require

SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
              "brick", "grass", "gravel", "moon", "coins"),
    "val": ("chelsea", "camera", "motorcycle_left", "motorcycle_right"),
}
NAMES: tuple[str, ...] = SPLITS["train"] + SPLITS["val"]
DEPTH_NAMES: tuple[str, ...] = ("motorcycle_left",)

_FOCAL_PX, _BASELINE_MM, _DOFFS_PX = 994.978, 193.001, 31.086
_REDUCE = {"retina": 3}


def _skimage_array(name: str) -> np.ndarray:
    skdata = require("skimage.data", "spnir's built-in photographs")

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skdata.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return getattr(skdata, name)()


def names(split: str = "all") -> tuple[str, ...]:
    """Image names in ``split`` (``"train"``, ``"val"`` or ``"all"``)."""
    if split == "all":
        return NAMES
    if split not in SPLITS:
        raise SpnirError(f"unknown builtin split {split!r}; expected 'train', 'val' or 'all'")
    return SPLITS[split]


@cache
def _image(name: str) -> torch.Tensor:
    array = np.asarray(_skimage_array(name))
    if array.dtype != np.uint8:
        raise SpnirError(f"builtin image {name!r}: expected 8-bit data, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    array = array[..., :3]
    img = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)
    factor = _REDUCE.get(name)
    if factor:
        img = torch.nn.functional.avg_pool2d(img[None], factor)[0]
        img = img.mul(255).round().div(255)  # stay on the 8-bit grid like every other image
    return img


def image(name: str) -> torch.Tensor:
    """One builtin image as ``(3, H, W)`` float32 RGB in ``[0, 1]`` (a fresh copy)."""
    if name not in NAMES:
        raise SpnirError(f"unknown builtin image {name!r}; expected one of {', '.join(NAMES)}")
    return _image(name).clone()


def images(split: str = "train") -> list[torch.Tensor]:
    """The images of ``split`` (``"train"``, ``"val"`` or ``"all"``), in :data:`SPLITS` order."""
    return [image(n) for n in names(split)]


def _fill_invalid_rows(disp: np.ndarray) -> np.ndarray:
    """Replace non-finite disparities with the smaller (farther) of the nearest valid ones left and right."""
    valid = np.isfinite(disp)
    h, w = disp.shape
    cols = np.arange(w)[None, :].repeat(h, 0)
    left_idx = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
    right_idx = np.minimum.accumulate(np.where(valid, cols, w)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(h)[:, None].repeat(w, 1)
    safe = np.where(valid, disp, np.inf)
    left = np.where(left_idx >= 0, safe[rows, np.clip(left_idx, 0, w - 1)], np.inf)
    right = np.where(right_idx < w, safe[rows, np.clip(right_idx, 0, w - 1)], np.inf)
    filled = np.where(valid, disp, np.minimum(left, right))
    if not np.isfinite(filled).all():  # whole rows without ground truth
        filled = np.where(np.isfinite(filled), filled, np.nanmin(np.where(valid, disp, np.nan)))
    return filled


@cache
def _depth(name: str) -> torch.Tensor:
    skdata = require("skimage.data", "spnir's built-in photographs")

    _, _, disp = skdata.stereo_motorcycle()
    disp = _fill_invalid_rows(np.asarray(disp, dtype=np.float64))
    depth_m = _FOCAL_PX * _BASELINE_MM / (disp + _DOFFS_PX) / 1000.0
    return torch.from_numpy(depth_m).float()[None]


def depth(name: str, metric: bool = False) -> torch.Tensor:
    """Depth ``(1, H, W)`` of a builtin image that has one (:data:`DEPTH_NAMES`), see the module doc."""
    if name not in DEPTH_NAMES:
        raise SpnirError(f"builtin image {name!r} has no depth map; available: {', '.join(DEPTH_NAMES)}")
    d = _depth(name).clone()
    return d if metric else d / d.max()


def write_folder(folder: str | os.PathLike, split: str = "train") -> list[Path]:
    """Write the images of ``split`` as ``NAME.png`` into ``folder`` (for the command line); returns the paths."""
    folder = Path(folder)
    return [save_image(image(n), folder / f"{n}.png") for n in names(split)]


__all__ = ["SPLITS", "NAMES", "DEPTH_NAMES", "names", "image", "images", "depth", "write_folder"]
