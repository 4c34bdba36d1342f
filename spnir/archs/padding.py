"""Pad an image batch to a multiple of a size (bottom/right) and crop a result back.

Window transformers need sides divisible by their window, U-Nets by ``2**depth``. The models pad inside
``forward`` with :func:`pad_to_multiple` and crop with :func:`crop_to`, so any input size works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> torch.Tensor:
    """Pad ``x`` (N, C, H, W) at the bottom and right so that H and W are multiples of ``multiple``.

    ``mode`` is ``"reflect"`` (SwinIR, DehazeFormer), ``"constant"`` (zeros, as NAFNet) or
    ``"replicate"``. Reflect padding wider than the image (an image smaller than the window) is done in
    steps, mirroring the mirrored image, instead of failing; a side of one pixel is replicated.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    height, width = x.shape[-2:]
    pad_h = (multiple - height % multiple) % multiple
    pad_w = (multiple - width % multiple) % multiple
    if torch.compiler.is_exporting():
        # Sizes are symbolic (ONNX export with dynamic height/width): one pad, even of zero, and no branch on
        # the amounts, which would fix the traced size into the graph. Reflect needs sides >= multiple there.
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    if pad_h == 0 and pad_w == 0:
        return x
    if mode != "reflect":
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    while pad_h > 0 or pad_w > 0:
        height, width = x.shape[-2:]
        step_h, step_w = min(pad_h, height - 1), min(pad_w, width - 1)
        if step_h == 0 and step_w == 0:  # what is left pads a one-pixel side
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h, pad_w = pad_h - step_h, pad_w - step_w
    return x


def crop_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The top-left ``height`` x ``width`` part of ``x`` (N, C, H, W): undoes :func:`pad_to_multiple`."""
    return x[..., :height, :width]
