"""Reading YAML files strictly: a key given twice in one mapping is an error naming the key and both lines
(plain ``yaml.safe_load`` keeps the last one silently)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from spnir.errors import SpnirError


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"{line}: key {key!r} given twice (first on line {first}); keep one")


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a mapping with a repeated key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base class names an unhashable key
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise _DuplicateKey(key, line, first_line[key])
            first_line[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """The content of YAML file ``path``; invalid YAML and repeated keys are errors naming the file and line."""
    try:
        return yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise SpnirError(f"{path}:{exc}") from None
    except yaml.YAMLError as exc:
        raise SpnirError(f"{path}: not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpnirError(f"{path}: cannot read as a text file ({exc})") from None
