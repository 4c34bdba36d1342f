"""How every long loop in spnir reports its progress (train, eval, restore, demo, study).

On an interactive terminal a loop shows a tqdm bar on stderr. When stderr is not a terminal (a log file, a
pipe, a batch job), or the bar is turned off, there are no redraws: a plain status line every
``status_every`` seconds says how far the loop is, its current values, the speed and the ETA, and a last line
says how it ended. ``quiet`` silences both; messages (:func:`note`) and results are still printed.

The process-wide settings come from the command line (``--quiet``, ``--no-progress``, ``--status-every``,
applied by :func:`configure`) or the ``SPNIR_QUIET=1`` environment variable.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TextIO, TypeVar

from tqdm import tqdm

from spnir.errors import Param, ParameterError

T = TypeVar("T")
QUIET_ENV = "SPNIR_QUIET"


@dataclass(frozen=True)
class ProgressSettings:
    """``quiet``: no bar and no status lines; ``bar``: a bar on an interactive terminal (else status lines);
    ``status_every``: seconds between status lines."""

    quiet: bool = False
    bar: bool = True
    status_every: float = 60.0


def _quiet_environment() -> bool:
    return os.environ.get(QUIET_ENV, "").strip().lower() in ("1", "true", "yes")


_settings = ProgressSettings(quiet=_quiet_environment())


def configure(*, quiet: bool = False, bar: bool = True, status_every: float = 60.0) -> None:
    """Set the process-wide progress settings; ``quiet`` is also on when ``SPNIR_QUIET=1``."""
    global _settings
    if not (status_every > 0 and math.isfinite(status_every)):
        raise ParameterError(Param("status_every"), f" must be a number of seconds > 0; got {status_every}")
    _settings = ProgressSettings(quiet=quiet or _quiet_environment(), bar=bar, status_every=status_every)


def current_settings() -> ProgressSettings:
    """The process-wide progress settings."""
    return _settings


def shows_bar(stream: TextIO | None = None) -> bool:
    """Whether a bar may be drawn on ``stream`` (default stderr): an interactive terminal, bar on, not quiet."""
    stream = stream if stream is not None else sys.stderr
    settings = current_settings()
    return settings.bar and not settings.quiet and bool(getattr(stream, "isatty", lambda: False)())


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Progress of one loop of ``total`` steps: a bar, plain status lines, or nothing (see the module doc).

    Args:
        desc: the loop's name at the start of each line (``train``, a set's name, ``restore``).
        total: number of steps (``None``: unknown, no ETA).
        unit: what a step is (``it``, ``img``).
        initial: steps already done (a resumed run); the speed counts from here.
        bar: ``False`` turns this loop's bar off (status lines instead); it is also off when the process
            settings say so or when ``stream`` is not an interactive terminal.
        enabled: ``False`` shows nothing at all for this loop.
        stream: where the bar and the status lines go (default: stderr).
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, desc: str, total: int | None, unit: str = "it", initial: int = 0, *, bar: bool = True,
                 enabled: bool = True, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        settings = current_settings()
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and not settings.quiet
        self.status_every = settings.status_every
        self._clock = clock
        self._start = self._last_line = clock()
        self._initial = self.done = self._reported = initial
        self._values: Mapping[str, float] = {}
        self._bar: tqdm | None = None
        if self.enabled and bar and shows_bar(self.stream):
            self._bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, file=self.stream, leave=False,
                             dynamic_ncols=True, smoothing=0.05)

    def update(self, done: int, values: Mapping[str, float] | None = None) -> None:
        """``done`` steps are finished; ``values`` (name -> number, e.g. the losses) describe the latest."""
        if values is not None:
            self._values = values
        if self._bar is not None:
            if values:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
            self._bar.update(done - self.done)
        self.done = done
        if self._bar is None and self.enabled and self._clock() - self._last_line >= self.status_every:
            self._status_line()

    def status(self) -> str:
        """The plain status line of the current state, e.g. ``train 1200/5000 it, l_pix 0.0123, 2.31 it/s,
        ETA 0:27:24``."""
        elapsed = self._clock() - self._start
        speed = (self.done - self._initial) / elapsed if elapsed > 0 else math.nan
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        parts = [f"{self.desc} {count} {self.unit}"]
        parts += [f"{k} {v:.4g}" for k, v in self._values.items()]
        parts.append(f"{speed:.3g} {self.unit}/s" if math.isfinite(speed) else f"? {self.unit}/s")
        if self.total is not None and self.done < self.total:
            left = (self.total - self.done) / speed if speed > 0 else math.nan
            parts.append(f"ETA {_duration(left)}")
        else:
            parts.append(f"elapsed {_duration(elapsed)}")
        return ", ".join(parts)

    def _status_line(self) -> None:
        self._last_line = self._clock()
        self._reported = self.done
        print(self.status(), file=self.stream, flush=True)

    def write(self, text: str, file: TextIO | None = None) -> None:
        """Print ``text`` as a line (to ``file``, default stdout) without breaking the bar."""
        if self._bar is not None:
            self._bar.write(text, file=file if file is not None else sys.stdout)
        else:
            print(text, file=file if file is not None else sys.stdout, flush=True)

    def close(self) -> None:
        """End the bar; without one, a last status line when steps were done since the previous one."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.done != self._reported:
            self._status_line()
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "img",
             enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` reporting progress (see :class:`Progress`); ``enabled=False`` shows nothing."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit, enabled=enabled) as shown:
        for i, item in enumerate(items, 1):
            yield item
            shown.update(i)


def note(message: str) -> None:
    """Print a line to stderr without breaking an active progress bar."""
    tqdm.write(message, file=sys.stderr)
