"""The one exception type spnir raises for bad input, so the CLI can print it without a traceback."""


class SpnirError(ValueError):
    """Bad input: the message names the file, key or value and what was expected."""
