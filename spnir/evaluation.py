"""Benchmark sets evaluated as restoration papers do: per-image PSNR/SSIM, a paper-like table, JSON.

A *set* is either a folder of HR/clean images (SR only: the LR input is synthesized) or a pair of LQ/GT
folders (any task; pairs matched by :class:`spnir.data.PairedFolder`'s naming rules). The method under test
is any ``restore(lq) -> output`` callable on ``(1, C, h, w)`` float tensors in ``[0, 1]``: the bicubic
baseline, or a network.

LR synthesis from HR (``lr_protocol``):
- ``"rgb8"`` (default): HR cropped to a multiple of the scale, downscaled with MATLAB bicubic
  (:func:`spnir.imresize.imresize`) and rounded to 8 bit, exactly what benchmark LR files contain;
- ``"classic"``: the MATLAB script behind the published *bicubic* rows (SRCNN's): the Y channel of the
  8-bit image (rounded) is downscaled in float, not rounded, and the method works on Y alone. Only a
  resize can take such input; ``spnir eval`` uses it for ``bicubic`` with ``--convention matlab``.

Denoising from clean images (``noise_sigma``, sigma in 0..255 units) follows KAIR's test script: per image,
the noise is drawn by ``numpy.random.RandomState(noise_seed).normal(0, sigma / 255)`` in ``(H, W, C)`` order
and added to the image in float. ``noise_protocol`` ``"float"`` (default, the field's) leaves the noisy image
as it is (values outside ``[0, 1]``, not rounded); ``"8bit"`` clips and rounds it to 8 bit, as a saved noisy
file would be. A 1-channel model (``channels=1``) sees grayscale images as their own values and colour ones
through MATLAB's ``rgb2gray`` (:func:`spnir.imageio.to_gray`).

Outputs are rounded to 8 bit before measuring (as a saved result would be). A bad image (unreadable,
16-bit, transparent, wrong LQ/GT size) is skipped with its reason, or stops the run with ``on_error="stop"``.

:func:`evaluate_images` is the one routine that restores images, measures them and keeps the per-image
results (:class:`SetResult` of :class:`ImageResult`): ``spnir eval`` (:class:`Evaluator`), training validation
(:class:`spnir.train.validation.Validator`), ``spnir study`` and ``spnir demo`` all run it. A network restores
through :func:`model_restore` (whole or tiled, optionally under autocast; see :class:`Inference`). Each
task's default measuring conventions are in :data:`TASK_CONVENTIONS`.
"""
from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from spnir.data.degrade import mod_crop, quantize
from spnir.data.paired import sr_gt_box
from spnir.device import autocast_dtype
from spnir.errors import Param, ParameterError, SpnirError
from spnir.imageio import list_images, load_image, to_gray
from spnir.imresize import imresize
from spnir.metrics import MetricSettings, rgb_to_y
from spnir.metrics.psnr_ssim import Convention
from spnir.metrics.suite import MetricSuite, direction
from spnir.progress import note, progress

LrProtocol = Literal["rgb8", "classic"]
NoiseProtocol = Literal["float", "8bit"]
NOISE_PROTOCOLS: tuple[str, ...] = ("float", "8bit")
OnError = Literal["skip", "stop"]
RestoreFn = Callable[[torch.Tensor], torch.Tensor]



@dataclass(frozen=True)
class TaskConvention:
    """How a task is measured unless told otherwise: PSNR/SSIM on the Y channel or on RGB, and whether the
    border cropped is the scale (SR) or none."""

    y_channel: bool
    crop_scale: bool = False

    def settings(self, scale: int = 1, convention: Convention = "basicsr", y_channel: bool | None = None,
                 crop_border: int | None = None) -> MetricSettings:
        """The metric settings at ``scale``; ``y_channel``/``crop_border`` given override the task's."""
        return MetricSettings(
            crop_border=(scale if self.crop_scale else 0) if crop_border is None else crop_border,
            y_channel=self.y_channel if y_channel is None else y_channel, convention=convention)


TASK_CONVENTIONS: dict[str, TaskConvention] = {
    "sr": TaskConvention(y_channel=True, crop_scale=True),
    "dehaze": TaskConvention(y_channel=False),
    "derain": TaskConvention(y_channel=True),
    "deblur": TaskConvention(y_channel=False),
    "denoise": TaskConvention(y_channel=False),
}
TASKS: tuple[str, ...] = tuple(TASK_CONVENTIONS)

# Sub-folder names recognised when one DIR holds a paired set (first match wins).
LQ_FOLDER_NAMES: tuple[str, ...] = ("LQ", "lq", "LR", "lr", "input", "hazy", "rain", "blur", "noisy")
GT_FOLDER_NAMES: tuple[str, ...] = ("GT", "gt", "HR", "hr", "target", "clear", "norain", "sharp", "clean")


@dataclass(frozen=True)
class BenchmarkSet:
    """A named set: ``gt_dir`` alone (HR images, LR synthesized) or with ``lq_dir`` (paired folders)."""

    name: str
    gt_dir: Path
    lq_dir: Path | None = None

    @property
    def paired(self) -> bool:
        return self.lq_dir is not None


def _subfolder(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_dir()), None)


def find_set(folder: str | Path, task: str = "sr", scale: int = 1, clean: bool = False) -> BenchmarkSet:
    """The set in ``folder``: LQ/GT sub-folders (e.g. ``hazy/`` + ``clear/``, ``LR_bicubic/X4/`` + ``HR/``)
    make a paired set, otherwise (SR, or any task with ``clean``: the input is synthesized) the folder's
    images are the GT images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SpnirError(f"{folder}: benchmark folder not found")
    gt_dir = _subfolder(folder, GT_FOLDER_NAMES)
    lq_names = (f"LR_bicubic/X{scale}", f"LR_bicubic/x{scale}") + LQ_FOLDER_NAMES
    lq_dir = _subfolder(folder, lq_names)
    if gt_dir is not None and lq_dir is not None:
        return BenchmarkSet(folder.name, gt_dir, lq_dir)
    if task != "sr" and not clean:
        raise ParameterError(
            f"{folder}: task {task!r} needs LQ/GT folder pairs; expected sub-folders such as "
            f"{'/'.join(LQ_FOLDER_NAMES[:3])} and {'/'.join(GT_FOLDER_NAMES[:2])}, or name both folders: ",
            Param("pair", python="BenchmarkSet(name, gt_dir, lq_dir)", metavar="LQ_DIR GT_DIR"))
    return BenchmarkSet(folder.name, folder)


# -- results ---------------------------------------------------------------------------------------------
@dataclass
class ImageResult:
    """One image's ``values`` (``{metric: value}``, in the run's metric order) and load notes."""

    name: str
    values: dict[str, float]
    notes: list[str] = field(default_factory=list)

    @property
    def psnr(self) -> float:
        return self.values["psnr"]

    @property
    def ssim(self) -> float:
        return self.values["ssim"]


@dataclass
class SkippedImage:
    name: str
    reason: str


@dataclass
class SetResult:
    """Per-image results of one set; :meth:`mean` (``psnr``, ``ssim``) over the measured images (NaN if none);
    ``outputs``: the first restored images when :func:`evaluate_images` was asked to keep some (CPU, [0, 1])."""

    name: str
    images: list[ImageResult] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)
    metrics: tuple[str, ...] = ("psnr", "ssim")
    outputs: list[torch.Tensor] = field(default_factory=list)

    def mean(self, metric: str) -> float:
        return _mean([r.values[metric] for r in self.images])

    @property
    def psnr(self) -> float:
        return self.mean("psnr")

    @property
    def ssim(self) -> float:
        return self.mean("ssim")

    def to_json(self) -> dict[str, Any]:
        return {
            **_json_means({m: self.mean(m) for m in self.metrics}),
            "better": {m: direction(m) for m in self.metrics},
            "images": len(self.images),
            "skipped": [{"file": s.name, "reason": s.reason} for s in self.skipped],
            "per_image": {r.name: dict(r.values) for r in self.images},
        }


def _json_means(means: dict[str, float]) -> dict[str, float | None]:
    return {m: None if math.isnan(v) else v for m, v in means.items()}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


# -- the core: restore each image, measure it -----------------------------------------------------------
@dataclass(frozen=True)
class Inference:
    """How a network restores an image: ``scale``, tiling (``tile=None``: whole; see :mod:`spnir.restore`),
    autocast (``none``/``bf16``/``fp16``), and how many restored images of each set to keep
    (``save_images``, for looking at)."""

    scale: int = 1
    tile: int | None = None
    tile_overlap: int = 32
    amp: str = "none"
    save_images: int = 0


def model_restore(model: nn.Module, inference: Inference, device: torch.device | str = "cpu",
                  amp_setting: str = "amp") -> RestoreFn:
    """``restore(lq)``: ``model``'s output for an LQ batch, on ``device``, float32 clamped to [0, 1], by
    :func:`spnir.restore.restore_image` as ``inference`` says (``amp_setting`` names the autocast option in
    errors)."""
    from spnir.restore import restore_image

    dtype = autocast_dtype(inference.amp, amp_setting)
    device = torch.device(device)

    def restore(lq: torch.Tensor) -> torch.Tensor:
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with autocast:
            out = restore_image(model, lq.to(device), inference.scale, inference.tile, inference.tile_overlap)
        return out.float().clamp(0, 1)

    return restore


@dataclass(frozen=True)
class Sample:
    """One image to measure: ``load() -> (lq, gt, notes)`` (``(C, H, W)`` in [0, 1]; a :class:`SpnirError`
    there is the image's skip reason) and ``source``, the file an error about its output names."""

    name: str
    load: Callable[[], tuple[torch.Tensor, torch.Tensor, list[str]]]
    source: str = ""


def dataset_samples(dataset: Any) -> Iterator[Sample]:
    """The items ``{"lq", "gt"[, "gt_path"]}`` of a validation dataset as samples, loaded one at a time and
    named by their GT file (or index)."""
    for index in range(len(dataset)):
        item = dataset[index]
        name = Path(str(item.get("gt_path", index))).name
        yield Sample(name, functools.partial(_loaded, item), str(item.get("lq_path", name)))


def _loaded(item: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    return item["lq"], item["gt"], []


def evaluate_images(restore: RestoreFn, samples: Iterable[Sample], suite: MetricSuite, name: str = "",
                    device: torch.device | str = "cpu", on_error: OnError = "skip", keep: int = 0,
                    show_progress: bool = False, total: int | None = None) -> SetResult:
    """Restore each sample (``restore`` on a ``(1, C, h, w)`` batch on ``device``), measure it against its GT
    with ``suite`` and keep its :class:`ImageResult`; a bad image is skipped with its reason (``on_error="stop"``:
    raised). The first ``keep`` outputs are kept in :attr:`SetResult.outputs`."""
    if on_error not in ("skip", "stop"):
        raise SpnirError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
    result = SetResult(name, metrics=tuple(suite.names))
    for sample in progress(samples, desc=name, total=total, enabled=show_progress):
        try:
            lq, gt, notes = sample.load()
            with torch.no_grad():
                out = restore(lq[None].to(device))
            if tuple(out.shape) != (1, *gt.shape):
                raise SpnirError(f"{sample.source or sample.name}: output is {tuple(out.shape)}, expected "
                                 f"{(1, *gt.shape)} to match the GT (N, C, H, W)")
            if len(result.outputs) < keep:
                result.outputs.append(out[0].cpu())
            values = suite.measure(out, gt[None].to(out.device))
            result.images.append(ImageResult(sample.name, {m: float(v[0]) for m, v in values.items()}, notes))
        except SpnirError as exc:
            skip(result, sample.name, exc, on_error)
    return result


def skip(result: SetResult, name: str, exc: SpnirError, on_error: OnError, whole_set: bool = False) -> None:
    """Record ``name`` as skipped in ``result`` with ``exc`` as its reason, and say so (``"stop"``: raise)."""
    if on_error == "stop":
        raise exc
    result.skipped.append(SkippedImage(name, str(exc)))
    note(f"skipped {'set ' + result.name if whole_set else result.name + '/' + name}: {exc}")


# -- preparing one image ---------------------------------------------------------------------------------
def synthesize_lr(hr: torch.Tensor, scale: int, protocol: LrProtocol = "rgb8") -> tuple[torch.Tensor, torch.Tensor]:
    """``(lq, gt)`` from an HR ``(3, H, W)`` image; see the module doc for the two protocols."""
    if min(hr.shape[-2:]) < scale:
        raise SpnirError(f"image is {hr.shape[-1]}x{hr.shape[-2]}, smaller than the scale {scale}")
    gt = mod_crop(hr, scale)
    if protocol == "classic":
        gt = rgb_to_y(gt[None].double() * 255, "matlab")[0].float() / 255
        return imresize(gt, 1 / scale), gt
    if protocol != "rgb8":
        raise SpnirError(f"unknown LR protocol {protocol!r}; expected 'rgb8' or 'classic'")
    return quantize(imresize(gt, 1 / scale)), gt


def add_gaussian_noise(gt: torch.Tensor, sigma: float, seed: int = 0, protocol: NoiseProtocol = "float"
                       ) -> torch.Tensor:
    """``gt`` ``(C, H, W)`` in ``[0, 1]`` plus Gaussian noise of std ``sigma / 255`` drawn as KAIR's test script
    draws it (see the module doc); ``"8bit"`` clips and rounds the result."""
    if not 0 <= sigma <= 255:
        raise SpnirError(f"noise sigma must be in 0..255 (8-bit units), got {sigma}")
    if protocol not in NOISE_PROTOCOLS:
        raise SpnirError(f"unknown noise protocol {protocol!r}; expected one of {', '.join(NOISE_PROTOCOLS)}")
    c, h, w = gt.shape
    noise = np.random.RandomState(seed).normal(0.0, sigma / 255.0, (h, w, c))
    noisy = (gt.double() + torch.from_numpy(noise).permute(2, 0, 1)).float()
    return quantize(noisy.clamp(0, 1)) if protocol == "8bit" else noisy


def reconcile_pair(lq: torch.Tensor, gt: torch.Tensor, scale: int, lq_path: Path, gt_path: Path) -> torch.Tensor:
    """GT cropped to ``scale x LQ`` when it exceeds it by less than ``scale`` px (an HR that is not a multiple
    of the scale; the rule of :func:`spnir.data.paired.sr_gt_box`); any other size mismatch is an error naming
    both files."""
    (h, w), (gh, gw) = lq.shape[-2:], gt.shape[-2:]
    box = sr_gt_box((h, w), (gh, gw), scale)
    if box is not None:
        return gt[..., : box[2], : box[3]]
    raise SpnirError(
        f"{lq_path}: LQ is {w}x{h} (WxH) and GT {gt_path} is {gw}x{gh}; with scale {scale} "
        f"the GT should be {w * scale}x{h * scale}"
    )


@dataclass(frozen=True)
class _Item:
    name: str
    gt_path: Path
    lq_path: Path | None = None


def _items(bset: BenchmarkSet, scale: int) -> list[_Item]:
    lq_dir = bset.lq_dir
    if lq_dir is None:
        return [_Item(p.name, p) for p in list_images(bset.gt_dir)]
    from spnir.data import PairedFolder

    folder = PairedFolder(lq_dir, bset.gt_dir, scale=scale, check_sizes=False)
    return [_Item(p.lq.relative_to(lq_dir).as_posix(), p.gt, p.lq) for p in folder.pairs]


# -- evaluation ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluator:
    """Runs ``restore`` over benchmark sets and measures it with ``settings`` (PSNR/SSIM), or with ``metrics``
    when given (a :class:`~spnir.metrics.suite.MetricSuite` with those settings, e.g. with LPIPS/DISTS)."""

    restore: RestoreFn
    settings: MetricSettings
    scale: int = 1
    lr_protocol: LrProtocol = "rgb8"
    on_error: OnError = "skip"
    device: torch.device | str = "cpu"
    show_progress: bool = True  # False: no bar and no status lines (see spnir.progress)
    metrics: MetricSuite | None = None
    channels: int = 3  # 1: images as grayscale (1-channel models)
    noise_sigma: float | None = None  # unpaired sets: the input is the GT plus this noise (denoising)
    noise_protocol: NoiseProtocol = "float"
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if self.on_error not in ("skip", "stop"):
            raise SpnirError(f"on_error must be 'skip' or 'stop', got {self.on_error!r}")
        if self.metrics is None:
            object.__setattr__(self, "metrics", MetricSuite(self.settings))
        if self.channels not in (1, 3):
            raise SpnirError(f"channels must be 1 or 3, got {self.channels!r}")

    @property
    def suite(self) -> MetricSuite:
        """What each image is measured with: ``metrics``, or PSNR/SSIM with ``settings``."""
        assert self.metrics is not None  # __post_init__ fills it
        return self.metrics

    def _image(self, path: Path, notes: list[str], prefix: str = "") -> torch.Tensor:
        loaded = load_image(path)
        notes += [prefix + n for n in loaded.notes if not (self.channels == 1 and n.startswith("grayscale"))]
        return to_gray(loaded.data) if self.channels == 1 else loaded.data

    def _load(self, item: _Item) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        notes: list[str] = []
        gt = self._image(item.gt_path, notes)
        if item.lq_path is None:
            if self.noise_sigma is not None:
                return add_gaussian_noise(gt, self.noise_sigma, self.noise_seed, self.noise_protocol), gt, notes
            lq, gt = synthesize_lr(gt, self.scale, self.lr_protocol)
            return lq, gt, notes
        lq = self._image(item.lq_path, notes, "LQ ")
        gt = reconcile_pair(lq, gt, self.scale, item.lq_path, item.gt_path)
        return lq, gt, notes

    def run_set(self, bset: BenchmarkSet) -> SetResult:
        """Evaluate every image of ``bset``; a set that cannot be opened at all counts as one skip."""
        try:
            items = _items(bset, self.scale)
        except SpnirError as exc:
            result = SetResult(bset.name, metrics=tuple(self.suite.names))
            skip(result, str(bset.lq_dir or bset.gt_dir), exc, self.on_error, whole_set=True)
            return result
        samples = [Sample(i.name, functools.partial(self._load, i), str(i.lq_path or i.gt_path)) for i in items]
        return evaluate_images(self.restore, samples, self.suite, bset.name, self.device, self.on_error,
                               show_progress=self.show_progress)


# -- reporting -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Average:
    """The ``Avg.`` column: mean of the set means (each set weighs the same) over the sets with images, and
    what it leaves out: ``missing`` sets (nothing measured) and ``partial`` ones (some images skipped)."""

    values: dict[str, float]  # metric -> mean of the set means
    sets: list[str]
    missing: list[str]
    partial: list[str]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.partial

    def note(self) -> str:
        """Why the average is not over every image of every set ('' when it is)."""
        parts = []
        if self.missing:
            total = len(self.sets) + len(self.missing)
            parts.append(f"over {len(self.sets)} of {total} sets, without {', '.join(self.missing)} "
                         "(no image measured)")
        if self.partial:
            parts.append(f"{', '.join(self.partial)} measured on part of the images (skips below)")
        return "Avg. " + "; ".join(parts) if parts else ""

    def to_json(self) -> dict[str, Any]:
        return {**_json_means(self.values), "sets": self.sets, "missing": self.missing, "partial": self.partial}


def average(results: list[SetResult]) -> Average:
    """The ``Avg.`` column of ``results`` (see :class:`Average`)."""
    measured = [r for r in results if r.images]
    metrics = results[0].metrics if results else ("psnr", "ssim")
    return Average({m: _mean([r.mean(m) for r in measured]) for m in metrics},
                   sets=[r.name for r in measured], missing=[r.name for r in results if not r.images],
                   partial=[r.name for r in measured if r.skipped])


_DIGITS = {"psnr": 2}  # decimals in the table; the other metrics get 4


def _cell(values: dict[str, float], marked: bool = False) -> str:
    if any(math.isnan(v) for v in values.values()):
        return "n/a"
    return "/".join(f"{v:.{_DIGITS.get(m, 4)}f}" for m, v in values.items()) + ("*" if marked else "")


def format_table(method: str, results: list[SetResult], caption: str) -> str:
    """A paper-like table: one row per method, columns ``Avg.`` then each set as ``PSNR/SSIM`` (the run's
    metrics joined by ``/``; a down arrow marks those where lower is better); a ``*`` marks
    an average over fewer sets or images than given, and a set measured on part of its images (footnotes say
    which), followed by the skipped images (with reasons) and the images that were converted (e.g. grayscale)."""
    avg = average(results)
    header = ["Method", "Avg.", *[r.name for r in results]]
    metrics = results[0].metrics if results else ("psnr", "ssim")
    title = "/".join(m.upper() + ("\u2193" if direction(m) == "lower" else "") for m in metrics)
    row = [method, _cell(avg.values, not avg.complete),
           *[_cell({m: r.mean(m) for m in metrics}, bool(r.skipped)) for r in results]]
    widths = [max(len(h), len(c)) for h, c in zip(header, row)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    lines = [f"{title} ({caption})", line(header), line(["-" * w for w in widths]), line(row)]
    if not avg.complete:
        lines.append(f"* {avg.note()}")
    for r in results:
        if r.skipped:
            lines.append(f"{r.name}: {len(r.images)} images measured, {len(r.skipped)} skipped:")
            lines += [f"  skipped {s.name}: {s.reason}" for s in r.skipped]
        for image in r.images:
            lines += [f"  note {r.name}/{image.name}: {n}" for n in image.notes]
    return "\n".join(lines)


def results_json(results: list[SetResult]) -> dict[str, dict[str, Any]]:
    """``{"Avg.": {"psnr", "ssim", "sets", "missing", "partial"}, "<set>": {"psnr", "ssim", "images",
    "skipped", "per_image"}, ...}`` (means over measured images; ``Avg.`` as the table's column); with
    ``--metrics``, each metric of the run beside psnr/ssim, and per set ``better``: ``{metric: "higher"|"lower"}``."""
    return {"Avg.": average(results).to_json(), **{r.name: r.to_json() for r in results}}
