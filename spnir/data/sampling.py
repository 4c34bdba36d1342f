"""Sampling for training: per-sample seeding, aligned random crops, flips/rotations, the epoch order.

Reproducibility: every random choice for a training sample (crop position, flips, degradation parameters and
noise) comes from one generator made by :func:`sample_generator` from ``(base_seed, epoch, index)``. Nothing
uses the global RNG, so DataLoader workers need no ``worker_init_fn``, and a patch depends only on those three
numbers: not on the worker that made it, the number of workers, or what ran before. The shuffled order of an
epoch is likewise a pure function of ``(base_seed, epoch)``. To resume exactly after ``it`` iterations::

    sampler = EpochSampler(len(dataset), base_seed=seed)
    loader = DataLoader(dataset, batch_size=bs, sampler=sampler, num_workers=2, drop_last=True)
    per_epoch = len(sampler) // bs
    sampler.set_epoch(it // per_epoch, skip=(it % per_epoch) * bs)  # then iterate as usual

The sampler yields ``(epoch, index)`` keys, so the epoch reaches the workers with each index (persistent
workers stay correct); ``dataset[i]`` with a plain int uses
:attr:`~spnir.data.datasets.PatchDataset.epoch`. The datasets that use these are in :mod:`spnir.data.datasets`.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from spnir.errors import SpnirError

SAMPLE_STREAM, SHUFFLE_STREAM, SYNTHETIC_STREAM = 0, 1, 2  # independent generators per purpose


def sample_seed(base_seed: int, epoch: int, index: int, stream: int = SAMPLE_STREAM) -> int:
    """A 63-bit seed that is a pure function of its arguments (numpy's ``SeedSequence`` hashing)."""
    words = np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, int(epoch), int(index), int(stream)])
    return int(words.generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def sample_generator(base_seed: int, epoch: int, index: int, stream: int = SAMPLE_STREAM) -> torch.Generator:
    """The CPU generator for sample ``index`` of ``epoch`` (see the module doc)."""
    return torch.Generator().manual_seed(sample_seed(base_seed, epoch, index, stream))


def _randint(high: int, generator: torch.Generator) -> int:
    return int(torch.randint(high, (), generator=generator))


def _named(name: str | os.PathLike | None, message: str) -> str:
    return f"{name}: {message}" if name is not None else message


def random_crop_box(height: int, width: int, patch: int, generator: torch.Generator, step: int = 1,
                    name: str | os.PathLike | None = None) -> tuple[int, int]:
    """Top-left corner of a ``patch x patch`` crop, both coordinates multiples of ``step``; ``name`` (the
    image's path) starts the error message of a patch larger than the image."""
    if patch > height or patch > width:
        raise SpnirError(_named(name, f"patch {patch}x{patch} is larger than the image {width}x{height} (WxH)"))
    top = _randint((height - patch) // step + 1, generator) * step
    left = _randint((width - patch) // step + 1, generator) * step
    return top, left


def paired_random_crop(lq: torch.Tensor, gt: torch.Tensor, gt_patch: int, scale: int,
                       generator: torch.Generator, name: str | os.PathLike | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop a ``gt_patch`` GT patch and the LQ patch of ``gt_patch / scale`` pixels that covers the same area;
    ``name`` (the LQ image's path) starts the error messages."""
    if gt_patch % scale:
        raise SpnirError(f"patch size {gt_patch} is not a multiple of scale {scale}")
    h, w = lq.shape[-2:]
    if gt.shape[-2:] != (h * scale, w * scale):
        raise SpnirError(_named(name, f"LQ {w}x{h} and GT {gt.shape[-1]}x{gt.shape[-2]} (WxH) do not match "
                                      f"scale {scale}"))
    p = gt_patch // scale
    top, left = random_crop_box(h, w, p, generator, name=name)
    lq_crop = lq[..., top : top + p, left : left + p]
    gt_crop = gt[..., top * scale : (top + p) * scale, left * scale : (left + p) * scale]
    return lq_crop, gt_crop


def augment(tensors: Sequence[torch.Tensor], generator: torch.Generator, hflip: bool = True, vflip: bool = True,
            rot90: bool = True) -> list[torch.Tensor]:
    """Apply the same random horizontal flip, vertical flip and transpose (90-degree rotation) to every tensor.

    Together they cover the 8 flips/rotations of a square. Three draws are always made, enabled or not, so
    switching one off does not change the others' randomness.
    """
    draws = [bool(torch.rand((), generator=generator) < 0.5) for _ in range(3)]
    do_h, do_v, do_t = hflip and draws[0], vflip and draws[1], rot90 and draws[2]
    out = []
    for t in tensors:
        if do_h:
            t = t.flip(-1)
        if do_v:
            t = t.flip(-2)
        if do_t:
            t = t.transpose(-2, -1)
        out.append(t.contiguous())
    return out


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys in an order that depends only on ``(base_seed, epoch)``; see module doc."""

    def __init__(self, length: int, base_seed: int = 0, shuffle: bool = True) -> None:
        self.length, self.base_seed, self.shuffle = int(length), int(base_seed), shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch to iterate next and how many of its first keys to skip (for resuming)."""
        if not 0 <= skip <= self.length:
            raise SpnirError(f"skip must be in 0..{self.length}, got {skip}")
        self.epoch, self.skip = int(epoch), int(skip)

    def order(self, epoch: int) -> list[int]:
        """The dataset indices of ``epoch`` in iteration order."""
        if not self.shuffle:
            return list(range(self.length))
        g = sample_generator(self.base_seed, epoch, 0, SHUFFLE_STREAM)
        return torch.randperm(self.length, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return iter([(epoch, i) for i in self.order(epoch)[self.skip:]])

    def __len__(self) -> int:
        return self.length - self.skip


__all__ = ["EpochSampler", "augment", "paired_random_crop", "random_crop_box", "sample_generator", "sample_seed"]
