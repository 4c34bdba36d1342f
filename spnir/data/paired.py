"""Paired LQ/GT folders as the restoration benchmarks ship them, matched by each layout's naming rule.

Layouts (``layout=`` of :class:`PairedFolder`):

``sr``       DIV2K style: ``HR/0001.png`` with ``LR_bicubic/X4/0001x4.png``; an LQ name ends with
             ``x{scale}`` or equals the GT name. GT may exceed ``scale x LQ`` by less than ``scale`` pixels
             (an HR image that is not a multiple of the scale); it is then cropped to ``scale x LQ`` from the
             top-left corner, as the SR evaluation's mod-crop does.
``reside``   RESIDE ITS/OTS/SOTS: ``hazy/1400_1.png`` ... ``1400_10.png`` or ``0001_0.8_0.2.jpg`` with
             ``clear/1400.png``: the GT name is the LQ name up to its first ``_`` (any image extension).
             A GT larger than its LQ by an even border on each side (SOTS-indoor clear frames keep a white
             border) is centre-cropped to the LQ size.
``rain100``  Rain100L/H: ``rain-001.png`` with ``norain-001.png``; both may sit in one folder.
``ddn``      DDN (Rain14000) / DID style: ``1_1.jpg`` ... ``1_14.jpg`` with ``1.jpg`` (same rule as ``reside``).
``gopro``    GoPro and any other "equal names" set: LQ and GT share their relative path (nested per sequence
             folder, extension free). With ``lq_dir == gt_dir`` the original GoPro tree works:
             ``GOPR0372_07_00/blur/000047.png`` pairs with ``GOPR0372_07_00/sharp/000047.png``
             (``blur_gamma`` too).
``csv``      explicit pair list ``pairs=PATH``: one ``lq,gt`` pair per line, relative to ``lq_dir`` and
             ``gt_dir`` (or absolute); an optional header line ``lq,gt``; ``#`` starts a comment.

``auto`` (the default) tries the rules above and keeps the first one under which every LQ file finds its GT;
it logs its choice on the ``spnir.data`` logger and records it in :attr:`PairedFolder.layout`. The order is
``gopro``, ``sr``, ``rain100``, then ``reside``/``ddn``; at ``scale > 1`` with all LQ images directly in
``lq_dir``, ``sr`` goes first: equal names pair the same way under both, and only ``sr`` crops an HR image that
is not a multiple of the scale. (``sr`` is not tried at ``scale=1``.)

Everything checkable without decoding is checked at construction: missing or empty folders, LQ names without
a GT (a few are listed), and image sizes against ``scale`` read from the file headers.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from torch.utils.data import Dataset

from spnir.errors import Param, ParameterError, SpnirError
from spnir.imageio import header_size, is_image_file, list_images, read_image

log = logging.getLogger("spnir.data")

LAYOUTS = ("sr", "reside", "rain100", "ddn", "gopro", "csv")
OnError = Literal["skip", "stop"]
Item = TypeVar("Item")
Checked = TypeVar("Checked")


def screen(items: Iterable[Item], check: Callable[[Item], Checked], on_error: OnError, name: Callable[[Item], str]
           ) -> tuple[list[Checked], list[tuple[str, str]]]:
    """``(checked, skipped)``: ``check(item)`` of every item; one raising :class:`SpnirError` is skipped with its
    reason (``on_error="skip"``, as ``spnir eval`` does) or stops (``"stop"``). ``skipped``: ``(name, reason)``."""
    if on_error not in ("skip", "stop"):
        raise SpnirError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
    kept, skipped = [], []
    for item in items:
        try:
            kept.append(check(item))
        except SpnirError as exc:
            if on_error == "stop":
                raise
            skipped.append((name(item), str(exc)))
    return kept, skipped
_GOPRO_LQ_FOLDERS = ("blur", "blur_gamma")


@dataclass(frozen=True)
class Pair:
    """One LQ/GT pair; ``gt_box`` = ``(top, left, height, width)`` crop applied to GT, or ``None``."""

    lq: Path
    gt: Path
    lq_size: tuple[int, int]  # (H, W) as stored
    gt_size: tuple[int, int]  # (H, W) as returned, after ``gt_box``
    gt_box: tuple[int, int, int, int] | None = None


def sr_gt_box(lq_size: tuple[int, int], gt_size: tuple[int, int], scale: int) -> tuple[int, int, int, int] | None:
    """``(top, left, height, width)`` of the ``scale x LQ`` GT crop when the GT is that size or exceeds it by less
    than ``scale`` pixels in each dimension (an HR image that is not a multiple of the scale, cropped from the
    top-left corner as the SR evaluation's mod-crop does); ``None`` when the sizes do not fit so."""
    want = (lq_size[0] * scale, lq_size[1] * scale)
    if 0 <= gt_size[0] - want[0] < scale and 0 <= gt_size[1] - want[1] < scale:
        return 0, 0, want[0], want[1]
    return None


def _stem_key(path: Path, root: Path) -> str:
    """Relative path without extension, with ``/`` separators: the name pairs are matched on."""
    return path.relative_to(root).with_suffix("").as_posix()


def _index_by_stem(files: list[Path], root: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in files:
        key = _stem_key(path, root)
        if key in index:
            raise SpnirError(
                f"{root}: two GT images share the name {key!r} ({index[key].name}, {path.name}); "
                "expected one file per name"
            )
        index[key] = path
    return index


# Each rule maps an LQ key (relative path without extension) to the GT key it should pair with, or None.
def _sr_rule(scale: int) -> Callable[[str], str | None]:
    suffix = re.compile(rf"x{scale}$", re.IGNORECASE)
    return lambda key: suffix.sub("", key)


def _prefix_rule(key: str) -> str | None:
    parent, _, name = key.rpartition("/")
    if "_" not in name:
        return None
    stem = name.split("_", 1)[0]
    return f"{parent}/{stem}" if parent else stem


def _rain100_rule(key: str) -> str | None:
    parent, _, name = key.rpartition("/")
    if not name.lower().startswith("rain-"):
        return None
    stem = "norain-" + name[len("rain-"):]
    return f"{parent}/{stem}" if parent else stem


def _equal_rule(key: str) -> str | None:
    return key


def _gopro_same_root_rule(key: str) -> str | None:
    parts = key.split("/")
    hits = [i for i, part in enumerate(parts[:-1]) if part in _GOPRO_LQ_FOLDERS]
    if not hits:
        return None
    parts[hits[-1]] = "sharp"
    return "/".join(parts)


def _read_csv_pairs(pairs: Path, lq_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    if not pairs.is_file():
        raise SpnirError(f"{pairs}: pair list not found (expected a CSV file with lines 'lq,gt')")
    rows: list[tuple[Path, Path]] = []
    with open(pairs, newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            cells = [c.strip() for c in row]
            if not cells or not any(cells) or cells[0].startswith("#"):
                continue
            if lineno == 1 and [c.lower() for c in cells] == ["lq", "gt"]:
                continue
            if len(cells) != 2:
                raise SpnirError(f"{pairs}:{lineno}: expected two columns 'lq,gt', got {len(cells)}: {row}")
            rows.append((lq_dir / cells[0], gt_dir / cells[1]))
    if not rows:
        raise SpnirError(f"{pairs}: no pairs listed (expected lines 'lq,gt')")
    missing = [str(p) for pair in rows for p in pair if not p.is_file()]
    if missing:
        raise SpnirError(f"{pairs}: {len(missing)} listed files do not exist, e.g. {', '.join(missing[:3])}")
    return rows


def _fmt_unmatched(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return f"{shown}{' ...' if len(names) > 5 else ''}"


class PairedFolder(Dataset):
    """LQ/GT image pairs from two folders (see the module doc for the layouts).

    Items are ``{"lq": (3,h,w), "gt": (3,H,W), "lq_path": str, "gt_path": str}`` float32 RGB in ``[0, 1]``,
    read with :mod:`spnir.imageio` (grayscale replicated, opaque alpha dropped, 16-bit and transparency
    rejected). ``len()`` is the number of pairs. ``scale`` is the GT/LQ size ratio (1 for all tasks but SR).
    ``check_sizes=False`` skips reading the headers (for huge sets whose sizes you trust). ``verify=True``
    decodes every image once at construction so that truncated or corrupt files fail now rather than mid-training
    (headers alone cannot reveal a cut-off JPEG); it costs one full read of the set. A pair whose check fails
    stops construction (``on_error="stop"``) or is left out and listed in :attr:`skipped` with its reason
    (``"skip"``); a set with no pair left is an error either way.
    """

    def __init__(
        self,
        lq_dir: str | os.PathLike,
        gt_dir: str | os.PathLike,
        layout: str = "auto",
        scale: int = 1,
        pairs: str | os.PathLike | None = None,
        check_sizes: bool = True,
        verify: bool = False,
        on_error: OnError = "stop",
    ) -> None:
        if layout != "auto" and layout not in LAYOUTS:
            raise SpnirError(f"unknown layout {layout!r}; expected 'auto' or one of {', '.join(LAYOUTS)}")
        if not isinstance(scale, int) or scale < 1:
            raise SpnirError(f"scale must be a positive integer, got {scale!r}")
        self.lq_dir, self.gt_dir, self.scale = Path(lq_dir), Path(gt_dir), scale
        if layout == "csv" or (layout == "auto" and pairs is not None):
            if pairs is None:
                raise SpnirError("layout 'csv' needs a pair list (pairs: in a config, pairs= in Python), a CSV file "
                                 "with lines 'lq,gt'")
            self.layout, matched = "csv", _read_csv_pairs(Path(pairs), self.lq_dir, self.gt_dir)
        else:
            self.layout, matched = self._match(layout)
        if layout == "auto":
            why = " (tried before 'gopro' at scale > 1: it crops an HR that is not a multiple of the scale)" \
                if self.layout == "sr" else ""
            log.info("%s: layout %r chosen, %d pairs%s", self.lq_dir, self.layout, len(matched), why)
        decoded: set[Path] = set()

        def check(match: tuple[Path, Path]) -> Pair:
            pair = self._checked_pair(*match, check_sizes)
            for path in match if verify else ():
                if path not in decoded:  # a GT shared by several LQ images (RESIDE) is decoded once
                    read_image(path)
                    decoded.add(path)
            return pair

        self.pairs: list[Pair]
        self.skipped: list[tuple[str, str]]  # (LQ file, reason) of the pairs left out
        self.pairs, self.skipped = screen(matched, check, on_error, name=lambda match: str(match[0]))
        if not self.pairs:
            raise SpnirError(f"{self.lq_dir}: every one of the {len(matched)} pairs failed its check; the first: "
                             f"{self.skipped[0][1]}")

    # -- matching -------------------------------------------------------------------------------------
    def _rules(self) -> dict[str, Callable[[str], str | None]]:
        same_root = self.lq_dir.resolve() == self.gt_dir.resolve()
        return {
            "gopro": _gopro_same_root_rule if same_root else _equal_rule,
            "sr": _sr_rule(self.scale),
            "rain100": _rain100_rule,
            "reside": _prefix_rule,
            "ddn": _prefix_rule,
        }

    def _lq_files(self, layout: str) -> list[Path]:
        recursive = layout == "gopro"
        files = list_images(self.lq_dir, recursive=recursive)
        if self.lq_dir.resolve() != self.gt_dir.resolve():
            return files
        # One folder holds both: keep the LQ side of the naming rule.
        if layout == "rain100":
            return [f for f in files if f.name.lower().startswith("rain-")]
        if layout == "gopro":
            return [f for f in files if set(f.relative_to(self.lq_dir).parts[:-1]) & set(_GOPRO_LQ_FOLDERS)]
        return files

    def _try(self, layout: str) -> tuple[list[tuple[Path, Path]], list[str], int]:
        rule = self._rules()[layout]
        lq_files = self._lq_files(layout)
        gt_index = _index_by_stem(list_images(self.gt_dir, recursive=layout == "gopro"), self.gt_dir)
        matched, unmatched = [], []
        for lq in lq_files:
            key = _stem_key(lq, self.lq_dir)
            gt_key = rule(key)
            gt = gt_index.get(gt_key) if gt_key is not None else None
            if gt is None or gt == lq:
                unmatched.append(lq.relative_to(self.lq_dir).as_posix())
            else:
                matched.append((lq, gt))
        return matched, unmatched, len(lq_files)

    def _match(self, layout: str) -> tuple[str, list[tuple[Path, Path]]]:
        for folder, role in ((self.lq_dir, "LQ"), (self.gt_dir, "GT")):
            if not folder.is_dir():
                raise SpnirError(f"{folder}: {role} folder not found")
        if layout != "auto":
            matched, unmatched, total = self._try(layout)
            if not matched or unmatched:
                raise SpnirError(
                    f"{self.lq_dir}: {len(unmatched) if total else 'no'} of {total} LQ images have no GT in "
                    f"{self.gt_dir} under layout {layout!r} ({self._describe(layout)})"
                    + (f": {_fmt_unmatched(unmatched)}" if unmatched else "") + self._examples(layout, matched)
                )
            return layout, matched
        candidates = ["gopro", "sr", "rain100", self._prefix_layout_name()]
        if self.scale == 1:
            candidates.remove("sr")
        elif self._lq_is_flat():
            # Equal names in flat folders pair identically under 'sr' and 'gopro'; only 'sr' allows an HR
            # that is not a multiple of the scale, so at scale > 1 it goes first.
            candidates.remove("sr")
            candidates.insert(0, "sr")
        best: tuple[str, list[str], int] | None = None
        best_matched: list[tuple[Path, Path]] = []
        for name in candidates:
            matched, unmatched, total = self._try(name)
            if matched and not unmatched:
                return name, matched
            if matched and (best is None or len(unmatched) < len(best[1])):
                best, best_matched = (name, unmatched, total), matched
        self._explain_no_layout(best, best_matched if best else [])
        raise AssertionError("unreachable")

    def _lq_is_flat(self) -> bool:
        """Every LQ image sits directly in ``lq_dir`` (no per-sequence sub-folders, which only 'gopro' reads)."""
        return len(list_images(self.lq_dir, recursive=True)) == len(
            [p for p in self.lq_dir.iterdir() if p.is_file() and is_image_file(p)])

    def _prefix_layout_name(self) -> str:
        """``reside`` and ``ddn`` share a rule; the folder names (``rainy_image`` vs ``hazy``) say which set it is."""
        text = f"{self.lq_dir.resolve().name}/{self.gt_dir.resolve().name}".lower()
        return "ddn" if "rain" in text and "haz" not in text else "reside"

    def _examples(self, layout: str, matched: list[tuple[Path, Path]]) -> str:
        """``; e.g. LQ a.png has no GT, GT b.png has no LQ``: one file of each side left unpaired."""
        recursive = layout == "gopro"
        paired_lq = {lq for lq, _ in matched}
        paired_gt = {gt for _, gt in matched}
        lone_lq = next((p for p in self._lq_files(layout) if p not in paired_lq), None)
        lone_gt = next((p for p in list_images(self.gt_dir, recursive=recursive)
                        if p not in paired_gt and p not in paired_lq and p != lone_lq), None)
        parts = [f"LQ {lone_lq.relative_to(self.lq_dir).as_posix()} has no GT" if lone_lq else "",
                 f"GT {lone_gt.relative_to(self.gt_dir).as_posix()} has no LQ" if lone_gt else ""]
        shown = ", ".join(part for part in parts if part)
        return f"; e.g. {shown}" if shown else ""

    def _explain_no_layout(self, best: tuple[str, list[str], int] | None,
                           matched: list[tuple[Path, Path]]) -> None:
        sr_hint: tuple[str | Param, ...] = ()
        if self.scale == 1:
            suffixed = [p.name for p in list_images(self.lq_dir) if re.search(r"x\d$", p.stem, re.IGNORECASE)]
            if suffixed:
                sr_hint = (f"; LQ names such as {suffixed[0]} look like an SR set: give its scale (", Param("scale", 4),
                           "; model.scale: 4 in a training config)")
        if best is None:
            raise ParameterError(
                f"{self.lq_dir}: no LQ image pairs with a GT image in {self.gt_dir} under any layout "
                f"({', '.join(LAYOUTS[:-1])}){self._examples('sr', [])}", *sr_hint, "; for other names list the "
                "pairs in a CSV file (layout: csv with pairs: in a training config)"
            )
        name, unmatched, total = best
        raise ParameterError(
            f"{self.lq_dir}: closest layout {name!r} ({self._describe(name)}) leaves {len(unmatched)} of {total} "
            f"LQ images without GT in {self.gt_dir}: {_fmt_unmatched(unmatched)}{self._examples(name, matched)}",
            *sr_hint
        )

    def _describe(self, layout: str) -> str:
        return {
            "sr": f"LQ 'NAMEx{self.scale}' or 'NAME' pairs with GT 'NAME'",
            "reside": "LQ 'ID_anything' pairs with GT 'ID'",
            "ddn": "LQ 'ID_k' pairs with GT 'ID'",
            "rain100": "LQ 'rain-N' pairs with GT 'norain-N'",
            "gopro": "LQ and GT share relative paths (blur/ -> sharp/ in one tree)",
        }[layout]

    # -- size checks ----------------------------------------------------------------------------------
    def _checked_pair(self, lq: Path, gt: Path, check_sizes: bool) -> Pair:
        if not check_sizes:
            return Pair(lq, gt, (0, 0), (0, 0))
        lq_size, gt_size = header_size(lq), header_size(gt)
        s = self.scale
        want = (lq_size[0] * s, lq_size[1] * s)
        if gt_size == want:
            return Pair(lq, gt, lq_size, gt_size)
        extra = (gt_size[0] - want[0], gt_size[1] - want[1])
        sr_box = sr_gt_box(lq_size, gt_size, s) if self.layout == "sr" else None
        if sr_box is not None:
            return Pair(lq, gt, lq_size, want, sr_box)
        if self.layout == "reside" and s == 1 and min(extra) > 0 and extra[0] % 2 == 0 and extra[1] % 2 == 0:
            return Pair(lq, gt, lq_size, want, (extra[0] // 2, extra[1] // 2, want[0], want[1]))
        raise SpnirError(
            f"{lq}: LQ is {lq_size[1]}x{lq_size[0]} (WxH) and GT {gt} is {gt_size[1]}x{gt_size[0]}; "
            f"at scale {s} the GT should be {want[1]}x{want[0]}"
        )

    def gt_sizes(self) -> list[tuple[str, int, int]]:
        """``(gt_path, H, W)`` per pair, GT size after any crop (0x0 when built with ``check_sizes=False``)."""
        return [(str(p.gt), *p.gt_size) for p in self.pairs]

    # -- Dataset --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        lq, gt = read_image(pair.lq), read_image(pair.gt)
        if pair.gt_box is not None:
            top, left, h, w = pair.gt_box
            gt = gt[:, top : top + h, left : left + w]
        s = self.scale
        if gt.shape[-2:] != (lq.shape[-2] * s, lq.shape[-1] * s):
            raise SpnirError(
                f"{pair.lq}: LQ {lq.shape[-1]}x{lq.shape[-2]} and GT {pair.gt} {gt.shape[-1]}x{gt.shape[-2]} "
                f"(WxH) do not match scale {s}"
            )
        return {"lq": lq, "gt": gt.contiguous(), "lq_path": str(pair.lq), "gt_path": str(pair.gt)}


__all__ = ["PairedFolder", "Pair", "LAYOUTS", "header_size", "sr_gt_box"]
