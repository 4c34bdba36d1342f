"""Files that appear whole or not at all: write to a temporary name beside the target, then rename.

    with atomic_path("run/checkpoints/iter_100.pt") as tmp:
        torch.save(state, tmp)

A kill at any moment leaves either the previous file or the complete new one (the data is flushed to disk
before the rename, and the rename itself afterwards); a failed write leaves no temporary file behind and
raises :class:`SpnirError` naming the file and the system's cause (disk full, not a directory, read-only...).
A temporary is named ``.NAME.spnir-HOST-PID-XXXXXXXX.tmp``: the one a killed writer leaves is recognised as
such and removed by :func:`remove_stale_temporaries` (training does it when a run starts or resumes).
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spnir.errors import SpnirError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write; on success it replaces ``path`` atomically, on error it is removed (an
    ``OSError`` becomes :class:`SpnirError` "cannot write PATH: CAUSE")."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=_temporary_prefix(path.name), suffix=".tmp", dir=path.parent)
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
        try:
            torch.save(obj, fh)
        except RuntimeError as exc:  # torch's zip writer fails in its __exit__ after our file refused a write
            raise (_os_error_behind(exc) or exc) from exc


def _os_error_behind(exc: BaseException) -> OSError | None:
    """The ``OSError`` (ENOSPC, EIO...) an exception was raised while handling, if any."""
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


_WRITER = "spnir-" + (re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host")
_TEMPORARY = re.compile(r"^\..+\.spnir-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[A-Za-z0-9_]{8}\.tmp$")


def _temporary_prefix(name: str) -> str:
    """``.NAME.spnir-HOST-PID-`` (mkstemp adds 8 characters and ``.tmp``), NAME cut to fit 255 bytes."""
    writer = f".{_WRITER}-{os.getpid()}-"
    room = 255 - len(writer.encode()) - len(".") - len("12345678.tmp")
    return "." + name.encode()[:room].decode(errors="ignore") + writer


def remove_stale_temporaries(folder: str | os.PathLike, any_host: bool = False) -> list[Path]:
    """Remove the temporaries that writers killed mid-write left in ``folder`` (only files named as
    :func:`atomic_path` names them); return them. A temporary of this host whose process is gone is stale;
    with ``any_host`` (the caller holds the folder, e.g. a run's lock) so is every other but this process's."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or not entry.is_file():
            continue
        mine = "spnir-" + match["host"] == _WRITER
        if mine and (int(match["pid"]) == os.getpid() or _alive(int(match["pid"]))):
            continue
        if mine or any_host:
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


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
