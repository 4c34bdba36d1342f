"""Keyword arguments of a model builder, read from its signature, and checking of user-given ones against it.

A preset function ``preset(scale, **overrides) -> ModelClass`` passes its overrides on to ``ModelClass``, so the
arguments it accepts are its own named parameters plus those of the class it returns (its return annotation).
:func:`check_arguments` names an unknown argument with the accepted ones and the near match, and a value of the
wrong type with the type the annotation asks for, before anything is built.
"""
from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from spnir.coerce import conform, describe_type
from spnir.errors import SpnirError


class ArgumentError(SpnirError):
    """A bad keyword argument; ``key`` is the argument's name (so a caller can say where it was set)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve is simply not checked
        return {}


def accepted_arguments(fn: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """``{name: annotation}`` of the keyword arguments ``fn`` accepts (``Any`` where unannotated); ``None`` when it
    takes ``**kwargs`` that go to something its signature does not name (nothing can be checked then).

    A class is read from its ``__init__``; a function with ``**kwargs`` and a class as its return annotation
    (a preset) from its own parameters plus the class's.
    """
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None
    hints = _hints(target)
    names = {n: hints.get(n, Any) for n, p in params.items()
             if p.kind not in _VARIADIC and n not in ("self", *skip)}
    if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return names
    returned = hints.get("return")
    if inspect.isclass(fn) or not inspect.isclass(returned):
        return None
    inner = accepted_arguments(returned, skip)
    return None if inner is None else {**inner, **names}


def check_arguments(fn: Callable[..., Any], args: Mapping[str, Any], what: str, where: str = "",
                    skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``args`` checked against ``fn``'s keyword arguments (see :func:`accepted_arguments`) and converted as
    :func:`spnir.coerce.conform` reads YAML (``1e-4`` becomes a number where a number is expected). ``what`` names
    the builder in messages
    ("preset 'edsr'"), ``where`` prefixes each key ("model.args.", "--set "); ``skip`` are arguments the caller
    passes itself (``scale``)."""
    accepted = accepted_arguments(fn, skip)
    if accepted is None:
        return dict(args)
    checked = {}
    for key, value in args.items():
        if key not in accepted:
            near = difflib.get_close_matches(str(key), list(accepted), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            known = ", ".join(accepted) or "none"
            reserved = (f"; {key} is a setting of its own (model.{key} in a config, --{key} on the command line)"
                        if key in skip else "")
            raise ArgumentError(key, f"{where}{key}: {what} has no argument {key!r}{hint}{reserved}; "
                                     f"it accepts: {known}")
        ok, converted = conform(value, accepted[key])
        if not ok:
            raise ArgumentError(key, f"{where}{key} = {value!r} ({type(value).__name__}): {what} expects "
                                     f"{describe_type(accepted[key])}")
        checked[key] = converted
    return checked
