"""Whole-image, tiled and self-ensembled inference with any restoration model.

Tiling bounds memory: the image is cut into ``tile`` x ``tile`` windows overlapping by ``tile_overlap``
pixels, each is restored on the model's device, and its output is added into one output accumulator with
weights that ramp linearly across the overlaps, so seams blend. The weights are separable (a row factor
times a column factor) and the tiles form a grid, so the normalisation is the outer product of two 1-D
sums: no per-pixel weight image is kept. With a tile at least the image size there is one tile of weight
1 and the result equals whole-image inference exactly.

Memory is checked before an image is restored (:func:`check_memory`): the model's peak tensor memory is
measured once on two small inputs (:class:`MemoryModel`, every tensor the model's operations allocate, alive
at the same time), extrapolated to the image size or the tile size (plus the whole input and output), and
compared with the memory available on the device (:func:`available_memory`). An image that would not fit is
refused naming the need, what is free and a ``--tile`` size that fits.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from spnir.errors import Param, ParameterError, SpnirError


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
    return [(t, fh, fw) for t in (False, True) for fh in (False, True) for fw in (False, True)]


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
        outputs = (_invert(self._run(_apply(x, *transform)), *transform).float() for transform in self.transforms)
        total = next(outputs)
        for y in outputs:
            total = total + y
        return total / len(self.transforms) if len(self.transforms) > 1 else total

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        expected = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        if tuple(y.shape[-2:]) != expected:
            raise ParameterError(f"model output is {tuple(y.shape[-2:])} for a {tuple(x.shape[-2:])} input; "
                                 f"expected {expected} at scale {self.scale} (wrong ", Param("scale"), "?)")
        return y


def check_tiling(tile: int | None, tile_overlap: int, prefix: str = "") -> None:
    """The tiler's rule: ``tile`` (``None``: whole images) at least 1 and ``0 <= tile_overlap < tile``; errors
    name each option after ``prefix`` (a config passes ``"val."``)."""
    if tile is not None and (tile < 1 or not 0 <= tile_overlap < tile):
        raise SpnirError(f"{prefix}tile={tile}, {prefix}tile_overlap={tile_overlap}: need {prefix}tile >= 1 and "
                         "0 <= overlap < tile")


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
    check_tiling(tile, tile_overlap)
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
    assert out is not None  # an image has at least one tile
    return out / (row_sum[:, None] * col_sum[None, :]).to(lq.device)


# -- memory --------------------------------------------------------------------------------------------------
class _PeakBytes(TorchDispatchMode):
    """Counts the storage bytes the operations run under it allocate, while they are alive; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.alive: set[int] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
                if size and key not in self.alive:
                    self.alive.add(key)
                    self.live += size
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(tensor, self._free, key, size)
        return out

    def _free(self, key: int, size: int) -> None:
        self.alive.discard(key)
        self.live -= size


def _peak_bytes(model: nn.Module, channels: int, height: int, width: int, device: torch.device,
                dtype: torch.dtype) -> int:
    image = torch.rand(1, channels, height, width, device=device, dtype=dtype)
    tracker = _PeakBytes()
    with torch.inference_mode(), tracker:
        model(image)
    return tracker.peak


def probe_side(model: nn.Module) -> int:
    """The side of :meth:`MemoryModel.measure`'s inputs: 32 px, or the model's smallest side (IDT: its patch)."""
    return max(32, int(getattr(model, "export_min_size", 0)))


@dataclass(frozen=True)
class MemoryModel:
    """Peak bytes of one forward pass on an ``H x W`` input: ``fixed + per_pixel * H * W`` (not counting
    the weights and the input), measured on two square inputs (:meth:`measure`)."""

    fixed: float
    per_pixel: float

    @classmethod
    def measure(cls, model: nn.Module, channels: int = 3) -> MemoryModel:
        """Run ``model`` on ``s x s`` and ``s x 2s`` inputs (``s``: 32, or the model's smallest side)."""
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        side = probe_side(model)
        small, large = (_peak_bytes(model, channels, side, w, device, dtype) for w in (side, 2 * side))
        per_pixel = (large - small) / (side * side) if large > small else large / (2 * side * side)
        return cls(fixed=max(small - per_pixel * side * side, 0.0), per_pixel=per_pixel)

    def forward_bytes(self, height: int, width: int) -> int:
        return int(self.fixed + self.per_pixel * height * width)


def restore_bytes(memory: MemoryModel, height: int, width: int, scale: int, channels: int = 3,
                  tile: int | None = None) -> int:
    """Bytes restoring an ``height x width`` image needs: the input and the float32 output, plus one forward
    pass on the whole image or on one ``tile``."""
    images = 4 * channels * height * width * (1 + scale * scale)
    if tile is None:
        return images + memory.forward_bytes(height, width)
    return images + memory.forward_bytes(min(tile, height), min(tile, width))


def available_memory(device: torch.device | str) -> int | None:
    """Bytes free for tensors on ``device``: CUDA's free memory, or on the CPU the kernel's ``MemAvailable``
    bounded by the cgroup limit (None where neither can be read)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _gb(size: float) -> str:
    return f"{size / 1e9:.2g} GB" if size >= 1e8 else f"{size / 1e6:.2g} MB"


def check_memory(memory: MemoryModel, height: int, width: int, scale: int, device: torch.device | str,
                 channels: int = 3, tile: int | None = None) -> None:
    """Refuse, before allocating, a restore of an ``height x width`` image that needs more than the memory
    :func:`available_memory` reports, suggesting a ``tile`` size that fits when one does."""
    free = available_memory(device)
    need = restore_bytes(memory, height, width, scale, channels, tile)
    if free is None or need <= free:
        return
    what = f"restoring {width}x{height}" + (f" in {tile} px tiles" if tile else " whole")
    base = f"{what} needs about {_gb(need)}, more than the {_gb(free)} free on {torch.device(device).type}"
    fits = [t for t in (2048, 1024, 512, 256, 128, 64) if t < max(height, width)
            and restore_bytes(memory, height, width, scale, channels, t) <= free]
    if fits:
        raise ParameterError(f"{base}; restore it in tiles: ", Param("tile", fits[0]))
    raise SpnirError(f"{base}; even in tiles the image and its output do not fit: use a smaller image or a "
                     "machine with more memory")


class MemoryCheck:
    """:func:`check_memory` for one model on one device, image after image. The model is measured when the
    first image larger than the measuring inputs comes (smaller ones need no more than measuring would)."""

    def __init__(self, model: nn.Module, scale: int, device: torch.device | str, channels: int = 3,
                 tile: int | None = None) -> None:
        self.model, self.scale, self.device, self.channels = model, scale, device, channels
        self.tile = tile
        self.memory: MemoryModel | None = None

    def __call__(self, height: int, width: int) -> None:
        if self.memory is None:
            if height * width <= 2 * probe_side(self.model) ** 2:
                return
            self.memory = MemoryModel.measure(self.model, self.channels)
        check_memory(self.memory, height, width, self.scale, self.device, self.channels, self.tile)
