"""Hostile and malformed requests: each gets a 4xx in the envelope and writes nothing."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import OKPKey

from tests.e2e.conftest import Api, assert_error, count_rows, on_every_store

pytestmark = on_every_store


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def _count_products(api: Api) -> int:
    return await count_rows(api, "products")


async def test_unknown_path_and_method(api: Api) -> None:
    status, body, _ = await api.call("GET", "/api/v1/nothing-here")
    assert_error(status, body, 404, "not_found")
    status, body, headers = await api.call("PUT", "/api/v1/products")
    assert_error(status, body, 405, "method_not_allowed")
    assert "GET" in headers["Allow"] and "POST" in headers["Allow"]


async def test_malformed_json_wrong_types_and_content_type(api: Api) -> None:
    staff = await api.token_for("s@example.com", "staff")
    headers = {"Content-Type": "application/json"}
    for raw in ['{"sku": ', "[1, 2", "nul", "{'single': 'quotes'}", " "]:
        status, body, _ = await api.call("POST", "/api/v1/products", data=raw, headers=headers, token=staff)
        assert_error(status, body, 400, "malformed_json")
    # No body at all is {} (tests/e2e/test_request_conventions.py): the fields it lacks are named.
    status, body, _ = await api.call("POST", "/api/v1/products", data="", headers=headers, token=staff)
    assert_error(status, body, 422, "validation_failed")
    status, body, _ = await api.call("POST", "/api/v1/products", data="[]", headers=headers, token=staff)
    assert_error(status, body, 422, "validation_failed")
    status, body, _ = await api.call(
        "POST",
        "/api/v1/products",
        data="sku=a&name=b&price=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        token=staff,
    )
    assert_error(status, body, 415, "unsupported_media_type")
    assert await _count_products(api) == 0


async def test_oversized_body_gets_413(api: Api) -> None:
    staff = await api.token_for("big@example.com", "staff")
    huge = json.dumps({"sku": "S", "name": "N", "price": 1, "description": "x" * (2 * 1024 * 1024)})
    status, body, _ = await api.call(
        "POST", "/api/v1/products", data=huge, headers={"Content-Type": "application/json"}, token=staff
    )
    assert_error(status, body, 413, "payload_too_large")
    assert await _count_products(api) == 0


@pytest.mark.parametrize(
    "query",
    ["limit=1000000", "limit=0", "limit=-5", "limit=abc", "limit=1.5", "price_min=-1", "active=maybe", "cursor="],
)
async def test_bad_query_parameters(api: Api, query: str) -> None:
    status, body, _ = await api.call("GET", f"/api/v1/products?{query}")
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"]["fields"]


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("limit=%C2%B2", {"limit": "must be an integer"}),  # "²": str.isdigit() took it, int() did not (500)
        ("price_min=%C2%B9", {"price_min": "must be an integer"}),  # "¹"
        ("price_max=%E2%91%A0", {"price_max": "must be an integer"}),  # "①"
        ("limit=%D9%A3", {"limit": "must be an integer"}),  # Arabic-Indic 3: int() took it
        ("limit=%EF%BC%95", {"limit": "must be an integer"}),  # fullwidth 5
        ("limit=%F0%9D%9F%93", {"limit": "must be an integer"}),  # mathematical bold 5
        ("limit=1&limit=abc", {"limit": "must be given once"}),  # the first used to win, silently
        ("limit=5&limit=5", {"limit": "must be given once"}),
        ("q=mug&limit=2&q=cup", {"q": "must be given once"}),
    ],
)
async def test_a_query_parameter_is_an_ascii_integer_given_once(api: Api, query: str, fields: dict[str, str]) -> None:
    for token in (None, await api.token_for("q@example.com", "staff")):
        status, body, _ = await api.call("GET", f"/api/v1/products?{query}", token=token)
        assert_error(status, body, 422, "validation_failed")
        assert body["error"]["details"] == {"fields": fields}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/products/{id}", None),
        ("PATCH", "/api/v1/products/{id}", {"price": 2}),
        ("POST", "/api/v1/products/{id}/stock", {"delta": 1}),
        ("GET", "/api/v1/orders/{id}", None),
        ("POST", "/api/v1/orders/{id}/cancel", None),
        ("GET", "/api/v1/users/{id}", None),
    ],
)
async def test_a_path_id_longer_than_ids_are_is_not_found_and_not_echoed(
    api: Api, method: str, path: str, body: Any
) -> None:
    """Ids are at most 64 characters (the document says so); a longer one names nothing, and
    the 404 does not quote it (the use case's would, whole)."""
    admin = await api.token_for("admin@example.com", "admin")
    long_id = "prd_" + "x" * 61  # 65 characters
    status, answer, _ = await api.call(method, path.format(id=long_id), token=admin, json=body)
    assert_error(status, answer, 404, "not_found")
    assert answer["error"]["message"] == "There is nothing at this address."
    assert "xxxxxxxx" not in str(answer)
    # At the limit it is an id like any other: this one names nothing either, in the use case's words.
    status, answer, _ = await api.call(method, path.format(id=long_id[:64]), token=admin, json=body)
    assert status == 404 and answer["error"]["code"] in ("product_not_found", "order_not_found", "user_not_found")
    assert await _count_products(api) == 0


async def test_long_query_strings_get_the_envelope(api: Api) -> None:
    status, body, _ = await api.call("GET", "/api/v1/products?q=" + "x" * 20000)
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"]["fields"] == {"q": "must have at most 200 characters"}


async def test_inverted_price_range_is_refused_naming_both_bounds(api: Api) -> None:
    staff = await api.token_for("pr@example.com", "staff")
    for token in (None, staff):
        status, body, _ = await api.call("GET", "/api/v1/products?price_min=10&price_max=5", token=token)
        assert_error(status, body, 422, "validation_failed")
        assert body["error"]["details"] == {
            "fields": {
                "price_min": "must not be greater than price_max",
                "price_max": "must not be less than price_min",
            }
        }
    status, body, _ = await api.call("GET", "/api/v1/products?price_min=5&price_max=5")
    assert status == 200 and body["data"] == []


@pytest.mark.parametrize("if_match", ["", "v1", '"1"', "W/v1", '"v1" junk'])
async def test_malformed_if_match_is_a_validation_error(api: Api, if_match: str) -> None:
    staff = await api.token_for("im@example.com", "staff")
    status, product, _ = await api.call(
        "POST", "/api/v1/products", json={"sku": "IM", "name": "N", "price": 1}, token=staff
    )
    status, body, _ = await api.call(
        "PATCH", f"/api/v1/products/{product['id']}", json={"price": 2}, token=staff, headers={"If-Match": if_match}
    )
    assert_error(status, body, 422, "validation_failed")
    assert list(body["error"]["details"]["fields"]) == ["If-Match"]


async def test_bad_tokens_are_refused(api: Api) -> None:
    good = await api.token_for("tok@example.com")
    header = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))
    payload = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))

    alg_none = f"{_b64({'alg': 'none', 'typ': 'at+jwt', 'kid': header['kid']})}.{_b64(payload)}."
    other_key = OKPKey.generate_key("Ed25519")
    forged = jwt.encode(header, payload, other_key, algorithms=["EdDSA"])
    expired_payload = {**payload, "exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}
    tampered = ".".join([good.split(".")[0], _b64({**payload, "role": "admin"}), good.split(".")[2]])

    for token in [alg_none, forged, tampered, "garbage", "a.b.c", good + "x"]:
        status, body, headers = await api.call("GET", "/api/v1/users/me", token=token)
        assert_error(status, body, 401, "invalid_token")
        assert headers["WWW-Authenticate"].startswith("Bearer")
    expired = jwt.encode(header, expired_payload, other_key, algorithms=["EdDSA"])
    status, body, _ = await api.call("GET", "/api/v1/users/me", token=expired)
    assert_error(status, body, 401, "invalid_token")
    status, body, _ = await api.call("GET", "/api/v1/users/me", headers={"Authorization": f"Basic {good}"})
    assert_error(status, body, 401, "invalid_token")
    status, body, _ = await api.call("GET", "/api/v1/users/me")
    assert_error(status, body, 401, "authentication_required")
    status, _, _ = await api.call("GET", "/api/v1/users/me", token=good)
    assert status == 200


async def test_request_id_is_echoed_or_made_and_security_headers_are_set(api: Api) -> None:
    status, _, headers = await api.call("GET", "/healthz", headers={"X-Request-ID": "abc-123"})
    assert status == 200 and headers["X-Request-ID"] == "abc-123"
    status, body, headers = await api.call("GET", "/nowhere", headers={"X-Request-ID": "bad id with spaces"})
    assert headers["X-Request-ID"] != "bad id with spaces"
    assert body["error"]["request_id"] == headers["X-Request-ID"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"


async def test_every_response_names_the_server_without_a_version(api: Api) -> None:
    """aiohttp's default ``Server: Python/3.11 aiohttp/3.x`` tells an attacker which CVEs to try."""
    _, _, listed = await api.call("GET", "/api/v1/products")
    answers = [
        await api.call("GET", "/healthz"),
        await api.call("HEAD", "/healthz"),
        await api.call("GET", "/nowhere"),
        await api.call("PUT", "/api/v1/products"),
        await api.call("GET", "/api/v1/products", headers={"If-None-Match": listed["ETag"]}),
        await api.call("GET", "/docs"),
    ]
    assert [status for status, _, _ in answers] == [200, 200, 404, 405, 304, 200]
    assert [headers["Server"] for _, _, headers in answers] == ["tillbox"] * len(answers)


async def test_unexpected_errors_say_nothing_internal(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = await api.container.catalog_service()

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail: /srv/internal/path")

    monkeypatch.setattr(catalog, "list_product_versions", broken)
    status, body, headers = await api.call("GET", "/api/v1/products")
    assert_error(status, body, 500, "internal_error")
    assert "secret" not in json.dumps(body) and "RuntimeError" not in json.dumps(body)
    assert body["error"]["request_id"] == headers["X-Request-ID"]


async def test_health_and_readiness(api: Api) -> None:
    status, body, _ = await api.call("GET", "/healthz")
    assert status == 200 and body == {"status": "ok"}
    status, body, _ = await api.call("GET", "/readyz")
    assert status == 200 and body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
