"""Every request the OpenAPI document describes is bounded in its schema: what the
validator sees first refuses a body too big to be worth reading, before anything walks it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from entrypoints.http.openapi import build_openapi
from entrypoints.http.routes import all_operations

DOCUMENT = build_openapi(all_operations(), version="test", currency="USD")


def _inputs() -> Iterator[tuple[str, dict[str, Any]]]:
    for path, operations in DOCUMENT["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            if "requestBody" in op:
                yield f"{where} body", op["requestBody"]["content"]["application/json"]["schema"]
            for param in op.get("parameters", ()):
                yield f"{where} {param['in']} {param['name']}", param["schema"]


INPUTS = list(_inputs())


def _subschemas(schema: dict[str, Any], at: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each schema an instance value is checked against, with where it is."""
    yield at, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _subschemas(sub, f"{at}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _subschemas(schema["items"], f"{at}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _subschemas(schema["additionalProperties"], f"{at}.*")
    for keyword in ("oneOf", "anyOf", "allOf"):
        for index, sub in enumerate(schema.get(keyword, ())):
            yield from _subschemas(sub, f"{at}<{keyword} {index}>")


def _problems(schema: dict[str, Any]) -> list[str]:
    problems = []
    for at, sub in _subschemas(schema, "$"):
        assert "$ref" not in sub, f"{at}: request schemas are self-contained"
        kinds = sub.get("type")
        kinds = set(kinds) if isinstance(kinds, list) else {kinds} - {None}
        by_value = "enum" in sub or "const" in sub
        if not kinds and not by_value and not any(k in sub for k in ("oneOf", "anyOf", "allOf")):
            problems.append(f"{at}: no type")
        if "array" in kinds and "maxItems" not in sub:
            problems.append(f"{at}: an array without maxItems")
        if "string" in kinds and not by_value and "maxLength" not in sub:
            problems.append(f"{at}: a string without maxLength")
        if "object" in kinds and sub.get("additionalProperties") is not False and "maxProperties" not in sub:
            problems.append(f"{at}: an object neither closed nor bounded by maxProperties")
        if kinds & {"integer", "number"} and not ("minimum" in sub and "maximum" in sub):
            problems.append(f"{at}: a number without minimum and maximum")
        for value in [*sub.get("enum", ()), *([sub["const"]] if "const" in sub else [])]:
            if isinstance(value, dict | list):
                problems.append(f"{at}: a container as an allowed value")
    return problems


def test_the_document_has_the_inputs_of_every_operation() -> None:
    names = {name for name, _ in INPUTS}
    assert "POST /api/v1/orders body" in names
    assert "POST /api/v1/orders/{order_id}/payments body" in names
    assert "GET /api/v1/products query price_min" in names
    assert "PATCH /api/v1/products/{product_id} header If-Match" in names
    assert len([name for name in names if name.endswith(" body")]) >= 14


@pytest.mark.parametrize(("name", "schema"), INPUTS, ids=[name for name, _ in INPUTS])
def test_every_array_string_object_and_number_of_a_request_is_bounded(name: str, schema: dict[str, Any]) -> None:
    assert _problems(schema) == []


def test_the_walk_finds_what_is_unbounded() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}},
            "meta": {"type": "object"},
            "n": {"type": "integer", "minimum": 0},
            "any": {},
        },
        "additionalProperties": False,
    }
    assert _problems(schema) == [
        "$.tags: an array without maxItems",
        "$.tags[]: a string without maxLength",
        "$.meta: an object neither closed nor bounded by maxProperties",
        "$.n: a number without minimum and maximum",
        "$.any: no type",
    ]


def test_an_order_has_at_most_as_many_lines_in_its_schema_as_in_its_rules() -> None:
    from core.domain.orders import MAX_LINES

    schema = DOCUMENT["paths"]["/api/v1/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["items"]["maxItems"] == MAX_LINES == 100
