"""One engine for checking a user-given value against a Python type and converting it as YAML writes it.

The config schema (:mod:`spnir.train.config`) and the model-argument checks (:mod:`spnir.archs.arguments`) both
ask :func:`conform` whether a value fits a type hint, and :func:`describe_type` for the words an error uses.
What YAML leaves unparsed is read the way a user means it: ``1e-4`` (a string to YAML) is a number, ``2e5`` or
``200.0`` is an integer where an integer is expected, and one value where a ``list[...]`` is expected is a list
of one. A bool is never a number.
"""
from __future__ import annotations

import collections.abc
import copy
import inspect
import types
import typing
from typing import Any


def number(value: Any, integer: bool = False) -> int | float | None:
    """``value`` as a float (or an int with ``integer``), accepting numbers written as strings; ``None`` when
    it is not a number (or not integral where ``integer`` asks for one)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    if integer:
        return int(value) if float(value).is_integer() else None
    return float(value)


def conform(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(value fits hint, value converted)``: numbers as above, unions tried in order, ``Literal``, lists and
    tuples (fixed length or ``tuple[X, ...]``), ``dict[K, V]``; a class checks ``isinstance``; anything else
    (``Any``, no annotation) fits. Containers come back as new objects."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True, copy.deepcopy(value)
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in params:
            ok, converted = conform(value, option)
            if ok:
                return True, converted
        return False, value
    if origin is typing.Literal:
        return value in params, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint in (int, float):
        converted = number(value, integer=hint is int)
        return converted is not None, value if converted is None else converted
    if hint is str:
        return isinstance(value, str), value
    if origin in (tuple, list, collections.abc.Sequence) or hint in (tuple, list):
        return _conform_sequence(value, hint, origin, params)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return False, value
        key_hint, value_hint = params or (Any, Any)
        out = {}
        for k, v in value.items():
            ok_key, key = conform(k, key_hint)
            ok_value, item = conform(v, value_hint)
            if not (ok_key and ok_value):
                return False, value
            out[key] = item
        return True, out
    if inspect.isclass(hint):
        return isinstance(value, hint), value
    return True, value


def _conform_sequence(value: Any, hint: Any, origin: Any, params: tuple[Any, ...]) -> tuple[bool, Any]:
    if origin is list and not isinstance(value, (list, tuple, dict)) and value is not None:
        value = [value]  # one value where a list is expected
    if not isinstance(value, (list, tuple)):
        return False, value
    if origin is tuple and params and params[-1] is not Ellipsis:
        if len(value) != len(params):
            return False, value
        pairs = list(zip(value, params))
    else:
        item = params[0] if params else Any
        pairs = [(v, item) for v in value]
    converted = []
    for v, h in pairs:
        ok, c = conform(v, h)
        if not ok:
            return False, value
        converted.append(c)
    return True, (tuple(converted) if isinstance(value, tuple) else converted)


def describe_type(hint: Any) -> str:
    """Words for what ``hint`` accepts: ``int | None`` -> "an integer or null"."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(p) for p in params)
    if origin is typing.Literal:
        return f"one of {list(params)}"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
             dict: "a mapping"}
    if hint in words:
        return words[hint]
    if hint is Any:
        return "a value"
    if origin is dict:
        return f"a mapping of names to {_plural(params[1])}" if params else "a mapping"
    if origin in (tuple, list, collections.abc.Sequence) or hint in (tuple, list):
        if origin is tuple and params and params[-1] is not Ellipsis:
            if len(set(params)) == 1:
                return f"a list of {len(params)} {_plural(params[0])}"
            return f"a list of {len(params)} ({', '.join(describe_type(p) for p in params)})"
        return f"a list of {_plural(params[0]) if params else 'values'}"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    return {bool: "true/false", int: "integers", float: "numbers", str: "strings", dict: "mappings"}.get(
        hint, describe_type(hint))
