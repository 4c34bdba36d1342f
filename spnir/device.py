"""Choosing the torch device and the autocast precision: one rule for training, evaluation and inference."""
from __future__ import annotations

import re

import torch

from spnir.errors import SpnirError


def pick_device(preference: str | None = "auto", local_rank: int = 0, setting: str = "device") -> torch.device:
    """The device ``preference`` names: ``auto`` (or ``None``) is GPU ``local_rank`` when torch sees one, else
    the CPU; ``cpu``; ``cuda`` (GPU ``local_rank``) or ``cuda:N``. A GPU is made the current CUDA device.

    Asking for CUDA where torch sees none, or naming anything else, is an error naming ``setting``
    (e.g. ``train.device`` or ``--device``).
    """
    choice = "cuda" if preference in (None, "auto") and torch.cuda.is_available() else (preference or "auto")
    if choice in ("cpu", "auto"):
        return torch.device("cpu")
    found = re.fullmatch(r"cuda(?::(\d+))?", choice)
    if found is None:
        raise SpnirError(f"{setting} = {preference!r}; expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise SpnirError(f"{setting} = {preference}, but torch sees no CUDA device here; use cpu")
    index = int(found.group(1)) if found.group(1) is not None else local_rank
    if index >= torch.cuda.device_count():
        raise SpnirError(f"{setting} = {preference}: no CUDA device {index} (torch sees {torch.cuda.device_count()})")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


# Reduced precisions of autocast, spelled bf16 and fp16; other spellings are refused naming the one to use.
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_SPELLINGS: dict[str, str] = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "fp32": "float32"}


def autocast_dtype(name: str, setting: str = "dtype") -> torch.dtype | None:
    """The autocast dtype ``name`` spells (``bf16``, ``fp16``); ``None`` for ``float32`` or ``none`` (no
    autocast). Another spelling (``bfloat16``, ``float16``) is an error naming ``setting`` and the spelling to use."""
    if name in ("float32", "none"):
        return None
    if name in AUTOCAST_DTYPES:
        return AUTOCAST_DTYPES[name]
    if name in DTYPE_SPELLINGS:
        raise SpnirError(f"{setting} = {name!r}: write {DTYPE_SPELLINGS[name]} (autocast dtypes are spelled bf16, "
                         "fp16)")
    raise SpnirError(f"{setting} = {name!r}; expected one of float32, {', '.join(AUTOCAST_DTYPES)}")
