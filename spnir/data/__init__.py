"""Data for every restoration task: paired benchmark folders, synthetic degradations, training patches and a
builtin image set.

- :class:`PairedFolder`: LQ/GT folders in the layouts the benchmarks ship (``sr``, ``reside``, ``rain100``,
  ``ddn``, ``gopro``, ``csv``; ``auto`` detects them).
- :mod:`spnir.data.degrade`: ``bicubic``, ``haze``, ``rain``, ``blur``, ``noise``, ``jpeg`` and
  :func:`build_degradation` for pipelines from configs.
- :mod:`spnir.data.datasets`: :class:`CleanImages`, :class:`PatchDataset` (training patches),
  :class:`SyntheticPairs` (validation pairs); :mod:`spnir.data.sampling`: :class:`EpochSampler` and the
  per-sample seeding that makes them reproducible from ``(base_seed, epoch, index)``.
- :mod:`spnir.data.builtin`: scikit-image's photographs, split into train and val, with real depth for one.

See docs/data.md.
"""
from spnir.data import builtin, degrade
from spnir.data.datasets import CleanImages, PatchDataset, SyntheticPairs
from spnir.data.degrade import Compose, build_degradation
from spnir.data.paired import LAYOUTS, PairedFolder
from spnir.data.sampling import EpochSampler, augment, paired_random_crop, sample_generator

__all__ = [
    "LAYOUTS", "CleanImages", "Compose", "EpochSampler", "PairedFolder", "PatchDataset", "SyntheticPairs",
    "augment", "build_degradation", "builtin", "degrade", "paired_random_crop", "sample_generator",
]
