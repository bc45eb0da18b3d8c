"""/docs and the examples of the OpenAPI document: every example valid against its schema,
every operation shown with its examples and authentication, search answered by the server,
descriptions rendered as markdown with no way to inject markup. In a real browser:
tests/e2e/test_docs_browser.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator

from entrypoints.http.docs import MAX_QUERY_LENGTH, ApiReference
from entrypoints.http.envelope import DOCS_CSP
from entrypoints.http.openapi import build_openapi
from entrypoints.http.routes import all_operations
from tests.e2e.conftest import Api, assert_error

_ARTICLE = re.compile(r'<article class=op id="op-(\w+)">(.*?)</article>', re.S)


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


async def test_docs_shows_every_operation_with_examples_and_its_authentication(api: Api) -> None:
    document = await _document(api)
    async with api.session.get(api.base + "/docs") as response:
        assert response.status == 200
        assert response.headers["Content-Security-Policy"] == DOCS_CSP
        page = await response.text()
    articles = dict(_ARTICLE.findall(page))
    declared = {op.operation_id: op for op in all_operations() if op.public}
    assert set(articles) == set(declared)
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            article = articles[op["operationId"]]
            assert op["x-tillbox-auth"] == declared[op["operationId"]].auth
            assert f'class="badge a-{op["x-tillbox-auth"]}"' in article
            assert f"<code>{path}</code>" in article and f">{method.upper()}</span>" in article
            assert "<h4>Request example" in article and "<h4>Response example</h4>" in article
    create = articles["create_product"]
    assert "staff: staff and admins" in create
    assert "Authorization: Bearer &lt;access_token&gt;" in create  # the example says to send a token
    assert "&quot;sku&quot;: &quot;MUG-BLUE-350&quot;" in create  # the request example
    # field tables, not raw JSON Schema: the constraints, said in words
    assert "<code>sku</code>" in create and "matches <code>^[A-Za-z0-9]" in create
    assert "additionalProperties" not in page
    # markdown rendered: a description's `code` is code, and no backtick is left over
    assert "Send it back in <code>If-Match</code>" in page
    assert "`" not in re.sub(r"<pre>.*?</pre>", "", page, flags=re.S)
    # conventions and the error envelope, once, at the top
    for heading in ("Money", "Lists and cursors", "Idempotency keys", "ETags and If-Match", "Errors"):
        assert page.count(f">{heading}</h3>") == 1, heading
    assert page.index("The error envelope") < page.index('id="op-')
    # errors link to the envelope, explained once, instead of repeating it in every operation
    assert not any("&quot;validation_failed&quot;" in article for article in articles.values())
    assert '<a href="docs#error-envelope">Error</a>' in create


def _shown(page: str) -> list[str]:
    return [name for name, _ in _ARTICLE.findall(page)]


async def test_docs_search_shows_the_operations_that_match(api: Api) -> None:
    async with api.session.get(api.base + "/docs", params={"q": "Refund"}) as response:
        assert response.status == 200
        assert response.headers["Content-Security-Policy"] == DOCS_CSP
        page = await response.text()
    shown = _shown(page)
    assert {"refund_order", "list_refunds"} <= set(shown)
    assert "login" not in shown and "create_product" not in shown
    for name, article in _ARTICLE.findall(page):
        assert "refund" in article.lower(), name
    assert f"{len(shown)} operations match <q>Refund</q>" in page
    assert re.findall(r'<li><a href="#op-(\w+)">', page) == shown  # the sidebar lists what is shown
    # a word finds the words it starts, and several words find what has every one
    assert "stripe_webhook" in shown  # it handles `charge.refunded`
    for query in ("REFUND", "  refund\t"):
        async with api.session.get(api.base + "/docs", params={"q": query}) as response:
            assert _shown(await response.text()) == shown, query
    async with api.session.get(api.base + "/docs", params={"q": "cancel"}) as response:
        cancel = _shown(await response.text())
    async with api.session.get(api.base + "/docs", params={"q": "refund cancel"}) as response:
        both = _shown(await response.text())
    assert both == [name for name in shown if name in cancel]
    assert "cancel_order" in both and len(both) < len(shown)


async def test_docs_search_that_matches_nothing_says_so(api: Api) -> None:
    for query, shown in (("xyzzy", "xyzzy"), ("refund xyzzy", "refund xyzzy"), ("/ - !", "/ - !")):
        async with api.session.get(api.base + "/docs", params={"q": query}) as response:
            assert response.status == 200
            page = await response.text()
        assert _shown(page) == [], query
        assert f"No operation matches <q>{shown}</q>" in page


async def test_docs_search_words_are_text_never_markup(api: Api) -> None:
    query = '"><script>alert(1)</script><img src=x>'
    async with api.session.get(api.base + "/docs", params={"q": query}) as response:
        assert response.status == 200
        page = await response.text()
    assert "<script" not in page and "<img" not in page
    assert 'value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x&gt;"' in page


async def test_docs_search_is_bounded_by_its_declared_length(api: Api) -> None:
    async with api.session.get(api.base + "/docs") as response:
        whole = await response.text()
    status, body, _ = await api.call("GET", "/docs?q=" + "a" * (MAX_QUERY_LENGTH + 1))
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"]["fields"] == {"q": f"must have at most {MAX_QUERY_LENGTH} characters"}
    document = await _document(api)
    (param,) = document["paths"]["/docs"]["get"]["parameters"]
    assert param["name"] == "q" and param["schema"]["maxLength"] == MAX_QUERY_LENGTH
    # the longest search allowed is answered; an empty one is the whole page
    async with api.session.get(api.base + "/docs", params={"q": "a " * (MAX_QUERY_LENGTH // 2)}) as response:
        assert response.status == 200
    for blank in ("", "   "):
        async with api.session.get(api.base + "/docs", params={"q": blank}) as response:
            assert await response.text() == whole


def _document_with(description: str) -> dict[str, Any]:
    document = build_openapi(all_operations(), version="test", currency="USD")
    document["paths"]["/healthz"]["get"]["description"] = description
    document["info"]["description"] = description
    document["tags"][0]["description"] = description
    return json.loads(json.dumps(document))


def test_descriptions_are_markdown_with_no_raw_html_and_no_loads() -> None:
    page = ApiReference(
        _document_with(
            "**Bold** and `code`.\n\n"
            "<script>alert(1)</script> <b onclick=x>raw</b>\n\n"
            "![a pixel](http://tracker.example/p.gif) [click](javascript:alert(1)) [here](docs#money)"
        )
    ).page
    assert "<strong>Bold</strong> and <code>code</code>." in page
    assert "<script" not in page and "<b onclick" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page and 'src="http' not in page  # images are text, never loaded
    assert "javascript:" not in page.replace("[click](javascript:alert(1))", "")  # not a link
    assert '<a href="docs#money">here</a>' in page
