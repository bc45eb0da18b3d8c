"""Checking a request's body, query and headers against the schemas it is declared with.

jsonschema-rs does all of it: ``is_valid`` decides (in Rust, about a microsecond for an
order), and only a refused input is explained, from the kinds of the errors jsonschema-rs
reports, as one short problem per field ("is required", "must be at most 100").

Explaining is where a hostile body costs: jsonschema-rs's ``iter_errors`` builds every
error (each with its instance converted to Python and printed into its message) before it
yields the first, so 200,000 bad order lines took 16 s of CPU to report. It is therefore
given a *bounded copy* of the input, cut to what the schema can look at: arrays to one
more item than any ``maxItems`` of the schema, strings to one more character than any
``maxLength``, objects to the fields the schema names plus a few unknown ones, nothing
below the deepest level the schema inspects. Every cut container still breaks the bound
it broke, so each problem reported is one of the input; at most ``MAX_PROBLEMS`` are
reported, and ``truncated`` says when there were more (or may be, in what was cut).
That holds for schemas whose objects are closed and whose arrays and strings are bounded,
as every request schema is (tests/unit/test_request_schemas.py walks them all).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema_rs

from core.domain.errors import ValidationFailed

Schema = dict[str, Any]

#: Problems reported for one request, at most; ``details.truncated`` says when there were more.
MAX_PROBLEMS = 20
#: Unknown fields of one object kept in the copy that is explained: enough to fill the report.
_UNKNOWN_KEPT = MAX_PROBLEMS + 1
#: Field names sent by the client are shown up to this length.
_NAME_LENGTH = 64

_K = jsonschema_rs.ValidationErrorKind

UNKNOWN_FIELD = "is not a field of this request"
UNKNOWN_PARAMETER = "is not a parameter of this operation"
REPEATED_PARAMETER = "must be given once"

_CONTAINER_KEYWORDS = frozenset(
    {
        "properties",
        "patternProperties",
        "additionalProperties",
        "required",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedProperties",
        "items",
        "prefixItems",
        "contains",
        "minItems",
        "maxItems",
        "uniqueItems",
        "unevaluatedItems",
    }
)
_SAME_LEVEL = ("oneOf", "anyOf", "allOf")


def check_schema(schema: Schema) -> None:
    """A schema that is not valid JSON Schema 2020-12 is a programming error: refused at registration."""
    jsonschema_rs.meta.validate(schema)


class Bounds:
    """What a schema can look at in an instance, and how to cut an instance down to it."""

    def __init__(self, schema: Schema):
        self.max_items: int | None = 0  # None: some array is unbounded, so arrays are never cut
        self.max_length: int | None = 0  # None: some string is unbounded, so strings are never cut
        self.names: set[str] = set()
        self.reach = -1  # the deepest level whose children some subschema inspects
        self._walk(schema, 0)

    def _walk(self, schema: Any, depth: int) -> None:
        if not isinstance(schema, dict):
            return
        if "$ref" in schema or "$dynamicRef" in schema:
            raise ValueError("request schemas are self-contained (no $ref)")
        if _CONTAINER_KEYWORDS & schema.keys():
            self.reach = max(self.reach, depth)
        kinds = schema.get("type")
        kinds = set(kinds) if isinstance(kinds, list) else {kinds}
        bounded_by_values = "enum" in schema or "const" in schema
        if "array" in kinds and self.max_items is not None:
            self.max_items = None if "maxItems" not in schema else max(self.max_items, schema["maxItems"])
        if self.max_length is not None:
            for value in [*schema.get("enum", ()), *([schema["const"]] if "const" in schema else [])]:
                if isinstance(value, str):
                    self.max_length = max(self.max_length, len(value))
            if "string" in kinds and not bounded_by_values:
                self.max_length = None if "maxLength" not in schema else max(self.max_length, schema["maxLength"])
        for name, sub in schema.get("properties", {}).items():
            self.names.add(name)
            self._walk(sub, depth + 1)
        for sub in (schema.get("items"), schema.get("additionalProperties"), schema.get("contains")):
            self._walk(sub, depth + 1)
        for sub in schema.get("prefixItems", ()):
            self._walk(sub, depth + 1)
        for keyword in _SAME_LEVEL:
            for sub in schema.get(keyword, ()):
                self._walk(sub, depth)
        for keyword in ("not", "if", "then", "else"):
            self._walk(schema.get(keyword), depth)

    def cut(self, value: Any) -> tuple[Any, bool]:
        """A copy of ``value`` that breaks the same bounds, no bigger than the schema looks;
        and whether fields that may have problems of their own were left out of it."""
        cutter = _Cutter(self)
        return cutter.copy(value, 0), cutter.cut


class _Cutter:
    def __init__(self, bounds: Bounds):
        self._bounds = bounds
        # Unknown fields are kept up to what a report can list, over the whole copy (plus
        # one per object, so that an object of unknown fields is not made empty).
        self._unknown_left = _UNKNOWN_KEPT
        self.cut = False

    def copy(self, value: Any, depth: int) -> Any:
        bounds = self._bounds
        if isinstance(value, str):
            if bounds.max_length is not None and len(value) > bounds.max_length + 1:
                return value[: bounds.max_length + 1]  # still too long: the same problem
            return value
        if isinstance(value, list):
            if depth > bounds.reach:
                return []  # its items are never looked at, only that it is an array
            kept = value if bounds.max_items is None else value[: bounds.max_items + 1]
            self.cut = self.cut or len(kept) < len(value)
            return [self.copy(item, depth + 1) for item in kept]
        if isinstance(value, dict):
            if depth > bounds.reach:
                return {}
            # The fields the schema names, wherever they are among thousands of others, then
            # the first few unknown ones: the copy has every field the schema checks.
            fields = {name: value[name] for name in bounds.names if name in value}
            first = True
            for name in value:
                if name in bounds.names:
                    continue
                if self._unknown_left <= 0 and not first:
                    self.cut = True
                    break
                self._unknown_left -= 1
                first = False
                fields[name if len(name) <= _NAME_LENGTH else name[:_NAME_LENGTH] + "…"] = value[name]
            return {name: self.copy(item, depth + 1) for name, item in fields.items()}
        return value


class SchemaCheck:
    """One schema, compiled once: ``accepts`` is the fast decision, ``check`` raises
    ValidationFailed naming each bad field (at most MAX_PROBLEMS)."""

    def __init__(self, schema: Schema, *, unknown: str = UNKNOWN_FIELD, root: str = "body"):
        self._validator = jsonschema_rs.validator_for(schema, validate_formats=False, mask="…")
        self._bounds = Bounds(schema)
        self._unknown = unknown
        self._root = root

    def accepts(self, data: Any) -> bool:
        return bool(self._validator.is_valid(data))

    def check(self, data: Any) -> None:
        if self._validator.is_valid(data):
            return
        fields, truncated = self.problems(data)
        raise ValidationFailed(fields, truncated=truncated)

    def problems(self, data: Any) -> tuple[dict[str, str], bool]:
        """Each bad field of a refused input with its problem, and whether there were more."""
        copy, cut = self._bounds.cut(data)
        report = _Report(self._unknown, self._root)
        for error in self._validator.iter_errors(copy):
            if not report.add(error):
                break
        if not report.fields:  # pragma: no cover - every refusal has a reason jsonschema-rs names
            report.fields[self._root] = "is not valid"
        return report.fields, report.truncated or cut


class _Report:
    def __init__(self, unknown: str, root: str):
        self.fields: dict[str, str] = {}
        self.truncated = False
        self._unknown = unknown
        self._root = root

    def add(self, error: jsonschema_rs.ValidationError) -> bool:
        """Record what ``error`` says; False once the report is full."""
        kind = error.kind
        path = error.instance_path
        if isinstance(kind, _K.OneOfNotValid | _K.AnyOf) and kind.context:
            nearest = min(kind.context, key=_distance)
            return all(self.add(sub) for sub in nearest)
        if isinstance(kind, _K.Required):
            return self._put([*path, kind.property], "is required")
        if isinstance(kind, _K.AdditionalProperties):
            return all(self._put([*path, name], self._unknown) for name in kind.unexpected)
        return self._put(path, _message(kind))

    def _put(self, path: Iterable[str | int], problem: str) -> bool:
        name = field_name(path, self._root)
        if name in self.fields:
            return True
        if len(self.fields) == MAX_PROBLEMS:
            self.truncated = True
            return False
        self.fields[name] = problem
        return True


def _distance(branch: list[jsonschema_rs.ValidationError]) -> tuple[int, int]:
    """How far the input is from one alternative of a oneOf: first by the constants it
    misses (``method`` names the alternative meant), then by its problems, each unknown
    field counted."""
    constants = sum(isinstance(e.kind, _K.Constant) for e in branch)
    problems = sum(len(e.kind.unexpected) if isinstance(e.kind, _K.AdditionalProperties) else 1 for e in branch)
    return constants, problems


def field_name(path: Iterable[str | int], root: str = "body") -> str:
    """``["items", 0, "quantity"]`` is ``items[0].quantity``; the whole input is ``root``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or root


_TYPE_NAMES = {
    "integer": "an integer",
    "string": "a string",
    "boolean": "true or false",
    "object": "an object",
    "array": "an array",
    "number": "a number",
    "null": "null",
}


def type_problem(kinds: Iterable[str]) -> str:
    ordered = sorted(kinds, key=lambda kind: kind == "null")  # "a string or null"
    return "must be " + " or ".join(_TYPE_NAMES.get(kind, kind) for kind in ordered)


def _message(kind: Any) -> str:
    if isinstance(kind, _K.Type):
        return type_problem(kind.types)
    if isinstance(kind, _K.Minimum):
        return f"must be at least {kind.limit}"
    if isinstance(kind, _K.Maximum):
        return f"must be at most {kind.limit}"
    if isinstance(kind, _K.MinLength):
        return f"must have at least {kind.limit} characters"
    if isinstance(kind, _K.MaxLength):
        return f"must have at most {kind.limit} characters"
    if isinstance(kind, _K.Enum):
        return "must be one of " + ", ".join(map(str, kind.options))
    if isinstance(kind, _K.Pattern):
        return "has characters or a form that is not allowed"
    if isinstance(kind, _K.MinProperties):
        return "must change at least one field"
    if isinstance(kind, _K.MinItems):
        return f"must have at least {kind.limit} items"
    if isinstance(kind, _K.MaxItems):
        return f"must have at most {kind.limit} items"
    if isinstance(kind, _K.Not):
        return "has a value that is not allowed"
    if isinstance(kind, _K.Constant):
        return f"must be {kind.expected_value!r}"
    return "is not valid"


class ParameterCheck:
    """The query parameters of one operation: text turned into the declared types, then
    checked like a body (an object with one field per parameter, closed: an unknown
    parameter is refused as an unknown field is)."""

    def __init__(self, params: Iterable[tuple[str, Schema, bool]]):
        params = list(params)
        self._types = {name: schema.get("type") for name, schema, _ in params}
        self.defaults = {name: schema["default"] for name, schema, _ in params if "default" in schema}
        schema: Schema = {
            "type": "object",
            "properties": {name: schema for name, schema, _ in params},
            "additionalProperties": False,
        }
        required = [name for name, _, needed in params if needed]
        if required:
            schema["required"] = required
        self._required = bool(required)
        self._check = SchemaCheck(schema, unknown=UNKNOWN_PARAMETER, root="query")

    def parse(self, query: Mapping[str, str]) -> dict[str, Any]:
        if not query and not self._required:
            return dict(self.defaults)  # the common case: nothing to check
        values: dict[str, Any] = {}
        repeated: dict[str, str] = {}
        for name, raw in query.items():  # of a multidict: a repeated name once per value
            if name in values:
                if name in self._types:  # (an unknown one is refused as unknown)
                    repeated[name] = REPEATED_PARAMETER
                continue
            values[name] = _typed(self._types.get(name), raw)
        if repeated:
            # Which of two values was meant is the client's to say: none is picked silently.
            fields, truncated = self._check.problems(values) if not self._check.accepts(values) else ({}, False)
            raise ValidationFailed({**fields, **repeated}, truncated=truncated)
        self._check.check(values)
        return {**self.defaults, **values}


_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
# An integer as JSON writes one: ASCII digits only (str.isdigit() also takes "²", "٣", "５" and
# "𝟓", and int() then takes some and raises on others), at most 19 of them.
_INTEGER = re.compile(r"-?[0-9]{1,19}")


def _typed(kind: Any, raw: str) -> Any:
    """``raw`` as the declared type; left as text when it is not one, for the schema to say so."""
    if kind == "integer":
        text = raw.strip(" \t")
        if _INTEGER.fullmatch(text):
            return int(text)
    elif kind == "boolean":
        return _BOOLEANS.get(raw.lower(), raw)
    return raw
