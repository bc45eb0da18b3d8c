"""The examples of the OpenAPI document: made from the schemas, and valid against them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator

from entrypoints.http.openapi import build_openapi
from entrypoints.http.routes import all_operations
from tests.e2e.conftest import Api


def _examples(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example) for every example the document carries: beside request
    bodies and responses, and the ``examples`` annotation of every schema in it."""
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            for media in op.get("requestBody", {}).get("content", {}).values():
                if "example" in media:
                    yield f"{where} request", media["schema"], media["example"]
                for name, item in media.get("examples", {}).items():
                    yield f"{where} request ({name})", media["schema"], item["value"]
            for status, reply in op["responses"].items():
                for media in reply.get("content", {}).values():
                    if "example" in media:
                        yield f"{where} {status}", media["schema"], media["example"]

    def annotated(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
        if isinstance(node, dict):
            if isinstance(node.get("examples"), list) and "type" in node:
                for example in node["examples"]:
                    yield where, node, example
            for key, value in node.items():
                yield from annotated(value, f"{where}/{key}")
        elif isinstance(node, list):
            for n, value in enumerate(node):
                yield from annotated(value, f"{where}/{n}")

    yield from annotated(document, "#")


def invalid_examples(document: dict[str, Any]) -> list[str]:
    """Every example that its schema refuses, by both validators the server knows (formats
    checked too: a timestamp must be one)."""
    problems = []
    for where, schema, example in _examples(document):
        root = {**schema, "components": document["components"]}  # where "#/components/..." resolves
        fast = jsonschema_rs.validator_for(root, validate_formats=True)
        slow = Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)
        for error in fast.iter_errors(example):
            problems.append(f"{where}: {error.message}")
        for slow_error in slow.iter_errors(example):
            problems.append(f"{where}: {slow_error.message}")
    return problems


async def _document(api: Api) -> dict[str, Any]:
    status, document, _ = await api.call("GET", "/api/v1/openapi.json")
    assert status == 200
    return document


async def test_every_example_of_the_document_is_valid_against_its_schema(api: Api) -> None:
    document = await _document(api)
    assert invalid_examples(document) == []
    # ... and there are examples to check: a request example for every body, a response
    # example for every successful response that has a body.
    count = 0
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for media in op.get("requestBody", {}).get("content", {}).values():
                assert "example" in media or len(media["examples"]) > 1, (method, path)
                count += 1
            successes = [reply for status, reply in op["responses"].items() if status.startswith("2")]
            assert successes, (method, path)
            for reply in successes:
                for media in reply.get("content", {}).values():
                    assert "example" in media, (method, path)
                    count += 1
    assert count > 40
    pay = document["paths"]["/api/v1/orders/{order_id}/payments"]["post"]["requestBody"]["content"]
    assert {name: item["value"]["method"] for name, item in pay["application/json"]["examples"].items()} == {
        "card": "card",
        "manual-staff": "manual",
    }


async def test_an_example_its_schema_refuses_is_found() -> None:
    document = build_openapi(all_operations(), version="test", currency="EUR")
    assert invalid_examples(document) == []
    product = document["components"]["schemas"]["Product"]
    product["properties"]["sku"]["examples"] = [42]  # a sku that is a number
    order = document["paths"]["/api/v1/orders"]["post"]["requestBody"]["content"]["application/json"]
    order["example"] = {"items": []}  # an order needs a line
    created = document["paths"]["/api/v1/products"]["post"]["responses"]["201"]["content"]["application/json"]
    created["example"]["created_at"] = "yesterday"  # not a date-time
    found = "\n".join(invalid_examples(document))
    assert "#/components/schemas/Product/properties/sku" in found
    assert "POST /api/v1/orders request" in found
    assert "POST /api/v1/products 201" in found and "yesterday" in found


async def test_examples_are_made_from_the_declarations(api: Api) -> None:
    document = await _document(api)
    schemas = document["components"]["schemas"]
    product = document["paths"]["/api/v1/products/{product_id}"]["get"]["responses"]["200"]["content"]
    example = product["application/json"]["example"]
    # every field a product always has, with the store's currency and the schema's own examples
    assert set(example) == set(schemas["Product"]["required"])
    assert example["currency"] == "USD"
    assert example["sku"] == schemas["Product"]["properties"]["sku"]["examples"][0] == "MUG-BLUE-350"
    assert example["id"].startswith("prd_")
    register = document["paths"]["/api/v1/auth/register"]["post"]["requestBody"]["content"]["application/json"]
    assert register["example"] == {"email": "kate@example.com", "password": "plum harbour velvet kettle"}
    # and what the example shows is what the server accepts: it is not a made-up shape
    status, body, _ = await api.call("POST", "/api/v1/auth/register", json=register["example"])
    assert status == 201, body
    assert body["email"] == "kate@example.com"
