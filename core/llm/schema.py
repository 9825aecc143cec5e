"""A small JSON-schema validator for the subset our operators use.

Why not the `jsonschema` package: we need only object/array/string/number/integer/boolean, enum,
required, properties, additionalProperties, min/maxItems and maxLength, and one less dependency
keeps `make setup` simple. Grammar-constrained backends already enforce the schema; this check
protects against backends that ignore it (a local server without grammar support) and corpus replies.
"""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_errors(value: Any, schema: dict, path: str = "$") -> list[str]:
    """Every violation as 'path: problem'; empty when `value` conforms."""
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives:
        return _alternative_errors(value, alternatives, path)
    errors = _type_errors(value, schema, path)
    if errors:
        return errors
    if "enum" in schema and value not in schema["enum"]:
        shown = ", ".join(map(repr, schema["enum"][:12]))
        return [f"{path}: {value!r} is not one of {shown}"]
    if isinstance(value, dict):
        return _object_errors(value, schema, path)
    if isinstance(value, list):
        return _array_errors(value, schema, path)
    if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
        return [f"{path}: string longer than {schema['maxLength']} characters"]
    return []


def _type_errors(value: Any, schema: dict, path: str) -> list[str]:
    kind = schema.get("type")
    if kind is None:
        return []
    if isinstance(value, bool) and kind in ("number", "integer"):
        return [f"{path}: expected {kind}, got boolean"]
    if not isinstance(value, _TYPES[kind]):
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    return []


def _object_errors(value: dict, schema: dict, path: str) -> list[str]:
    props: dict = schema.get("properties", {})
    errors = [f"{path}: missing required key {k!r}" for k in schema.get("required", []) if k not in value]
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in props:
            errors += schema_errors(item, props[key], f"{path}.{key}")
        elif extra is False:
            errors.append(f"{path}: unexpected key {key!r}")
        elif isinstance(extra, dict):
            errors += schema_errors(item, extra, f"{path}.{key}")
    return errors


def _array_errors(value: list, schema: dict, path: str) -> list[str]:
    errors = []
    if len(value) < schema.get("minItems", 0):
        errors.append(f"{path}: needs at least {schema['minItems']} items, got {len(value)}")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: at most {schema['maxItems']} items allowed, got {len(value)}")
    for i, item in enumerate(value):
        errors += schema_errors(item, schema.get("items", {}), f"{path}[{i}]")
    return errors


def _alternative_errors(value: Any, alternatives: list[dict], path: str) -> list[str]:
    """Valid when one alternative fits (oneOf is checked as anyOf: our alternatives are disjoint by name);
    otherwise the errors of the closest alternative, which is the most useful message for a repair."""
    results = [schema_errors(value, alt, path) for alt in alternatives]
    if any(not errs for errs in results):
        return []
    # Closest = its enums (the discriminating "name") matched, then fewest errors.
    return min(results, key=lambda errs: (any("is not one of" in e for e in errs), len(errs)))
