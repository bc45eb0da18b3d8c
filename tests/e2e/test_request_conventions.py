"""Conventions every operation keeps, checked over the whole OpenAPI document: unknown
query parameters are refused like unknown body fields, HEAD answers every GET, a POST
without a body is one with {}, and a header's documented form is the form the server checks."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import pytest

from tests.e2e.conftest import Api, assert_error, count_rows, create_product, on_every_store, place_order, stock_of

pytestmark = on_every_store

JSON = {"Content-Type": "application/json"}


async def _document(api: Api) -> dict[str, Any]:
    status, document, _ = await api.call("GET", "/api/v1/openapi.json")
    assert status == 200
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation that keeps these conventions: the OAuth 2 endpoints keep RFC 6749's
    instead (unknown parameters ignored, form bodies, its own errors; tests/e2e/test_oauth_*)."""
    return [
        (method.upper(), path, op)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if "x-tillbox-protocol" not in op
    ]


def _fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: ids.get(m.group(1), "x"), path)


async def test_an_unknown_query_parameter_is_refused_by_every_operation(api: Api) -> None:
    admin = await api.token_for("admin@example.com", "admin")
    operations = _operations(await _document(api))
    assert len(operations) >= 25
    for method, path, _op in operations:
        status, body, _headers = await api.call(
            method, _fill(path, {}) + "?limit=5&tillbox_unknown=1", token=admin, headers=JSON, data="{}"
        )
        assert_error(status, body, 422, "validation_failed")
        fields = body["error"]["details"]["fields"]
        assert fields["tillbox_unknown"] == "is not a parameter of this operation", (method, path)
        assert set(fields) <= {"tillbox_unknown", "limit"}, (method, path, fields)
    assert await count_rows(api, "products") == 0
    assert await count_rows(api, "orders") == 0


async def test_unknown_parameters_are_refused_beside_good_ones_and_listed_twenty_at_most(api: Api) -> None:
    status, body, _ = await api.call("GET", "/api/v1/products?limit=5&order_by=price&page=2")
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {
        "fields": {"order_by": "is not a parameter of this operation", "page": "is not a parameter of this operation"}
    }
    query = "&".join(f"p{i}=1" for i in range(500))
    status, body, _ = await api.call("GET", f"/api/v1/products?{query}")
    assert_error(status, body, 422, "validation_failed")
    assert len(body["error"]["details"]["fields"]) == 20
    assert body["error"]["details"]["truncated"] is True
    status, body, _ = await api.call("GET", "/api/v1/products?limit=5&q=mug&price_min=1&price_max=9&active=true")
    assert status == 200, body


async def test_head_answers_every_get_with_its_status_and_headers_and_no_body(api: Api) -> None:
    admin = await api.token_for("admin@example.com", "admin")
    product = await create_product(api, admin)
    order = await place_order(api, admin, [{"product_id": product["id"], "quantity": 1}])
    client = await api.call(
        "POST",
        "/api/v1/admin/oauth-clients",
        token=admin,
        json={
            "name": "Reports",
            "type": "public",
            "redirect_uris": ["https://reports.example.com/cb"],
            "grant_types": ["authorization_code"],
            "scopes": ["orders:read"],
        },
    )
    ids = {
        "product_id": product["id"],
        "order_id": order["id"],
        "user_id": order["customer_id"],
        "client_id": client[1]["id"],
    }
    gets = [path for method, path, _ in _operations(await _document(api)) if method == "GET"]
    assert len(gets) >= 14
    for path in gets:
        url = _fill(path, ids)
        async with api.session.get(api.base + url, headers={"Authorization": f"Bearer {admin}"}) as got:
            got_body = await got.read()
        async with api.session.head(api.base + url, headers={"Authorization": f"Bearer {admin}"}) as head:
            head_body = await head.read()
        assert got.status == 200, (url, got.status, got_body[:200])
        assert head.status == got.status, url
        assert head_body == b"", url
        for name in ("Content-Type", "Content-Length", "ETag", "Cache-Control", "Content-Security-Policy"):
            assert head.headers.get(name) == got.headers.get(name), (url, name)
        assert int(head.headers["Content-Length"]) == len(got_body), url


async def test_head_of_a_missing_thing_is_its_404_and_of_a_post_only_route_a_405(api: Api) -> None:
    async with api.session.head(api.base + "/api/v1/products/prd_missing") as response:
        assert response.status == 404
        assert await response.read() == b""
    async with api.session.head(api.base + "/api/v1/orders/x/cancel") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"


async def _pending_order(api: Api, customer: str, product_id: str) -> dict[str, Any]:
    return await place_order(api, customer, [{"product_id": product_id, "quantity": 1}])


async def test_an_action_post_takes_no_body_with_or_without_a_content_type(api: Api) -> None:
    staff = await api.token_for("staff@example.com", "staff")
    customer = await api.token_for("customer@example.com")
    product = await create_product(api, staff, stock=5)
    for headers in ({}, JSON, {"Content-Type": "text/plain"}):
        order = await _pending_order(api, customer, product["id"])
        assert await stock_of(api, product["id"]) == 4
        status, body, _ = await api.call(
            "POST", f"/api/v1/orders/{order['id']}/cancel", token=customer, headers=headers
        )
        assert status == 200, (headers, body)
        assert body["status"] == "cancelled"
        assert await stock_of(api, product["id"]) == 5
    order = await _pending_order(api, customer, product["id"])
    status, body, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/cancel", token=customer, data="{}", headers=JSON
    )
    assert status == 200 and body["status"] == "cancelled"

    # A paid order is fulfilled with no body, as with {}.
    order = await _pending_order(api, customer, product["id"])
    status, body, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/payments", token=staff, json={"method": "manual", "reference": "R-1"}
    )
    assert status == 201, body
    status, body, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/fulfil", token=staff)
    assert status == 200 and body["status"] == "fulfilled"


async def test_an_action_post_still_refuses_what_it_does_not_take(api: Api) -> None:
    staff = await api.token_for("staff@example.com", "staff")
    customer = await api.token_for("customer@example.com")
    product = await create_product(api, staff, stock=5)
    order = await _pending_order(api, customer, product["id"])
    cancel = f"/api/v1/orders/{order['id']}/cancel"
    status, body, _ = await api.call("POST", cancel, token=customer, json={"reason": "x", "refund": True})
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {"fields": {"refund": "is not a field of this request"}}
    status, body, _ = await api.call(
        "POST", cancel, token=customer, data="reason=x", headers={"Content-Type": "text/plain"}
    )
    assert_error(status, body, 415, "unsupported_media_type")
    status, body, _ = await api.call("POST", cancel, token=customer, data=" ", headers=JSON)
    assert_error(status, body, 400, "malformed_json")
    status, body, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/fulfil", token=staff, json={"now": True})
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {"fields": {"now": "is not a field of this request"}}
    # A POST that needs fields is not given them by an empty body: it is {}, and they are missing.
    for headers in ({}, JSON):
        status, body, _ = await api.call("POST", "/api/v1/orders", token=customer, data="", headers=headers)
        assert_error(status, body, 422, "validation_failed")
        assert body["error"]["details"] == {"fields": {"items": "is required"}}
    status, still, _ = await api.call("GET", f"/api/v1/orders/{order['id']}", token=customer)
    assert still["status"] == "pending_payment"
    assert await stock_of(api, product["id"]) == 4
    assert await count_rows(api, "orders") == 1


async def test_no_body_and_an_empty_object_are_the_same_request_for_a_key(api: Api) -> None:
    staff = await api.token_for("staff@example.com", "staff")
    customer = await api.token_for("customer@example.com")
    product = await create_product(api, staff, stock=5)
    order = await _pending_order(api, customer, product["id"])
    cancel = f"/api/v1/orders/{order['id']}/cancel"
    status, first, _ = await api.call("POST", cancel, token=customer, headers={"Idempotency-Key": "c-1"})
    assert status == 200
    status, again, headers = await api.call("POST", cancel, token=customer, json={}, headers={"Idempotency-Key": "c-1"})
    assert status == 200 and again == first
    assert headers["Idempotent-Replayed"] == "true"


# What each POST that declares a body says when it gets none: the fields {} lacks.
MISSING_WITHOUT_A_BODY = {
    "/api/v1/auth/register": {"email": "is required", "password": "is required"},
    "/api/v1/auth/login": {"email": "is required", "password": "is required"},
    "/api/v1/auth/refresh": {"refresh_token": "is required"},
    "/api/v1/auth/logout": {"refresh_token": "is required"},
    "/api/v1/users/me/password": {"current_password": "is required", "new_password": "is required"},
    "/api/v1/users/me/api-keys": {"name": "is required", "scopes": "is required", "expires_in_days": "is required"},
    "/api/v1/products": {"sku": "is required", "name": "is required", "price": "is required"},
    "/api/v1/products/{product_id}/stock": {"delta": "is required"},
    "/api/v1/orders": {"items": "is required"},
    "/api/v1/orders/{order_id}/payments": {"method": "is required", "payment_method": "is required"},
    "/api/v1/orders/{order_id}/refunds": {"reason": "is required"},
    "/api/v1/admin/oauth-clients": {
        "name": "is required",
        "type": "is required",
        "redirect_uris": "is required",
        "grant_types": "is required",
        "scopes": "is required",
    },
}


async def test_a_post_without_a_body_is_read_as_an_empty_object_by_every_operation(api: Api) -> None:
    """No body at all, whatever the Content-Type, is {}: an action that needs nothing is done
    (tested above), and every other POST answers 422 naming what {} lacks, not 415 or 400
    malformed_json. Nothing is written, and no idempotency key is kept."""
    admin = await api.token_for("admin@example.com", "admin")
    staff = await api.token_for("staff@example.com", "staff")
    customer = await api.token_for("customer@example.com")
    product = await create_product(api, staff, stock=5)
    order = await _pending_order(api, customer, product["id"])
    ids = {"product_id": product["id"], "order_id": order["id"]}
    document = await _document(api)
    needing = [
        path
        for method, path, op in _operations(document)
        if method == "POST" and "requestBody" in op and op["requestBody"]["required"]
    ]
    assert sorted(needing) == sorted(MISSING_WITHOUT_A_BODY)
    for path in needing:
        for headers in ({}, JSON, {"Content-Type": "text/plain"}):
            status, body, _ = await api.call(
                "POST", _fill(path, ids), token=admin, headers={**headers, "Idempotency-Key": "empty-1"}
            )
            assert_error(status, body, 422, "validation_failed")
            assert body["error"]["details"] == {"fields": MISSING_WITHOUT_A_BODY[path]}, (path, headers)
    assert await stock_of(api, product["id"]) == 4
    assert await count_rows(api, "orders") == 1
    assert await count_rows(api, "payments") == 0
    assert await count_rows(api, "oauth_clients") == 0
    assert await count_rows(api, "idempotency_keys") == 0


async def test_the_document_says_which_bodies_may_be_left_out(api: Api) -> None:
    document = await _document(api)
    optional = sorted(
        f"{method} {path}"
        for method, path, op in _operations(document)
        if "requestBody" in op and not op["requestBody"]["required"]
    )
    assert optional == ["POST /api/v1/orders/{order_id}/cancel", "POST /api/v1/orders/{order_id}/fulfil"]


IF_MATCH_VALUES = [
    '"v1"',
    'W/"v1"',
    "*",
    '"v2"',
    "v1",
    '"1"',
    "W/v1",
    '"v1" junk',
    '"v1", "v2"',
    '"v' + "1" * 19 + '"',
    "x" * 30,
]


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
async def test_if_match_has_the_form_the_document_states(api: Api, method: str) -> None:
    document = await _document(api)
    staff = await api.token_for("staff@example.com", "staff")
    operation = document["paths"]["/api/v1/products/{product_id}"][method.lower()]
    (declared,) = [p for p in operation["parameters"] if p["name"] == "If-Match"]
    assert declared["in"] == "header"
    assert declared["schema"]["pattern"] == '^(\\*|(W/)?"v[0-9]{1,18}")$'
    assert "422" in operation["responses"]
    published = jsonschema_rs.validator_for(declared["schema"])
    for value in IF_MATCH_VALUES:
        product = await create_product(api, staff, sku=f"IM-{len(value)}-{IF_MATCH_VALUES.index(value)}")
        status, body, _ = await api.call(
            method,
            f"/api/v1/products/{product['id']}",
            token=staff,
            headers={"If-Match": value},
            json={"price": 2} if method == "PATCH" else None,
        )
        if published.is_valid(value):
            assert status in (200, 204, 412), (value, status, body)
        else:
            assert_error(status, body, 422, "validation_failed")
            assert list(body["error"]["details"]["fields"]) == ["If-Match"], value
            status, still, _ = await api.call("GET", f"/api/v1/products/{product['id']}")
            assert (status, still["price"]) == (200, 1250)  # nothing changed
