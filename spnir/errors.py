"""The exception type spnir raises for bad input, so the CLI can print it without a traceback; its
:class:`ParameterError` form, whose message a command words in its own options; and :func:`shown`, which
messages use to quote a value the user gave (long values are cut)."""
from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

SHOWN_CHARS = 120  # a quoted value longer than this is cut in messages
_options: Mapping[str, str] = {}  # parameter name -> the option of the command this process runs (if any)


class SpnirError(ValueError):
    """Bad input: the message names the file, key or value and what was expected."""


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for a message, cut after ``limit`` characters with the full length said
    (``'aaaa'... (52428800 characters)``), so a 50 MB value still gives a one-line error of readable size."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@dataclass(frozen=True)
class Param:
    """A parameter of a library call, named in a message: ``name`` as the call spells it, with the value given
    or asked for (``None``: the parameter alone). ``python`` replaces the Python spelling where the way in is
    not a parameter of the call; ``metavar`` follows the option when there is no value."""

    name: str
    value: Any = None
    python: str = ""
    metavar: str = ""

    def spelled(self) -> str:
        """As Python spells it: ``resume='auto'``, ``overwrite=True``, ``out_dir``."""
        if self.python:
            return self.python
        return self.name if self.value is None else f"{self.name}={self.value!r}"

    def as_option(self, option: str) -> str:
        """As a command spells it through ``option``: ``--resume auto``, ``--overwrite``, ``--set a=1 --set b=2``."""
        if self.value is None or self.value is True:
            return f"{option} {self.metavar}" if self.metavar else option
        values = self.value if isinstance(self.value, (list, tuple)) else [self.value]
        return " ".join(f"{option} {shlex.quote(str(v))}" for v in values)

    def in_words_of(self, options: Mapping[str, str]) -> str:
        """As the option ``options`` (parameter name -> option) holds for it, else as Python spells it."""
        option = options.get(self.name)
        return self.spelled() if option is None else self.as_option(option)


@contextlib.contextmanager
def worded_as_options(options: Mapping[str, str]) -> Iterator[None]:
    """While a command runs: :class:`ParameterError` messages name its options (parameter name -> option)."""
    global _options
    before, _options = _options, dict(options)
    try:
        yield
    finally:
        _options = before


def in_current_words(param: Param) -> str:
    """``param`` as the running command's option spells it (:func:`worded_as_options`), else as Python does: for
    a name handed to a shared check as text (a message raised here is a :class:`ParameterError`)."""
    return param.in_words_of(_options)


class ParameterError(SpnirError):
    """Bad input whose message names parameters of the call: ``parts`` are text and :class:`Param` s.

    Each parameter is spelled as Python spells it (``opset=7: ...``), or, while a command runs
    (:func:`worded_as_options`), as the option that gave it (``--opset 7: ...``): library messages never name
    command-line flags, and a command's messages (logged or printed) never name Python parameters."""

    def __init__(self, *parts: str | Param) -> None:
        self.parts = parts
        super().__init__(self.worded({}))

    def __str__(self) -> str:
        return self.worded(_options)

    def worded(self, options: Mapping[str, str]) -> str:
        """The message with each parameter that ``options`` (parameter name -> option) holds spelled as that
        option, the others as Python spells them."""
        return "".join(part if isinstance(part, str) else part.in_words_of(options) for part in self.parts)
