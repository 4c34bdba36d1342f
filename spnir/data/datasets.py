"""Datasets: clean images, training patches, synthetic validation pairs (paired folders: :mod:`spnir.data.paired`).

Sources (what :class:`PatchDataset` crops from): a :class:`~spnir.data.paired.PairedFolder` (items with ``lq``
and ``gt``), or :class:`CleanImages` (items with ``gt`` and maybe ``depth``) plus a degradation pipeline from
:func:`spnir.data.degrade.build_degradation` that makes LQ from each GT patch on the fly (for SR: bicubic
downscaling of the patch, rounded to 8 bit by default like benchmark LR files). Every random choice comes from
the per-sample generators of :mod:`spnir.data.sampling`, so a patch is a pure function of
``(base_seed, epoch, index)``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import ConcatDataset, Dataset

from spnir.data.degrade import Compose, depth_proxy, mod_crop
from spnir.data.paired import OnError, screen
from spnir.data.sampling import SYNTHETIC_STREAM, augment, paired_random_crop, random_crop_box, sample_generator
from spnir.errors import SpnirError
from spnir.imageio import header_size, list_images, read_image, to_gray


class Items(Protocol):
    """A sized, indexable set of item dicts (``{"lq", "gt", ...}``): every dataset here."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


@runtime_checkable
class ImageSource(Items, Protocol):
    """Items whose GT sizes are known without decoding (:class:`CleanImages`, :class:`MergedImages`,
    :class:`~spnir.data.paired.PairedFolder`); :class:`PatchDataset` checks its patch size against them up front."""

    def gt_sizes(self) -> list[tuple[str, int, int]]: ...


class CleanImages(Dataset):
    """Clean (GT-only) images: a folder, the builtin set, or tensors. Items: ``{"gt", "gt_path"}`` and
    ``"depth"`` ``(1, H, W)`` where one is known (builtin ``motorcycle_left``)."""

    def __init__(self, images: Sequence[torch.Tensor] | None = None, names: Sequence[str] | None = None,
                 depths: Sequence[torch.Tensor | None] | None = None,
                 paths: Sequence[str | os.PathLike] | None = None) -> None:
        self.paths: list[Path] | None = None
        self.images: list[torch.Tensor] | None = None
        if paths is not None and images is None:
            self.paths = [Path(p) for p in paths]
            count = len(self.paths)
        elif images is not None and paths is None:
            self.images = list(images)
            count = len(self.images)
        else:
            raise SpnirError("CleanImages needs either images (tensors) or paths (files)")
        if count == 0:
            raise SpnirError("CleanImages: no images given")
        self.names = list(names) if names is not None else (
            [str(p) for p in self.paths] if self.paths is not None else [f"image{i}" for i in range(count)])
        self.depths = list(depths) if depths is not None else [None] * count
        self.skipped: list[tuple[str, str]] = []  # (file, reason) of images from_folder left out
        if len(self.names) != count or len(self.depths) != count:
            raise SpnirError(f"CleanImages: {count} images but {len(self.names)} names and {len(self.depths)} depths")
        tensors: list[torch.Tensor | None] = list(self.images) if self.images is not None else [None] * count
        for name, img, d in zip(self.names, tensors, self.depths):
            if img is not None and (img.dim() != 3 or img.shape[0] != 3):
                raise SpnirError(f"{name}: expected a (3, H, W) image tensor, got {tuple(img.shape)}")
            if d is not None and img is not None and d.shape[-2:] != img.shape[-2:]:
                raise SpnirError(f"{name}: depth {tuple(d.shape[-2:])} does not match image {tuple(img.shape[-2:])}")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, recursive: bool = False, verify: bool = False,
                    on_error: OnError = "stop") -> CleanImages:
        """Every image file in ``folder`` (read on demand with :mod:`spnir.imageio`), each checked now from its
        header (readable, 8-bit) or, with ``verify=True``, decoded once. A file that fails stops construction
        (``on_error="stop"``) or is left out and listed in :attr:`skipped` (``"skip"``)."""
        files = list_images(folder, recursive=recursive)

        def check(path: Path) -> Path:
            if verify:
                read_image(path)
            else:
                header_size(path)
            return path

        paths, skipped = screen(files, check, on_error, name=str)
        if not paths:
            raise SpnirError(f"{folder}: every one of its {len(files)} images failed its check; the first: "
                             f"{skipped[0][1]}")
        images = cls(paths=paths)
        images.skipped = skipped
        return images

    @classmethod
    def builtin(cls, split: str = "train") -> CleanImages:
        """The scikit-image photographs of :mod:`spnir.data.builtin`, with real depth where known."""
        from spnir.data import builtin

        names = builtin.names(split)
        depths = [builtin.depth(n) if n in builtin.DEPTH_NAMES else None for n in names]
        return cls(images=[builtin.image(n) for n in names], names=[f"builtin:{n}" for n in names], depths=depths)

    def __len__(self) -> int:
        return len(self.names)

    def gt_sizes(self) -> list[tuple[str, int, int]]:
        """``(name, H, W)`` per image, from file headers or tensor shapes."""
        if self.paths is not None:
            return [(str(p), *header_size(p)) for p in self.paths]
        assert self.images is not None  # __init__ sets one of paths and images
        return [(n, img.shape[-2], img.shape[-1]) for n, img in zip(self.names, self.images)]

    def __getitem__(self, index: int) -> dict:
        if self.paths is not None:
            gt = read_image(self.paths[index])
        else:
            assert self.images is not None  # __init__ sets one of paths and images
            gt = self.images[index]
        item = {"gt": gt, "gt_path": self.names[index]}
        if self.depths[index] is not None:
            item["depth"] = self.depths[index]
        return item


class MergedImages(ConcatDataset):
    """Several clean-image sources as one (e.g. a folder and the builtin photographs)."""

    def __init__(self, sources: Sequence[CleanImages]) -> None:
        super().__init__(sources)
        self.sources = list(sources)

    def gt_sizes(self) -> list[tuple[str, int, int]]:
        return [size for source in self.sources for size in source.gt_sizes()]


class Grayscale(Dataset):
    """Items of ``source`` with ``gt`` (and ``lq`` when present) as one channel (:func:`spnir.imageio.to_gray`),
    for 1-channel models: grayscale files keep their own values, colour images become MATLAB ``rgb2gray``."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source
        self.scale = getattr(source, "scale", 1)

    def __len__(self) -> int:
        return len(self.source)

    def gt_sizes(self) -> list[tuple[str, int, int]]:
        return self.source.gt_sizes()

    def __getitem__(self, index: int) -> dict:
        item = dict(self.source[index])
        for key in ("gt", "lq"):
            if key in item:
                item[key] = to_gray(item[key])
        return item


def _compact(item: dict) -> dict:
    """An item with its images stored as uint8 where that is exact (8-bit files), else unchanged."""
    out = dict(item)
    for key in ("lq", "gt"):
        image = item.get(key)
        if image is not None and image.is_floating_point():
            levels = image.mul(255.0).round_()
            if torch.equal(levels.div(255.0), image):
                out[key] = levels.to(torch.uint8)
    return out


def _as_float(image: torch.Tensor) -> torch.Tensor:
    """A cached uint8 patch back to float32 in [0, 1] (float input unchanged)."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image


class PatchDataset(Dataset):
    """Random training patches from a paired source, or from clean images plus a degradation pipeline.

    ``patch_size`` is the GT patch side (BasicSR's ``gt_size``), a multiple of ``scale``; the LQ patch is
    ``patch_size / scale``. ``scale`` defaults to the source's (:class:`PairedFolder`) or the degradation's
    (its ``bicubic`` steps). ``enlarge_ratio`` repeats the set so an epoch holds more patches than images.
    ``cache=True`` decodes every source image once, at construction, in this process (forked DataLoader
    workers then share the memory); images on the 8-bit grid are kept as uint8 (a quarter of float32: DIV2K's
    800 HR images take about 7 GB instead of 27). An image smaller than the patch is reported here, naming the file.
    Items: ``{"lq", "gt", "lq_path", "gt_path"}`` (for clean sources ``lq_path`` equals ``gt_path``).
    """

    def __init__(self, source: Items, patch_size: int, scale: int | None = None,
                 degradation: Compose | None = None, hflip: bool = True, vflip: bool = True, rot90: bool = True,
                 enlarge_ratio: int = 1, base_seed: int = 0, cache: bool = False) -> None:
        self.source, self.degradation = source, degradation
        self.paired = degradation is None
        implied = getattr(source, "scale", 1) if degradation is None else degradation.scale
        if scale is not None and scale != implied:
            what = "source" if self.paired else "degradation pipeline"
            raise SpnirError(f"scale {scale} does not match the {what}'s scale {implied}")
        self.scale = implied
        if not isinstance(patch_size, int) or patch_size < 1 or patch_size % self.scale:
            raise SpnirError(f"patch size must be a positive multiple of scale {self.scale}, got {patch_size!r}")
        if not isinstance(enlarge_ratio, int) or enlarge_ratio < 1:
            raise SpnirError(f"enlarge_ratio must be a positive integer, got {enlarge_ratio!r}")
        if len(source) == 0:
            raise SpnirError("training source holds no images")
        self.patch_size, self.enlarge_ratio, self.base_seed = patch_size, enlarge_ratio, base_seed
        self.flips = {"hflip": hflip, "vflip": vflip, "rot90": rot90}
        self.wants_depth = degradation is not None and any(s.type.wants_depth for s in degradation.steps)
        self.epoch = 0
        self._cache: list[dict] | None = [_compact(source[i]) for i in range(len(source))] if cache else None
        self._check_sizes()
        if degradation is not None:
            self._check_pipeline(degradation)

    def _check_sizes(self) -> None:
        if self._cache is not None:
            sizes = [(item["gt_path"], *item["gt"].shape[-2:]) for item in self._cache]
        elif isinstance(self.source, ImageSource):
            sizes = self.source.gt_sizes()
        else:
            return
        small = [(n, h, w) for n, h, w in sizes if 0 < h < self.patch_size or 0 < w < self.patch_size]
        if small:
            listed = "; ".join(f"{n} is {w}x{h}" for n, h, w in small[:3])
            raise SpnirError(f"GT patch {self.patch_size}x{self.patch_size} is larger than {len(small)} image(s) "
                             f"(WxH): {listed}{' ...' if len(small) > 3 else ''}; lower the patch size or "
                             "drop those images")

    def _check_pipeline(self, degradation: Compose) -> None:
        """Run the degradation once on a blank patch so that a wrong pipeline fails here, not in training."""
        patch = torch.full((3, self.patch_size, self.patch_size), 0.5)
        depth = depth_proxy(self.patch_size, self.patch_size) if self.wants_depth else None
        lq = degradation(patch, torch.Generator().manual_seed(0), depth=depth)
        want = self.patch_size // self.scale
        if lq.shape != (3, want, want):
            raise SpnirError(f"degradation turned a {self.patch_size}px patch into {tuple(lq.shape)}; "
                             f"expected (3, {want}, {want})")

    def __len__(self) -> int:
        return len(self.source) * self.enlarge_ratio

    def _item(self, index: int) -> dict:
        i = index % len(self.source)
        return self._cache[i] if self._cache is not None else self.source[i]

    def sample(self, epoch: int, index: int) -> dict:
        """The training sample ``index`` of ``epoch``: a pure function of ``(base_seed, epoch, index)``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        g = sample_generator(self.base_seed, epoch, index)
        item = self._item(index)
        if self.degradation is None:
            lq, gt = paired_random_crop(item["lq"], item["gt"], self.patch_size, self.scale, g, name=item["lq_path"])
            lq, gt = augment([lq, gt], g, **self.flips)
            return {"lq": _as_float(lq), "gt": _as_float(gt), "lq_path": item["lq_path"], "gt_path": item["gt_path"]}
        full = item["gt"]
        h, w = full.shape[-2:]
        if h < self.patch_size or w < self.patch_size:
            raise SpnirError(f"{item['gt_path']}: image {w}x{h} (WxH) is smaller than the patch {self.patch_size}")
        top, left = random_crop_box(h, w, self.patch_size, g, name=item["gt_path"])
        box = (slice(None), slice(top, top + self.patch_size), slice(left, left + self.patch_size))
        tensors = [full[box]]
        if self.wants_depth:
            depth_map = item["depth"] if "depth" in item else depth_proxy(h, 1).expand(1, h, w)
            tensors.append(depth_map[box])
        tensors = augment(tensors, g, **self.flips)
        gt, depth = _as_float(tensors[0]), (tensors[1] if self.wants_depth else None)
        lq = self.degradation(gt, g, depth=depth)
        return {"lq": lq, "gt": gt, "lq_path": item["gt_path"], "gt_path": item["gt_path"]}

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        if isinstance(key, tuple):
            return self.sample(*key)
        return self.sample(self.epoch, int(key))


class SyntheticPairs(Dataset):
    """Whole clean images with their degraded version, for validation: GT is mod-cropped to the pipeline's
    scale and degraded with a generator fixed by ``(seed, index)``, so every evaluation sees the same LQ.
    Items match :class:`~spnir.data.paired.PairedFolder`'s (``lq_path`` equals ``gt_path``)."""

    def __init__(self, source: Items, degradation: Compose, seed: int = 0) -> None:
        if len(source) == 0:
            raise SpnirError("validation source holds no images")
        self.source, self.degradation, self.seed = source, degradation, seed
        self.scale = degradation.scale
        self.wants_depth = any(s.type.wants_depth for s in degradation.steps)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        item = self.source[index]
        gt = mod_crop(item["gt"], self.scale)
        depth = None
        if self.wants_depth:
            depth = mod_crop(item["depth"], self.scale) if "depth" in item else depth_proxy(*gt.shape[-2:])
        g = sample_generator(self.seed, 0, index, SYNTHETIC_STREAM)
        lq = self.degradation(gt, g, depth=depth)
        return {"lq": lq, "gt": gt.contiguous(), "lq_path": item["gt_path"], "gt_path": item["gt_path"]}


__all__ = ["CleanImages", "Grayscale", "MergedImages", "PatchDataset", "SyntheticPairs"]
