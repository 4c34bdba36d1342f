"""Files that appear whole or not at all: write to a temporary name beside the target, then rename.

    with atomic_path("run/checkpoints/iter_100.pt") as tmp:
        torch.save(state, tmp)

A kill at any moment leaves either the previous file or the complete new one (the data is flushed to disk
before the rename, and the rename itself afterwards); a failed write leaves no temporary file behind and
raises :class:`SpnirError` naming the file and the system's cause (disk full, not a directory, read-only...).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from spnir.errors import SpnirError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write; on success it replaces ``path`` atomically, on error it is removed (an
    ``OSError`` becomes :class:`SpnirError` "cannot write PATH: CAUSE")."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    tmp = Path(name)
    try:
        with writing(path):
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets what open() would give it
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_path`. The file object is spnir's own, so a full disk
    surfaces as ``OSError`` (ENOSPC) rather than torch's ``inline_container`` RuntimeError."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised inside into :class:`SpnirError` naming ``path`` and the cause."""
    try:
        yield
    except OSError as exc:
        raise cannot_write(path, exc) from exc


def cannot_write(path: str | os.PathLike, exc: OSError) -> SpnirError:
    """The one-line error for a failed write: ``cannot write PATH: CAUSE`` (the cause names a file in the way)."""
    blocker = _file_in_the_way(Path(path))
    cause = f"{blocker} is a file, not a folder" if blocker is not None else exc.strerror or str(exc)
    return SpnirError(f"cannot write {path}: {cause}")


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (a path "under a file")."""
    for parent in path.parents:
        if parent.exists():
            return parent if not parent.is_dir() else None
    return None


def _umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (where the platform lets a directory be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
