"""Whole-image, tiled and self-ensembled inference with any restoration model.

Tiling bounds memory: the image is cut into ``tile`` x ``tile`` windows overlapping by ``tile_overlap``
pixels, each is restored on the model's device, and its output is added into one output accumulator with
weights that ramp linearly across the overlaps, so seams blend. The weights are separable (a row factor
times a column factor) and the tiles form a grid, so the normalisation is the outer product of two 1-D
sums: no per-pixel weight image is kept. With a tile at least the image size there is one tile of weight
1 and the result equals whole-image inference exactly.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn

from spnir.errors import SpnirError


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap`` shared pixels."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def blend_ramp(size: int, ramp: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D tile weight: ``ramp`` pixels rising from ~0 to 1 at a leading seam (``rise``) and falling at a
    trailing one (``fall``); 1 elsewhere and at image borders. Strictly positive."""
    weight = torch.ones(size)
    ramp = min(ramp, size)
    if ramp > 0:
        steps = (torch.arange(ramp, dtype=torch.float32) + 1) / (ramp + 1)
        if rise:
            weight[:ramp] = torch.minimum(weight[:ramp], steps)
        if fall:
            weight[-ramp:] = torch.minimum(weight[-ramp:], steps.flip(0))
    return weight


def _ensemble_transforms() -> list[tuple[bool, bool, bool]]:
    """(transpose, flip rows, flip columns): the 8 symmetries of the square."""
    return list(itertools.product((False, True), repeat=3))


def _apply(x: torch.Tensor, transpose: bool, flip_h: bool, flip_w: bool) -> torch.Tensor:
    if transpose:
        x = x.transpose(-2, -1)
    dims = [d for d, on in ((-2, flip_h), (-1, flip_w)) if on]
    return x.flip(dims) if dims else x


def _invert(y: torch.Tensor, transpose: bool, flip_h: bool, flip_w: bool) -> torch.Tensor:
    dims = [d for d, on in ((-2, flip_h), (-1, flip_w)) if on]
    y = y.flip(dims) if dims else y
    return y.transpose(-2, -1) if transpose else y


class _TileRunner:
    """Runs the model on one tile: moves it to the model's device/dtype, optionally self-ensembles."""

    def __init__(self, model: nn.Module, scale: int, self_ensemble: bool) -> None:
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = param.dtype if param is not None else torch.float32
        self.model, self.scale = model, scale
        self.transforms = _ensemble_transforms() if self_ensemble else [(False, False, False)]

    def __call__(self, tile: torch.Tensor) -> torch.Tensor:
        x = tile.to(self.device, self.dtype)
        total = None
        for transform in self.transforms:
            y = _invert(self._run(_apply(x, *transform)), *transform).float()
            total = y if total is None else total + y
        return total / len(self.transforms) if len(self.transforms) > 1 else total

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        expected = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        if tuple(y.shape[-2:]) != expected:
            raise SpnirError(
                f"model output is {tuple(y.shape[-2:])} for a {tuple(x.shape[-2:])} input; "
                f"expected {expected} at scale {self.scale} (wrong --scale?)"
            )
        return y


def restore_image(
    model: nn.Module,
    lq: torch.Tensor,
    scale: int = 1,
    tile: int | None = None,
    tile_overlap: int = 32,
    self_ensemble: bool = False,
) -> torch.Tensor:
    """Restore ``lq`` ((C, H, W) or (N, C, H, W), [0, 1]) with ``model``; returns float32 on ``lq``'s device.

    ``tile=None`` runs the whole image at once. The output is not clamped.
    """
    if lq.dim() not in (3, 4):
        raise SpnirError(f"expected an image tensor (C, H, W) or (N, C, H, W), got shape {tuple(lq.shape)}")
    if tile is not None and (tile < 1 or not 0 <= tile_overlap < tile):
        raise SpnirError(f"tile={tile}, tile_overlap={tile_overlap}: need tile >= 1 and 0 <= overlap < tile")
    batch = lq if lq.dim() == 4 else lq.unsqueeze(0)
    run = _TileRunner(model, scale, self_ensemble)
    with torch.inference_mode():
        out = _restore_tiled(run, batch, scale, tile, tile_overlap) if tile else run(batch).to(lq.device)
    return out if lq.dim() == 4 else out[0]


def _restore_tiled(run: _TileRunner, lq: torch.Tensor, scale: int, tile: int, overlap: int) -> torch.Tensor:
    n, c, h, w = lq.shape
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    out = None
    row_sum = torch.zeros(h * scale)
    col_sum = torch.zeros(w * scale)
    ramp = overlap * scale
    for i, top in enumerate(rows):
        th = min(tile, h)
        wy = blend_ramp(th * scale, ramp, rise=i > 0, fall=i < len(rows) - 1)
        row_sum[top * scale:(top + th) * scale] += wy
        for j, left in enumerate(cols):
            tw = min(tile, w)
            wx = blend_ramp(tw * scale, ramp, rise=j > 0, fall=j < len(cols) - 1)
            if i == 0:
                col_sum[left * scale:(left + tw) * scale] += wx
            y = run(lq[:, :, top:top + th, left:left + tw]).to(lq.device)
            if out is None:
                out = torch.zeros(n, y.shape[1], h * scale, w * scale, device=lq.device)
            weight = (wy[:, None] * wx[None, :]).to(lq.device)
            out[:, :, top * scale:(top + th) * scale, left * scale:(left + tw) * scale] += y * weight
    return out / (row_sum[:, None] * col_sum[None, :]).to(lq.device)
