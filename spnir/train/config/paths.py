"""Paths in a config: ``${VAR}`` environment variables, expanded (and checked) only when the datasets are built,
so a config validates on a machine without the data."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from spnir.errors import SpnirError, shown
from spnir.train.config.schema import Config

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


PATH_RULE = ("a relative path in a config is taken from the working directory, as on the command line; "
             "only base: is relative to the config file")


def expand_path(value: str, key: str) -> Path:
    """The existing file or folder a config's path names: every ``${VAR}`` replaced from the environment, a
    relative path taken from the working directory (:data:`PATH_RULE`). An unset variable or a missing path
    is an error naming the key and the rule."""
    missing = [name for name in _VAR.findall(value) if not os.environ.get(name)]
    if missing:
        raise SpnirError(
            f"{key} = {shown(value)} uses the environment variable {missing[0]}, which is not set; "
            f"point it at your copy of the data, e.g. export {missing[0]}=/data/..."
        )
    path = Path(os.path.expanduser(_VAR.sub(lambda m: os.environ[m.group(1)], value)))
    if not path.exists():
        where = f" (from the working directory {Path.cwd()}; {PATH_RULE})" if not path.is_absolute() else ""
        raise SpnirError(f"{key} = {shown(value)}: {path} does not exist{where}")
    return path


def referenced_variables(config: Config) -> set[str]:
    """Names of the ``${VAR}`` environment variables a config's data paths use."""
    found: set[str] = set()
    sources: Iterable[Config] = [config["data"]["train"], *config["data"]["val"]]
    for source in sources:
        for key in ("lq", "gt", "pairs"):
            if source.get(key):
                found.update(_VAR.findall(source[key]))
    if config["model"]["pretrained"]:
        found.update(_VAR.findall(config["model"]["pretrained"]))
    return found
