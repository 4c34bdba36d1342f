"""What a run reports: its progress (iteration, losses, it/s, ETA; a bar on a terminal, plain status lines
otherwise, see :mod:`spnir.progress`), TensorBoard events and a CSV of the same scalars, and a plain-text log
of messages; with ``log.wandb``, a Weights & Biases run that syncs the TensorBoard events. Only the main process
writes; other ranks get a silent logger.

``scalars.csv`` is long-format (``iteration,name,value``), so new scalars never break its header. A resumed
run first drops the rows a killed run wrote after its last checkpoint, so the file has each iteration once.
"""
from __future__ import annotations

import contextlib
import csv
import math
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from spnir.atomic import writing
from spnir.errors import SpnirError
from spnir.optional import require
from spnir.progress import Progress


class RunLogger:
    """Progress + ``scalars.csv`` + TensorBoard (``tb/``) + ``train.log`` in ``folder``.

    ``progress``: show a bar on an interactive terminal (``log.progress``); without one, plain status lines.
    ``wandb``: the config's ``log.wandb``; with a project, W&B syncs the TensorBoard events (``config`` is the
    run's config, shown by W&B).
    """

    def __init__(self, folder: str | Path | None, total_iter: int, start_iter: int = 0,
                 tensorboard: bool = True, progress: bool = True, wandb: Mapping[str, Any] | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        self.enabled = folder is not None
        self.folder = Path(folder) if folder is not None else None
        self._writer: Any = None
        self._wandb: Any = None
        self._progress: Progress | None = None
        self._start_time, self._start_iter = time.monotonic(), start_iter
        if self.folder is None:
            return
        root = self.folder
        with writing(root):
            root.mkdir(parents=True, exist_ok=True)
        self.csv_path, self.log_path = root / "scalars.csv", root / "train.log"
        _truncate_after(self.csv_path, start_iter)
        new = not self.csv_path.exists()
        with writing(self.csv_path):
            self._csv_file = open(self.csv_path, "a", newline="")
            self._csv = csv.writer(self._csv_file)
            if new:
                self._csv.writerow(["iteration", "name", "value"])
        with writing(self.log_path):
            self._log_file = open(self.log_path, "a")
        if wandb is not None and wandb.get("project"):  # before the writer: W&B patches TensorBoard's writer
            self._wandb = _start_wandb(root, wandb, dict(config or {}), start_iter)
        if tensorboard:
            require("tensorboard", "log.tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(root / "tb"), purge_step=start_iter or None)
        self._progress = Progress("train", total_iter, "it", initial=start_iter, bar=progress)

    def progress(self, iteration: int, losses: dict[str, float]) -> None:
        """Report that ``iteration`` is done, with the current loss values."""
        if self._progress is not None:
            self._progress.update(iteration, losses)

    def scalars(self, iteration: int, values: dict[str, float]) -> None:
        """Write ``values`` (name -> number) at ``iteration`` to the CSV and TensorBoard."""
        if not self.enabled:
            return
        with writing(self.csv_path):
            for name, value in values.items():
                self._csv.writerow([iteration, name, f"{value:.8g}"])
            self._csv_file.flush()
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, value, iteration)

    def images(self, iteration: int, images: dict[str, torch.Tensor]) -> list[Path]:
        """Write ``images`` (name -> (3, H, W) in [0, 1]) as ``images/iter_<iteration>/<name>.png`` and to
        TensorBoard; returns the files."""
        if not self.enabled or self.folder is None:
            return []
        from spnir.imageio import save_image

        folder = self.folder / "images" / f"iter_{iteration:08d}"
        paths = []
        for name, image in images.items():
            paths.append(save_image(image, folder / f"{name}.png"))
            if self._writer is not None:
                self._writer.add_image(f"val/{name}", image.clamp(0, 1), iteration)
        return paths

    def speed(self, iteration: int) -> float:
        """Iterations per second since this logger started."""
        elapsed = time.monotonic() - self._start_time
        done = iteration - self._start_iter
        return done / elapsed if elapsed > 0 else math.nan

    def message(self, text: str) -> None:
        """Print (above the bar, if any) and append to ``train.log``."""
        if not self.enabled or self._progress is None:
            return
        self._progress.write(text)
        with writing(self.log_path):
            self._append(text)

    def error(self, text: str) -> None:
        """Append ``text`` to ``train.log`` only (the caller reports it on the terminal), as far as the disk
        still allows: a failure to log the error must not hide it."""
        if self.enabled:
            with contextlib.suppress(OSError):
                self._append(text)

    def _append(self, text: str) -> None:
        self._log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        self._log_file.flush()

    def close(self) -> None:
        """Close the bar and the files (everything was flushed as written; a full disk is not raised twice)."""
        if not self.enabled:
            return
        self.enabled = False
        if self._progress is not None:
            self._progress.close()
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()
            require("wandb", "log.wandb").tensorboard.unpatch()  # TensorBoard's writer as it was
        for file in (self._csv_file, self._log_file):
            with contextlib.suppress(OSError):
                file.close()


def _start_wandb(folder: Path, settings: Mapping[str, Any], config: dict[str, Any], start_iter: int) -> Any:
    """The W&B run of ``log.wandb`` (``settings``), its files in ``folder/wandb``, syncing the TensorBoard events.
    Its id is kept in ``folder/wandb/spnir_run_id``: a resume continues that W&B run, a fresh start begins one."""
    wandb = require("wandb", "log.wandb")
    files, id_file = folder / "wandb", folder / "wandb" / "spnir_run_id"
    run_id = settings.get("id")
    if run_id is None and start_iter > 0 and id_file.is_file():
        run_id = id_file.read_text().strip()
    run_id = run_id or uuid.uuid4().hex[:8]  # W&B's own ids are 8 characters too
    with writing(id_file):
        files.mkdir(exist_ok=True)
        id_file.write_text(run_id + "\n")
    wandb.tensorboard.patch(root_logdir=str(folder / "tb"))  # W&B reads the event files the writer makes
    try:
        return wandb.init(project=settings["project"], name=settings.get("name") or config.get("name"), id=run_id,
                          resume="allow", mode=settings.get("mode", "offline"), dir=str(folder), config=config,
                          settings=wandb.Settings(console="off"))
    except Exception as exc:  # noqa: BLE001 - W&B raises its own types (no login, no network when online)
        wandb.tensorboard.unpatch()
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SpnirError(f"log.wandb: W&B did not start ({message}); log.wandb.mode: offline needs no account "
                         "or network") from None


def _truncate_after(path: Path, iteration: int) -> None:
    """Drop CSV rows past ``iteration`` (written by a run that was killed before its next checkpoint)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= iteration]
    if len(kept) != len(rows):
        with writing(path), open(path, "w", newline="") as f:
            csv.writer(f).writerows(kept)


def read_scalars(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``scalars.csv`` as ``name -> [(iteration, value), ...]`` (for plots and reports)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in list(csv.reader(f))[1:]:
            series.setdefault(row[1], []).append((int(row[0]), float(row[2])))
    return series
