"""One progress-bar style for every long loop in spnir (tqdm on stderr, hidden when stderr is not a terminal)."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(
    items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "img", enabled: bool | None = None
) -> Iterator[T]:
    """Iterate ``items`` with a bar; ``enabled=None`` shows it only on an interactive terminal."""
    return iter(
        tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
             disable=None if enabled is None else not enabled)
    )


def note(message: str) -> None:
    """Print a line to stderr without breaking an active progress bar."""
    tqdm.write(message, file=sys.stderr)
