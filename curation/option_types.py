"""Checks a stage's options against the types its `Config` dataclass declares, when the config is
loaded: `languages: en` (a string where a list is meant) or `threshold: '0.8'` is named with what was
expected, before any work starts, instead of a stage that silently does nothing or a crash mid-run.

Only the shapes configs use are understood (str, int, float, bool, None, tuple[X, ...], tuple[X, Y],
dict[K, V], unions, Literal); anything else is left to the stage's own `__post_init__`. YAML gives
lists where a config declares tuples: a list is accepted for a tuple.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if value is None:
        return "nothing (null)"
    if isinstance(value, (list, tuple)):
        return f"a list ({value!r:.60})"
    if isinstance(value, dict):
        return f"a mapping ({value!r:.60})"
    return f"{type(value).__name__} {value!r:.60}"


def _name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if hint in (str, int, float, bool):
        return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[hint]
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_name(arg) for arg in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} items ({', '.join(_name(a) for a in args)})"
    if origin is dict:
        key, value = typing.get_args(hint)
        return f"a mapping of {_name(key)} to {_name(value)}"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return str(hint)


def _plural(hint: Any) -> str:
    named = _name(hint)
    for article in ("a ", "an "):
        if named.startswith(article):
            return named[len(article):] + "s"
    return named


def matches(value: Any, hint: Any) -> bool:
    """Whether `value` (as YAML gives it) fits `hint`; unknown hints match anything."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(item, args[0]) for item in value)
        return len(value) == len(args) and all(matches(item, arg) for item, arg in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            return False
        key_hint, value_hint = typing.get_args(hint)
        return all(matches(k, key_hint) and matches(v, value_hint) for k, v in value.items())
    if origin is list:
        return isinstance(value, (list, tuple)) and all(matches(item, typing.get_args(hint)[0]) for item in value)
    return True


def check_options(config_cls: type, options: dict[str, Any], owner: str) -> None:
    """Raise ValueError naming the first option whose value does not fit its declared type."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # an annotation we cannot resolve: leave it to the config itself
        return
    for field in dataclasses.fields(config_cls):
        if field.name not in options or field.name not in hints:
            continue
        value, hint = options[field.name], hints[field.name]
        if not matches(value, hint):
            hint_text = ""
            if isinstance(value, str) and typing.get_origin(hint) is tuple:
                hint_text = f" (write [{value}] for a list of one)"
            raise ValueError(f"{owner}: option {field.name!r} must be {_name(hint)}, got {_describe(value)}{hint_text}")
