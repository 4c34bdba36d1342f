"""Reading a training config: the YAML file (``base:`` files merged under it, a BasicSR-style option file mapped
by :mod:`spnir.train.basicsr`), ``key=value`` overrides (``spnir train --set``), then one check
(:func:`validate`) shared by ``spnir train --print-config`` and training."""
from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from spnir.errors import SHOWN_CHARS, Param, ParameterError, SpnirError, in_current_words, shown
from spnir.train.config.rules import check_runnable
from spnir.train.config.schema import Config, Origin, check_schema
from spnir.yamlfile import parse_yaml, read_yaml


def load_config(
    source: str | os.PathLike | Config,
    overrides: Sequence[str] = (),
    notes: list[str] | None = None,
) -> Config:
    """Read, map (BasicSR-style files), override and validate a config; return it with defaults filled in.

    ``overrides`` are ``"dotted.key=value"`` strings (values parsed as YAML); an error about a value one of
    them set names that override (``spnir train``'s ``--set``), not the file. ``notes`` collects what the
    BasicSR mapping ignored (settings with no effect here).
    """
    if isinstance(source, dict):
        raw, origin = _with_base(copy.deepcopy(source), Path.cwd(), "config", ()), "config"
    else:
        raw, origin = _read_yaml(Path(source), ()), str(source)
    if _is_basicsr(raw):
        from spnir.train.basicsr import map_basicsr_options

        raw = map_basicsr_options(raw, origin, notes if notes is not None else [])
    if raw.get("name") is None and not isinstance(source, dict):
        raw["name"] = Path(source).stem
    applied = tuple((apply_override(raw, item), override_param(item)) for item in overrides)
    return validate(raw, Origin(origin, applied))


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> Config:
    if not path.is_file():
        raise SpnirError(f"config file {path} does not exist")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpnirError(f"{path}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    return _with_base(raw, path.parent, str(path), chain + (path.resolve(),))


def _with_base(raw: Config, folder: Path, origin: str, chain: tuple[Path, ...]) -> Config:
    """``base: other.yml`` (relative to the file) is read first; this file's keys override it (deep merge)."""
    base = raw.pop("base", None)
    if base is None:
        return raw
    path = (folder / str(base)).resolve()
    if path in chain:
        raise SpnirError(f"{origin}: base {base} includes itself (chain: {' -> '.join(map(str, chain))})")
    return _merge(_read_yaml(path, chain), raw)


def _merge(base: Config, top: Config) -> Config:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _is_basicsr(raw: Config) -> bool:
    return "network_g" in raw or "datasets" in raw


def override_param(item: str) -> Param:
    """One ``key=value`` override, named in messages: ``override 'optim.lr=slow'`` in Python, ``--set
    optim.lr=slow`` in ``spnir train`` (a long value cut, as :func:`spnir.errors.shown` cuts)."""
    item = item.strip()
    cut = item if len(item) <= SHOWN_CHARS else f"{item[:SHOWN_CHARS]}... ({len(item)} characters)"
    return Param("overrides", python=f"override {shown(item)}", metavar=cut)


def apply_override(config: Config, item: str) -> str:
    """Set ``a.b.c=value`` in ``config`` (value parsed as YAML, so ``[1, 2]`` is a list); returns the key."""
    named = override_param(item)
    if "=" not in item:
        raise ParameterError(named, ": expected key=value, e.g. optim.lr=2e-4")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ParameterError(named, ": expected a dotted key before '=', e.g. optim.lr=2e-4")
    value = parse_yaml(text, in_current_words(override_param(key)))  # "--set a.b:1: not valid YAML: ..."
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ParameterError(named, f": {'.'.join(parts[:depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value
    return key


def validate(raw: Config, origin: str | Origin = "config") -> Config:
    """Check ``raw`` against the schema and everything a run checks before it starts (see
    :func:`~spnir.train.config.rules.check_runnable`); return a new config with defaults filled in.
    ``spnir train --print-config`` and training share this one check."""
    origin = origin if isinstance(origin, Origin) else Origin(origin)
    config = check_schema(raw, origin)
    check_runnable(config, origin)
    return config


def dump_config(config: Config) -> str:
    """The config as YAML (the run directory keeps it beside the checkpoints)."""
    return yaml.safe_dump(config, sort_keys=False)
