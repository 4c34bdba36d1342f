"""Resumable training checkpoints: atomic writes, the newest K kept, RNG states of every generator.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over its
final name (``os.replace`` is atomic), so a kill at any moment leaves either the previous set of files or
the new one, never a torn file. Checkpoints are named ``iter_00001000.pt``; temporaries start with ``.``.
They hold tensors, numbers and strings only and load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spnir.archs.model_files import read_checkpoint
from spnir.atomic import save_torch_atomic
from spnir.errors import SpnirError
from spnir.weights.checksum import with_checksum

_NAME = re.compile(r"^iter_(\d+)\.pt$")


class CheckpointDir:
    """The ``checkpoints/`` folder of a run: ``save`` a state at an iteration, keep the newest ``keep`` valid ones.

    Pruning counts only checkpoints that load as spnir training states: a file it cannot load (damaged,
    foreign, a refused pickle) is neither counted nor deleted, so it never costs a good checkpoint."""

    def __init__(self, folder: str | os.PathLike, keep: int = 3) -> None:
        self.folder = Path(folder)
        self.keep = keep
        self._valid: dict[Path, tuple[int, int, bool]] = {}  # path -> (size, mtime_ns, loads), checked once

    def path_for(self, iteration: int) -> Path:
        return self.folder / f"iter_{iteration:08d}.pt"

    def list(self) -> list[tuple[int, Path]]:
        """``(iteration, path)`` of the complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := _NAME.match(p.name))]
        return sorted(found)

    def newest(self) -> Path | None:
        """The checkpoint of the highest iteration, or None."""
        entries = self.list()
        return entries[-1][1] if entries else None

    def newest_valid(self) -> tuple[int, Path] | None:
        """``(iteration, path)`` of the highest-iteration checkpoint that loads as a training state, or None."""
        return next(((i, p) for i, p in reversed(self.list()) if self._loads(p)), None)

    def save(self, state: dict[str, Any], iteration: int) -> Path:
        """Write ``state`` atomically as iteration ``iteration``, then delete the valid checkpoints older than
        the newest ``keep`` valid ones."""
        path = self.path_for(iteration)
        save_torch_atomic(with_checksum(state), path)
        self.remember(path, True)
        valid = [p for _, p in reversed(self.list()) if self._loads(p)]
        for old in valid[self.keep:]:
            old.unlink(missing_ok=True)
        return path

    def remember(self, path: Path, loads: bool) -> None:
        """Note whether ``path`` (as it is now) loads, so pruning does not load it again."""
        stat = path.stat()
        self._valid[path] = (stat.st_size, stat.st_mtime_ns, loads)

    def _loads(self, path: Path) -> bool:
        """Whether ``path`` loads as a spnir training state (each file is loaded once; a changed file again)."""
        try:
            stat = path.stat()
            known = self._valid.get(path)
            if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
                return known[2]
            load_state(path)
            loads = True
        except FileNotFoundError:
            return False
        except SpnirError:
            loads = False
        self.remember(path, loads)
        return loads


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint, loaded safely (weights-only, checksum verified, truncation named)."""
    path = Path(path)
    state = read_checkpoint(path)
    if state.get("format") != "spnir-train-state":
        raise SpnirError(f"{path} is not a spnir training checkpoint (no 'format: spnir-train-state'); "
                         "to start from weights only, set model.pretrained")
    return state


def rng_state() -> dict[str, Any]:
    """States of Python's, NumPy's, torch's CPU and every CUDA generator, in weights-only-loadable form."""
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # the legacy (default) form: (kind, keys, pos, has_gauss, gauss)
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np_state
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_kind, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (Python, numpy, torch and, where present, CUDA)."""
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` wants tuples; a round trip may hand back lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def resolve_resume(resume: str | None, checkpoints: CheckpointDir) -> Path | None:
    """The checkpoint to continue from: ``None``, ``"auto"`` (newest in the run, or none yet) or a path."""
    if resume is None:
        return None
    if resume == "auto":
        return checkpoints.newest()
    path = Path(resume)
    if path.is_dir():
        newest = CheckpointDir(path / "checkpoints" if (path / "checkpoints").is_dir() else path).newest()
        if newest is None:
            raise SpnirError(f"resume = {resume!r}: no iter_*.pt checkpoint in that folder")
        return newest
    if not path.is_file():
        raise SpnirError(f"resume = {resume!r}: no such checkpoint file ('auto' takes the run's newest)")
    return path


def load_resume(resume: str | None, checkpoints: CheckpointDir,
                notes: list[str]) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint to continue from and its state. With ``"auto"``, a damaged newest checkpoint is
    passed over for the newest intact one, and ``notes`` says so; a named file must be intact."""
    path = resolve_resume(resume, checkpoints)
    if path is None:
        return None, None
    if resume != "auto":
        return path, load_state(path)
    for _, candidate in reversed(checkpoints.list()):
        try:
            state = load_state(candidate)
        except SpnirError as exc:
            notes.append(f"passed over {exc}")
            checkpoints.remember(candidate, False)
            continue
        checkpoints.remember(candidate, True)
        if candidate != path:
            notes.append(f"resuming from {candidate}, the newest intact checkpoint")
        return candidate, state
    raise SpnirError(f"resume = 'auto': no intact checkpoint in {checkpoints.folder} (see the reasons above: "
                     + "; ".join(notes) + ")")
