"""Keyword arguments of a model builder, read from its signature, and checking of user-given ones against it.

A preset function ``preset(scale, **overrides) -> ModelClass`` passes its overrides on to ``ModelClass``, so the
arguments it accepts are its own named parameters plus those of the class it returns (its return annotation).
:func:`check_arguments` names an unknown argument with the accepted ones and the near match, and a value of the
wrong type with the type the annotation asks for, before anything is built.
"""
from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from typing import Any, Callable, Mapping

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
    """``args`` checked against ``fn``'s keyword arguments (see :func:`accepted_arguments`); numbers written as
    strings (YAML's ``1e-4``) become numbers where a number is expected. ``what`` names the builder in messages
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
        ok, converted = _conforms(value, accepted[key])
        if not ok:
            raise ArgumentError(key, f"{where}{key} = {value!r} ({type(value).__name__}): {what} expects "
                                     f"{describe_type(accepted[key])}")
        checked[key] = converted
    return checked


def _number(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _conforms(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(value fits hint, value as passed on)``."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True, value
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in params:
            ok, converted = _conforms(value, option)
            if ok:
                return True, converted
        return False, value
    if origin is typing.Literal:
        return value in params, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, value
        number = _number(value)
        return number is not None, number if number is not None else value
    if hint is str:
        return isinstance(value, str), value
    if origin in (tuple, list, collections.abc.Sequence) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        if origin is tuple and params and params[-1] is not Ellipsis:
            if len(value) != len(params):
                return False, value
            items = list(zip(value, params))
        else:
            item = params[0] if params else Any
            items = [(v, item) for v in value]
        converted = []
        for v, h in items:
            ok, c = _conforms(v, h)
            if not ok:
                return False, value
            converted.append(c)
        return True, (tuple(converted) if isinstance(value, tuple) else converted)
    if inspect.isclass(hint):
        return isinstance(value, hint), value
    return True, value


def describe_type(hint: Any) -> str:
    """Words for what ``hint`` accepts: ``int | None`` -> "an integer or null"."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(p) for p in params)
    if origin is typing.Literal:
        return f"one of {list(params)}"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if hint in words:
        return words[hint]
    if origin in (tuple, list, collections.abc.Sequence) or hint in (tuple, list):
        if origin is tuple and params and params[-1] is not Ellipsis:
            if len(set(params)) == 1:
                return f"a list of {len(params)} {_plural(params[0])}"
            return f"a list of {len(params)} ({', '.join(describe_type(p) for p in params)})"
        return f"a list of {_plural(params[0]) if params else 'values'}"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    return {bool: "true/false", int: "integers", float: "numbers", str: "strings"}.get(hint, describe_type(hint))
