"""Anonymous catalog reads are cacheable for a few seconds and revalidate with their ETag
(304); anything read with a token stays no-store; a tag changes exactly when content does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Api, Store, assert_error, create_product, on_every_store, serve

pytestmark = on_every_store

PUBLIC = "public, max-age=10"


@pytest.fixture
async def shop(api: Api) -> dict[str, Any]:
    staff = await api.token_for("staff@example.com", "staff")
    mug = await create_product(api, staff, sku="MUG-1", price=1250)
    hidden = await create_product(api, staff, sku="HIDDEN-1", active=False)
    return {"staff": staff, "mug": mug, "hidden": hidden}


async def _get(api: Api, path: str, **headers: str) -> tuple[int, bytes, Any]:
    async with api.session.get(api.base + path, headers=headers) as response:
        return response.status, await response.read(), response.headers


@pytest.mark.parametrize("path", ["/api/v1/products", "/api/v1/products?limit=5&q=mug", "/api/v1/products/{mug}"])
async def test_an_anonymous_read_is_public_for_a_while_and_revalidates(
    api: Api, shop: dict[str, Any], path: str
) -> None:
    path = path.format(mug=shop["mug"]["id"])
    status, body, headers = await _get(api, path)
    assert status == 200 and body
    assert headers["Cache-Control"] == PUBLIC
    assert headers["Vary"] == "Authorization"
    tag = headers["ETag"]
    assert tag.startswith('"') and tag.endswith('"')
    for sent in (tag, f"W/{tag}", f'"elsewhere", {tag}', "*"):
        status, again, headers = await _get(api, path, **{"If-None-Match": sent})
        assert (status, again) == (304, b""), sent
        assert headers["ETag"] == tag
        assert headers["Cache-Control"] == PUBLIC
        assert "Content-Type" not in headers
    for sent in ('"elsewhere"', tag[:-2] + '"', "garbage"):
        status, again, headers = await _get(api, path, **{"If-None-Match": sent})
        assert (status, again) == (200, body), sent
    async with api.session.head(api.base + path, headers={"If-None-Match": tag}) as response:
        assert response.status == 304


async def test_a_list_tag_changes_when_its_content_does_and_only_then(api: Api, shop: dict[str, Any]) -> None:
    _, before, headers = await _get(api, "/api/v1/products")
    tag = headers["ETag"]
    # A commit elsewhere (a new account): the page is rebuilt, the same bytes, the same tag.
    await api.create_user("someone@example.com")
    status, _, headers = await _get(api, "/api/v1/products", **{"If-None-Match": tag})
    assert status == 304 and headers["ETag"] == tag
    # A price change: new content, new tag, and the old one no longer matches.
    status, _, _ = await api.call(
        "PATCH", f"/api/v1/products/{shop['mug']['id']}", json={"price": 1300}, token=shop["staff"]
    )
    assert status == 200
    status, after, headers = await _get(api, "/api/v1/products", **{"If-None-Match": tag})
    assert status == 200 and after != before
    assert headers["ETag"] != tag
    assert b'"price":1300' in after
    # A product becoming visible changes the anonymous page too.
    newer = headers["ETag"]
    await api.call("PATCH", f"/api/v1/products/{shop['hidden']['id']}", json={"active": True}, token=shop["staff"])
    status, _, headers = await _get(api, "/api/v1/products", **{"If-None-Match": newer})
    assert status == 200 and headers["ETag"] != newer


async def test_a_product_tag_is_its_version(api: Api, shop: dict[str, Any]) -> None:
    path = f"/api/v1/products/{shop['mug']['id']}"
    _, _, headers = await _get(api, path)
    assert headers["ETag"] == '"v1"'
    await api.call("PATCH", path, json={"name": "Big mug"}, token=shop["staff"])
    status, body, headers = await _get(api, path, **{"If-None-Match": '"v1"'})
    assert status == 200 and b"Big mug" in body
    assert headers["ETag"] == '"v2"'


async def test_reads_with_a_token_stay_private(api: Api, shop: dict[str, Any]) -> None:
    customer = await api.token_for("customer@example.com")
    for token in (customer, shop["staff"]):
        for path in ("/api/v1/products", f"/api/v1/products/{shop['mug']['id']}"):
            status, _, headers = await _get(api, path, Authorization=f"Bearer {token}")
            assert status == 200
            assert headers["Cache-Control"] == "no-store"
            assert headers["ETag"]
    # Revalidating with the public copy's tag, a token still gets nothing a cache may keep:
    # a 304 where what it sees is the same (a customer; one product for staff), else a 200.
    _, _, listed = await _get(api, "/api/v1/products")
    _, _, one = await _get(api, f"/api/v1/products/{shop['mug']['id']}")
    for token, path, tag, expected in (
        (customer, "/api/v1/products", listed["ETag"], 304),
        (customer, f"/api/v1/products/{shop['mug']['id']}", one["ETag"], 304),
        (shop["staff"], "/api/v1/products", listed["ETag"], 200),
        (shop["staff"], f"/api/v1/products/{shop['mug']['id']}", one["ETag"], 304),
    ):
        status, _, headers = await _get(api, path, Authorization=f"Bearer {token}", **{"If-None-Match": tag})
        assert (status, headers["Cache-Control"]) == (expected, "no-store"), path
    # Staff see the inactive product: a page of their own, with a tag of its own.
    _, public, anonymous = await _get(api, "/api/v1/products")
    _, private, staff = await _get(api, "/api/v1/products", Authorization=f"Bearer {shop['staff']}")
    assert b"HIDDEN-1" in private and b"HIDDEN-1" not in public
    assert staff["ETag"] != anonymous["ETag"]


async def test_errors_and_other_reads_are_never_cached(api: Api, shop: dict[str, Any]) -> None:
    status, body, headers = await _get(api, f"/api/v1/products/{shop['hidden']['id']}")
    assert status == 404 and headers["Cache-Control"] == "no-store"
    status, body, headers = await _get(api, "/api/v1/products?limit=0")
    assert status == 422 and headers["Cache-Control"] == "no-store"
    status, body, headers = await _get(api, "/healthz")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    status, answer, _ = await api.call("GET", "/api/v1/products", headers={"If-None-Match": '"' + "x" * 3000 + '"'})
    assert_error(status, answer, 422, "validation_failed")
    assert answer["error"]["details"] == {"fields": {"If-None-Match": "must have at most 2048 characters"}}


@pytest.mark.parametrize(("setting", "expected"), [("0", "public, no-cache"), ("60", "public, max-age=60")])
async def test_the_public_max_age_is_a_setting(tmp_path: Path, setting: str, expected: str, store: Store) -> None:
    async with serve(tmp_path / "data", TILLBOX_SERVER_PUBLIC_MAX_AGE=setting, store=store) as api:
        status, _, headers = await _get(api, "/api/v1/products")
        assert status == 200 and headers["Cache-Control"] == expected
        status, _, _ = await _get(api, "/api/v1/products", **{"If-None-Match": headers["ETag"]})
        assert status == 304


async def test_the_document_states_the_caching(api: Api) -> None:
    _, document, _ = await api.call("GET", "/api/v1/openapi.json")
    for path in ("/api/v1/products", "/api/v1/products/{product_id}"):
        operation = document["paths"][path]["get"]
        assert "If-None-Match" in {p["name"] for p in operation["parameters"]}
        assert set(operation["responses"]["304"]["headers"]) == {"ETag", "Cache-Control", "Vary"}
        assert set(operation["responses"]["200"]["headers"]) == {"ETag", "Cache-Control", "Vary"}
