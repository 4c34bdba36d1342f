"""One process trains into a run folder at a time: ``RUN/train.lock``, held with ``flock`` while the run lasts.

The file says who holds it (pid, host, start time) for the message a second training gets. The lock is the
kernel's, not the file's: a killed process's lock goes with it, so its resume is never blocked by a file it
left behind. Under torchrun only rank 0 takes it (the other ranks write nothing); a restarted worker group
takes it again once torchrun has stopped the old one. Where ``fcntl`` is missing (Windows), or the file system
has no locks (some NFS mounts), nothing is locked.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from spnir.atomic import writing
from spnir.errors import Param, ParameterError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK = "train.lock"


@contextlib.contextmanager
def hold_run_folder(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir`` for this process; a folder another live process holds is refused naming it."""
    if fcntl is None:
        yield
        return
    path = out_dir / LOCK
    created = not out_dir.exists()
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    with writing(path):
        fd = _acquire(path)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)  # while still held: one that opened it meanwhile sees it gone and retries
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # a start refused before writing anything leaves no empty folder behind


def _acquire(path: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return fd  # a file system without locks (ENOLCK, EOPNOTSUPP): train without the guard
            holder = os.read(fd, 500).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ParameterError(f"{path.parent} is in use by another training ({holder}); wait for it to end, or "
                                 "give another ", Param("out_dir"), " folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its holder removed while releasing it between our open and flock
            when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {when}\n".encode())
            return fd
        os.close(fd)
