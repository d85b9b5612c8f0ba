"""The batch spec JSON Schema, and its violations told as a user can act on them."""

from __future__ import annotations

import ast
import datetime
import difflib
import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any, cast

from jsonschema import Draft7Validator, ValidationError

from offload.batches.spec.model import SpecError
from offload.batches.spec.source import FieldPath, SpecSource

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}

# What a user may write where the schema offers alternatives (oneOf), by schema pointer.
_FORMS = {
    "/properties/on/items": (
        'each "on" entry must be {repositoriesMatchingQuery: <query>} or '
        "{repository: <name>} with an optional branch or branches"
    ),
    "/properties/steps/items/properties/env": (
        'env must be a mapping of NAME: value, or a list of "NAME" and {NAME: value} entries'
    ),
    "/properties/steps/items/properties/env/oneOf/2/items": (
        'each env entry must be "NAME" (passed through from the environment) or {NAME: value}'
    ),
    "/properties/steps/items/properties/if": "if must be true, false, or a template string",
    "/properties/importChangesets/items/properties/externalIDs/items": (
        "each external ID must be a string or an integer"
    ),
    "/properties/changesetTemplate/properties/published": (
        'published must be true, false, "draft", or a list of {glob: true|false|"draft"}'
    ),
    "/definitions/publishedValue": 'a published value must be true, false, or "draft"',
}


def schema() -> dict[str, Any]:
    """The batch spec JSON Schema shipped with offload (Sourcegraph's, field for field)."""
    path = resources.files("offload.batches").joinpath("schema/batch_spec.schema.json")
    return cast(dict[str, Any], json.loads(path.read_text(encoding="utf-8")))


def schema_errors(source: SpecSource, data: Any) -> list[SpecError]:
    """Every violation of the schema by data (the spec as plain JSON values)."""
    return [e for error in _validator().iter_errors(data) for e in _explain(source, error)]


def describe(value: Any) -> str:
    """A value as an error message names it: the string "x", the number 3, a list."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {json.dumps(shown)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.date):
        return f"the date {value.isoformat()}"
    return type(value).__name__


@functools.cache
def _validator() -> Draft7Validator:
    return Draft7Validator(schema())


@functools.cache
def _forms() -> list[tuple[Mapping[str, Any], str]]:
    def resolve(pointer: str) -> Mapping[str, Any]:
        node: Any = _validator().schema
        for part in pointer.strip("/").split("/"):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return cast(Mapping[str, Any], node)

    return [(resolve(pointer), message) for pointer, message in _FORMS.items()]


def _explain(source: SpecSource, error: ValidationError) -> list[SpecError]:
    path = list(error.absolute_path)
    instance: Any = error.instance
    value: Any = error.validator_value
    kind = error.validator
    if kind == "additionalProperties" and value is False:
        known = list(cast(Mapping[str, Any], error.schema).get("properties", {}))
        unknown = [[*path, key] for key in instance if key not in known]
        return [
            source.error(p, _unknown_field(str(p[-1]), known), source.key_position(p))
            for p in unknown
        ]
    if kind == "required":
        missing = re.match(r"^(.*) is a required property$", error.message)
        field = ast.literal_eval(missing[1]) if missing else error.message
        return [source.error(path, f'missing required field "{field}"')]
    if kind == "type":
        return [source.error(path, _type_message(value, instance))]
    if kind in ("oneOf", "anyOf"):
        return _explain_alternatives(source, error, path)
    if kind == "not" and isinstance(value, Mapping):
        fields = value.get("required", [])
        at = [*path, *fields[-1:]]
        message = " or ".join(f'"{f}"' for f in fields) + ": give only one of them, not both"
        return [source.error(at, message, source.key_position(at))]
    if kind == "pattern" and path == ["name"]:
        message = (
            'may contain only letters, digits, "_", "." and "-" (no spaces or slashes); '
            f"found {describe(instance)}"
        )
        return [source.error(path, message)]
    if kind == "enum":
        choices = ", ".join(json.dumps(v) for v in value)
        return [source.error(path, f"must be one of {choices}; found {describe(instance)}")]
    if kind == "minLength":
        return [source.error(path, "must not be empty")]
    if kind in ("minProperties", "maxProperties"):
        message = f"must be a mapping with exactly one key; found {len(instance)} keys"
        return [source.error(path, message)]
    if kind == "uniqueItems":
        index = next(i for i, v in enumerate(instance) if v in instance[:i])
        message = f"{describe(instance[index])} appears more than once; list each value once"
        return [source.error([*path, index], message)]
    return [source.error(path, error.message)]


def _explain_alternatives(
    source: SpecSource, error: ValidationError, path: FieldPath
) -> list[SpecError]:
    """Explain a oneOf by the alternative the value was evidently meant to be, if one is."""
    instance: Any = error.instance
    branches: list[Mapping[str, Any]] = cast(Any, error.validator_value)
    forms = next((message for s, message in _forms() if s is error.schema), None)
    candidates = [i for i, branch in enumerate(branches) if _accepts_type(branch, instance)]
    if len(candidates) > 1 and isinstance(instance, dict):
        candidates = [
            i for i in candidates if all(f in instance for f in branches[i].get("required", []))
        ]
    # A wrong scalar is best answered by the list of forms, not by one form's complaint.
    scalar = not isinstance(instance, dict | list)
    if len(candidates) == 1 and not (scalar and forms):
        chosen = [e for e in error.context or [] if e.relative_schema_path[0] == candidates[0]]
        if chosen:
            return [e for sub in chosen for e in _explain(source, sub)]
    if forms is None:
        expected = [_TYPE_NAMES[t] for branch in branches for t in _types(branch)]
        forms = "must be " + " or ".join(dict.fromkeys(expected))
    return [source.error(path, f"{forms}; found {describe(instance)}")]


def _unknown_field(key: str, known: list[str]) -> str:
    message = f'unknown field "{key}"; valid fields here: {", ".join(known)}'
    same = [k for k in known if k.lower() == key.lower()]
    close = same or difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        message += f' (did you mean "{close[0]}"?)'
    return message


def _type_message(expected: str | list[str], value: Any) -> str:
    kinds = [expected] if isinstance(expected, str) else [k for k in expected if k != "null"]
    wanted = " or ".join(_TYPE_NAMES[k] for k in kinds or ["null"])
    message = f"expected {wanted}, found {describe(value)}"
    if "string" in kinds and value is not None and not isinstance(value, dict | list):
        message += " (put it in quotes to make it a string)"
    return message


def _types(schema: Mapping[str, Any]) -> list[str]:
    if "type" in schema:
        kinds = schema["type"]
        return [kinds] if isinstance(kinds, str) else list(kinds)
    alternatives = schema.get("oneOf", []) + schema.get("anyOf", [])
    return [t for alternative in alternatives for t in _types(alternative)]


def _accepts_type(schema: Mapping[str, Any], value: Any) -> bool:
    kinds = _types(schema)
    kind = _json_type(value)
    return not kinds or kind in kinds or (kind == "integer" and "number" in kinds)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "date"
