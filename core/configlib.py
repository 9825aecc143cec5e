"""Typed config plumbing: dataclasses with help text, loaded from TOML with errors that name the key.

Every config field is declared with `opt(default, "why this exists")`. The help text is
written into run.toml as a comment, so the file documents itself. A numeric field can also declare
its allowed range (`at_least`, `above`, `at_most`), checked when run.toml is loaded, and a config
class can check what involves several of its fields in a `config_problems()` method: a value that
would only fail inside a training job (or, worse, run and mean nothing) is named at load time.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin

from core.errors import ConfigError


def opt(default: Any, help: str, *, at_least: float | None = None, above: float | None = None,
        at_most: float | None = None, because: str = "") -> Any:
    """A config field with a default and a help text (the help is mandatory: config is documentation).
    `at_least`/`above`/`at_most` bound a number (`because` says why, when the bound is not obvious)."""
    bounds = {k: v for k, v in (("at_least", at_least), ("above", above), ("at_most", at_most)) if v is not None}
    metadata = {"help": help, **bounds, **({"because": because} if because else {})}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda d=default: dataclasses.replace(d), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def from_dict(cls: type, data: dict, where: str) -> Any:
    """Build dataclass `cls` from `data`; unknown keys, wrong types and values out of range raise ConfigError
    naming the key. `where` names the table being read: "" for a file's top level (keys print as `seeds`),
    "[math]" for a section (keys print as `[math].lr`, the way run.toml's comments and messages name them)."""
    if not isinstance(data, dict):
        raise ConfigError(_at(where, f"expected a table, got {type(data).__name__}"))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(_at(where, f"unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(fields))}"))
    values = {}
    for name, value in data.items():
        values[name] = _coerce(hints[name], value, _key(where, name))
        _check_bounds(fields[name], values[name], _key(where, name))
    obj = cls(**values)
    problems = getattr(obj, "config_problems", list)()  # [(key, what is wrong)]: checks across fields
    if problems:
        name, problem = problems[0]
        raise ConfigError(_at(_key(where, name), problem))
    return obj


def _at(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def _key(table: str, name: str) -> str:
    """How a key of `table` is named in messages: `seeds` at the top level, `[search.selection].mode` inside."""
    return f"{table}.{name}" if table else name


def _as_table(key: str) -> str:
    """The label of the sub-table at `key`: `budget` -> `[budget]`, `[search].selection` -> `[search.selection]`."""
    return "[" + key.replace("[", "").replace("]", "") + "]"


BOUNDS = (("at_least", ">="), ("above", ">"), ("at_most", "<="))


def _check_bounds(field: dataclasses.Field, value: Any, key: str) -> None:
    meta = field.metadata
    if not any(name in meta for name, _ in BOUNDS) or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    # Written as "is within" so that NaN, which fails every comparison, is refused too.
    within = (("at_least" not in meta or value >= meta["at_least"]) and ("above" not in meta or value > meta["above"])
              and ("at_most" not in meta or value <= meta["at_most"]))
    if within:
        return
    allowed = " and ".join(f"{op} {meta[name]}" for name, op in BOUNDS if name in meta)
    why = f" ({meta['because']})" if meta.get("because") else ""
    raise ConfigError(f"{key}: must be {allowed}{why}, got {value!r}")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, _as_table(where))
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
        _, item = get_args(tp) or (str, Any)
        return {k: _coerce(item, v, f"{where}.{k}") for k, v in value.items()}
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
