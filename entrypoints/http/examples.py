"""Examples of requests and responses, made from the schemas that validate them.

The OpenAPI document carries them (``example`` / ``examples`` of each media type) and
/docs shows them, so an example is never written beside a schema where it could drift:
it is read from the schema's own ``examples`` annotations where a value made up from the
type alone would be nonsense (ids, emails, skus, times, amounts), and made up otherwise.
tests/e2e/test_docs.py validates every one against its schema.

Not hypothesis-jsonschema (in the dev stack through schemathesis): that draws random
values to find bugs, where a reader needs the same plausible one every time.
"""

from __future__ import annotations

import copy
from typing import Any

from entrypoints.http.schemas import Schema

_REF = "#/components/schemas/"
_DEPTH = 12  # far deeper than any schema here; only a schema that refers to itself goes on


class Examples:
    """Example values for schemas that refer to ``components`` (the document's schemas)."""

    def __init__(self, components: dict[str, Schema]):
        self._components = components

    def resolve(self, schema: Schema) -> Schema:
        """The schema a ``$ref`` names (or ``schema`` itself)."""
        while "$ref" in schema:
            name = schema["$ref"].removeprefix(_REF)
            schema = self._components[name]
        return schema

    def forms(self, schema: Schema) -> dict[str, Any]:
        """Named examples of a request body: one per alternative of a top-level ``oneOf``
        (a card payment and a manual one), else one, named ``default``. Every field is filled
        in, optional ones too: a request example shows what may be sent."""
        schema = self.resolve(schema)
        if "oneOf" in schema and "examples" not in schema:
            return {_name(branch, n): self.value(branch, optional=True) for n, branch in enumerate(schema["oneOf"], 1)}
        return {"default": self.value(schema, optional=True)}

    def value(self, schema: Schema, *, optional: bool = False, _depth: int = 0) -> Any:
        """One example value. Objects get their required fields, and their optional ones
        too if ``optional`` (request bodies); a response example shows what always comes."""
        if _depth > _DEPTH:
            raise ValueError("schema too deep for an example (does it refer to itself?)")
        schema = self.resolve(schema)
        if schema.get("examples"):
            return copy.deepcopy(schema["examples"][0])
        for key in ("const", "default"):
            if key in schema:
                return copy.deepcopy(schema[key])
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("oneOf", "anyOf"):
            if schema.get(key):
                return self.value(schema[key][0], optional=optional, _depth=_depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            # An optional value (`["string", "null"]`) is shown as absent unless the schema
            # gives an example: a failure code on a payment that did not fail is null.
            if "null" in kind:
                return None
            kind = kind[0]
        if kind == "object" or "properties" in schema:
            required = schema.get("required", ())
            return {
                name: self.value(sub, optional=optional, _depth=_depth + 1)
                for name, sub in schema.get("properties", {}).items()
                if optional or name in required
            }
        if kind == "array":
            item = self.value(schema.get("items", {}), optional=optional, _depth=_depth + 1)
            return [copy.deepcopy(item) for _ in range(max(1, schema.get("minItems", 1)))]
        if kind == "string":
            return _string(schema)
        if kind in ("integer", "number"):
            return _number(schema)
        if kind == "boolean":
            return True
        return None


def _name(branch: Schema, n: int) -> str:
    return str(branch.get("title") or f"form {n}")


_FORMATS = {
    "date-time": "2026-05-04T09:30:00.000000Z",
    "email": "kate@example.com",
    "uri": "https://shop.example.com/",
}


def _string(schema: Schema) -> str:
    if schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    # A pattern is not turned into a string that matches it: a schema with a pattern gives
    # an example (the tests refuse an example that does not match).
    text = "text"
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if len(text) < low:
        text += "x" * (low - len(text))
    if high is not None:
        text = text[:high]
    return text


def _number(schema: Schema) -> int:
    value = 1
    if "minimum" in schema:
        value = max(value, schema["minimum"])
    if "exclusiveMinimum" in schema:
        value = max(value, schema["exclusiveMinimum"] + 1)
    if "maximum" in schema:
        value = min(value, schema["maximum"])
    if "exclusiveMaximum" in schema:
        value = min(value, schema["exclusiveMaximum"] - 1)
    return int(value)
