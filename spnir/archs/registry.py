"""The preset registry: ``@register_model`` on a preset function, ``create_model(name, ...)`` to build one.

A preset is a plain function ``preset(scale=None, **overrides) -> nn.Module`` that fills in the keyword
arguments of a family's model class, so its definition is a few visible lines. Each family registers its
checkpoint filter (official format -> our state_dict keys) beside its model code.
"""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from spnir.archs.arguments import check_arguments
from spnir.errors import SpnirError

StateDict = dict[str, Any]
CheckpointFilter = Callable[[StateDict, nn.Module], StateDict]


@dataclass(frozen=True)
class Preset:
    """One registered preset: its builder and what is known about it."""

    name: str
    build: Callable[..., nn.Module]
    family: str
    scales: tuple[int, ...] | None = None  # None: not an SR model (output size == input size)
    task: str = "sr"
    params: dict[int | None, int] = field(default_factory=dict)  # official parameter counts by scale
    description: str = ""


_PRESETS: dict[str, Preset] = {}
_FILTERS: dict[str, CheckpointFilter] = {}


def register_model(
    name: str,
    *,
    family: str,
    task: str,
    scales: tuple[int, ...] | None = None,
    params: dict[int | None, int] | None = None,
    description: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a preset function under ``name``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _PRESETS:
            raise RuntimeError(f"preset {name!r} registered twice")
        _PRESETS[name] = Preset(name, fn, family, scales, task, dict(params or {}), description)
        return fn

    return wrap


def register_checkpoint_filter(family: str) -> Callable[[CheckpointFilter], CheckpointFilter]:
    """Decorator registering the function that maps a family's official checkpoint keys to ours.

    The filter is called as ``fn(state, model)`` by ``spnir.archs.model_files.load_checkpoint`` with the
    flat state dict already chosen from the file (``params``/``params_ema``/``key=``, or the single
    ``state_dict``/``model``/``net`` wrapper entry) and with ``module.`` prefixes removed; it returns a
    state dict with ``model``'s keys. It must not change tensors it does not need to.
    """

    def wrap(fn: CheckpointFilter) -> CheckpointFilter:
        _FILTERS[family] = fn
        return fn

    return wrap


def checkpoint_filter(family: str) -> CheckpointFilter | None:
    """The registered checkpoint filter of ``family``, if it has one."""
    return _FILTERS.get(family)


def get_preset(name: str) -> Preset:
    """The registered preset ``name``; an unknown name suggests the nearest ones."""
    _import_families()
    if name not in _PRESETS:
        near = difflib.get_close_matches(name, _PRESETS, n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise SpnirError(f"unknown model preset {name!r}{hint}; known: {', '.join(sorted(_PRESETS))}")
    return _PRESETS[name]


def list_models() -> list[str]:
    """Names of all registered presets, sorted."""
    _import_families()
    return sorted(_PRESETS)


def check_scale(name: str, scale: int | None, setting: str = "scale") -> None:
    """Preset ``name`` exists and takes ``scale`` (``setting`` names where the user sets it: ``model.scale``)."""
    preset = get_preset(name)
    if preset.scales is None:
        if scale not in (None, 1):
            raise SpnirError(f"preset {name!r} does not upscale; got {setting} {scale}")
    elif scale is None:
        raise SpnirError(f"preset {name!r} needs {setting} set to one of {preset.scales}")
    elif scale not in preset.scales:
        raise SpnirError(f"preset {name!r} supports scales {preset.scales}; got {setting} {scale}")


def check_overrides(name: str, overrides: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``overrides`` checked against preset ``name``'s arguments (names and types from its signature, see
    :mod:`spnir.archs.arguments`); ``where`` prefixes each name in messages (``"model.args."``, ``"--set "``)."""
    return check_arguments(get_preset(name).build, overrides, f"preset {name!r}", where, skip=("scale",))


def create_model(name: str, scale: int | None = None, **overrides: Any) -> nn.Module:
    """Build preset ``name`` (``scale`` is required for SR presets and refused by the others); unknown or
    mistyped overrides are refused naming the argument (:func:`check_overrides`)."""
    preset = get_preset(name)
    check_scale(name, scale)
    overrides = check_overrides(name, overrides)
    scale_arg = {} if preset.scales is None else {"scale": scale}
    try:
        model = preset.build(**scale_arg, **overrides)
    except (TypeError, ValueError) as exc:
        if not overrides or isinstance(exc, SpnirError):
            raise
        raise SpnirError(f"preset {name!r} cannot be built with {overrides}: {exc}") from exc
    # nn.Module.__setattr__'s stub admits tensors and modules only; at run time a plain attribute takes any value.
    model.spnir_preset = {"name": name, "scale": scale, "overrides": dict(overrides)}  # type: ignore[assignment]
    return model


def preset_record(model: nn.Module) -> dict[str, Any] | None:
    """``{"name", "scale", "overrides"}`` of a model :func:`create_model` built (through a ``torch.compile``
    wrapper too); ``None`` for any other model."""
    record = getattr(getattr(model, "_orig_mod", model), "spnir_preset", None)
    return record if isinstance(record, dict) else None


def _import_families() -> None:
    """Families register themselves on import; ``spnir.archs`` imports its explicit list of them."""
    importlib.import_module("spnir.archs")
