"""The one exception type spnir raises for bad input, so the CLI can print it without a traceback, and
:func:`shown`, which messages use to quote a value the user gave (long values are cut)."""
from __future__ import annotations

from typing import Any

SHOWN_CHARS = 120  # a quoted value longer than this is cut in messages


class SpnirError(ValueError):
    """Bad input: the message names the file, key or value and what was expected."""


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for a message, cut after ``limit`` characters with the full length said
    (``'aaaa'... (52428800 characters)``), so a 50 MB value still gives a one-line error of readable size."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
