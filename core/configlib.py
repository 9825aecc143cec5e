"""Typed config plumbing: dataclasses with help text, loaded from TOML with errors that name the key.

Every config field is declared with `opt(default, "why this exists")`. The help text is
written into run.toml as a comment, so the file documents itself.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin

from core.errors import ConfigError


def opt(default: Any, help: str) -> Any:
    """A config field with a default and a help text (the help is mandatory: config is documentation)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda d=default: dataclasses.replace(d), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def from_dict(cls: type, data: dict, where: str) -> Any:
    """Build dataclass `cls` from `data`; unknown keys and wrong types raise ConfigError naming `where.key`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(names))}")
    values = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**values)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = get_args(tp) or (Any,)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is Any or (isinstance(tp, type) and isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def to_toml(obj: Any, table: str = "") -> str:
    """Render a config dataclass as TOML with each field's help text as a comment above it."""
    scalars: list[str] = []
    subtables: list[str] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{table}.{f.name}" if table else f.name
        if dataclasses.is_dataclass(value):
            subtables.append(f"# {f.metadata.get('help', '')}\n[{key}]\n" + to_toml(value, key))
            continue
        if value is None:
            scalars.append(f"# {f.metadata.get('help', '')}\n# {f.name} = (unset)")
            continue
        scalars.append(f"# {f.metadata.get('help', '')}\n{f.name} = {_toml_value(value)}")
    body = "\n".join(scalars)
    return body + ("\n\n" if body else "") + "\n\n".join(subtables) + ("\n" if subtables else "")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise ConfigError(f"cannot write {v!r} to TOML")
