"""Reading YAML strictly: a key given twice in one mapping is an error naming the key and both lines (plain
``yaml.safe_load`` keeps the last one silently); a file over :data:`MAX_BYTES` or nested deeper than
:data:`MAX_DEPTH` is refused in one line before it is built (a YAML bomb would otherwise end in a
``RecursionError`` or fill the memory)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from spnir.errors import SpnirError, shown

MAX_BYTES = 1 << 20  # a config, study or history file is a few KB
MAX_DEPTH = 32       # a config nests about 5 levels (data.val[0].degradations[0].sigma)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"{line}: key {shown(key)} given twice (first on line {first}); keep one")


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


def _check_depth(text: str, source: str) -> None:
    """Walk the event stream (no recursion) and refuse nesting deeper than :data:`MAX_DEPTH`."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                where = source if event.start_mark is None else f"{source}:{event.start_mark.line + 1}"
                raise SpnirError(f"{where}: nested more than {MAX_DEPTH} levels deep; a config nests a "
                                 "few levels (is this the right file?)")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def parse_yaml(text: str, source: str) -> Any:
    """YAML ``text`` (from ``source``, named in errors) parsed strictly, size and depth checked first."""
    if len(text) > MAX_BYTES:
        raise SpnirError(f"{source}: {len(text) / 1e6:.1f} MB of YAML; expected under {MAX_BYTES // (1 << 20)} MB")
    try:
        _check_depth(text, source)
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise SpnirError(f"{source}:{exc}") from None
    except yaml.YAMLError as exc:  # one line: the problem and its line, without PyYAML's excerpt and caret
        mark = getattr(exc, "problem_mark", None)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise SpnirError(f"{source}{f':{mark.line + 1}' if mark else ''}: not valid YAML: {problem}") from None


def read_yaml(path: Path) -> Any:
    """The content of YAML file ``path``; invalid, huge or deeply nested YAML and repeated keys are errors
    naming the file and line."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SpnirError(f"{path}: {size / 1e6:.1f} MB; a config or study file is expected to be under "
                             f"{MAX_BYTES // (1 << 20)} MB (is this the right file?)")
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpnirError(f"{path}: cannot read as a text file ({exc})") from None
    return parse_yaml(text, str(path))
