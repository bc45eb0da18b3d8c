"""Lists over real HTTP: cursors are opaque, passed back as received, and a cursor that is
not the list's own (garbage, edited, another list's, another sort's or filter's) is a 400
`invalid_cursor` in the envelope, never a silent first page. The catalog sorts by price,
name and creation time, either way, with stable cursors."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import attrs
import pytest

from tests.e2e.conftest import Api, assert_error, create_product, on_every_store, place_order

pytestmark = on_every_store

LISTS = ("/api/v1/products", "/api/v1/users", "/api/v1/orders", "/api/v1/admin/audit")


@attrs.frozen
class Store:
    admin: str
    alice: str
    products: dict[str, dict[str, Any]]  # by sku


@pytest.fixture
async def shop(api: Api) -> Store:
    admin = await api.token_for("admin@example.com", "admin")
    alice = await api.token_for("alice@example.com")
    await api.token_for("bob@example.com")
    products = {}
    # Ties in every key: A and C share a price; B and C a name but for its case.
    for sku, name, price in [("A", "banana", 500), ("B", "Apple", 1500), ("C", "apple", 500), ("D", "Cherry", 2500)]:
        products[sku] = await create_product(api, admin, sku=sku, name=name, price=price, stock=50)
    for sku in "ABC":
        await place_order(api, alice, [{"sku": sku, "quantity": 1}])
    return Store(admin, alice, products)


async def _pages(api: Api, path: str, token: str, **query: Any) -> tuple[list[list[str]], list[str]]:
    """The items of every page (skus for products, ids otherwise) and the cursors followed."""
    pages: list[list[str]] = []
    cursors: list[str] = []
    cursor = None
    while True:
        params = {**query, **({"cursor": cursor} if cursor else {})}
        status, body, _ = await api.call("GET", f"{path}?{urlencode(params)}", token=token)
        assert status == 200, body
        pages.append([item.get("sku", item["id"]) for item in body["data"]])
        if not body["meta"]["has_more"]:
            assert body["meta"]["next_cursor"] is None
            return pages, cursors
        cursor = body["meta"]["next_cursor"]
        cursors.append(cursor)


@pytest.mark.parametrize("path", LISTS)
async def test_every_list_refuses_a_cursor_that_is_not_its_own(api: Api, shop: Store, path: str) -> None:
    pages, cursors = await _pages(api, path, shop.admin, limit=1)
    assert len(pages) >= 3 and cursors
    others = [(await _pages(api, other, shop.admin, limit=1))[1][0] for other in LISTS if other != path]
    own = cursors[0]
    product_id = shop.products["A"]["id"]
    for bad in ["garbage", product_id, own[:-1], own + "A", own[::-1], own.upper(), "W10", "%7B%7D", *others]:
        status, body, _ = await api.call("GET", f"{path}?limit=1&cursor={quote(bad)}", token=shop.admin)
        assert_error(status, body, 400, "invalid_cursor")
        assert "cursor" in body["error"]["message"]
    # Its own cursor, as received, still gives the second page.
    status, body, _ = await api.call("GET", f"{path}?limit=1&cursor={own}", token=shop.admin)
    assert status == 200 and [item.get("sku", item["id"]) for item in body["data"]] == pages[1]


async def test_a_cursor_is_bound_to_its_filters(api: Api, shop: Store) -> None:
    _, (cursor, *_) = await _pages(api, "/api/v1/products", shop.admin, limit=1, price_min=500)
    for query in (
        "",
        "&price_min=501",
        "&price_min=500&price_max=9999",
        "&price_min=500&q=apple",
        "&price_min=500&active=true",
        "&price_min=500&sort=price",
    ):
        status, body, _ = await api.call("GET", f"/api/v1/products?limit=1{query}&cursor={cursor}")
        assert_error(status, body, 400, "invalid_cursor")
    _, (cursor, *_) = await _pages(api, "/api/v1/orders", shop.admin, limit=1, status="pending_payment")
    status, body, _ = await api.call("GET", f"/api/v1/orders?limit=1&cursor={cursor}", token=shop.admin)
    assert_error(status, body, 400, "invalid_cursor")
    # A staff member's catalog (inactive products too) is not a customer's (active only).
    _, (cursor, *_) = await _pages(api, "/api/v1/products", shop.admin, limit=1)
    status, body, _ = await api.call("GET", f"/api/v1/products?limit=1&cursor={cursor}", token=shop.alice)
    assert_error(status, body, 400, "invalid_cursor")


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        (None, "ABCD"),  # creation order, as before
        ("price", "ACBD"),
        ("-price", "DBCA"),
        ("name", "BCAD"),  # A-Z in either case, ties by id
        ("-name", "DACB"),
        ("created_at", "ABCD"),
        ("-created_at", "DCBA"),
    ],
)
async def test_the_catalog_sorts_with_stable_cursors(api: Api, shop: Store, sort: str | None, order: str) -> None:
    query = {} if sort is None else {"sort": sort}
    for limit in (1, 3):
        pages, _ = await _pages(api, "/api/v1/products", shop.alice, limit=limit, **query)
        assert "".join(sku for page in pages for sku in page) == order
        assert all(len(page) == limit for page in pages[:-1])
    # Combined with the search and the price range.
    pages, _ = await _pages(api, "/api/v1/products", shop.alice, limit=1, q="apple", **query)
    assert "".join(sku for page in pages for sku in page) == "".join(s for s in order if s in "BC")
    pages, _ = await _pages(api, "/api/v1/products", shop.alice, limit=1, price_min=500, price_max=1500, **query)
    assert "".join(sku for page in pages for sku in page) == "".join(s for s in order if s in "ABC")


async def test_a_sort_that_is_not_one_is_a_validation_error(api: Api, shop: Store) -> None:
    for sort in ("stock", "id", "-id", "PRICE", "price,name", ""):
        status, body, _ = await api.call("GET", f"/api/v1/products?sort={sort}")
        assert_error(status, body, 422, "validation_failed")
        assert list(body["error"]["details"]["fields"]) == ["sort"]


async def test_the_openapi_document_declares_the_sort_and_the_cursor_errors(api: Api) -> None:
    _, document, _ = await api.call("GET", "/api/v1/openapi.json")
    catalog = document["paths"]["/api/v1/products"]["get"]
    (sort,) = [p for p in catalog["parameters"] if p["name"] == "sort"]
    assert sort["in"] == "query" and not sort.get("required", False)
    assert sort["schema"] == {
        "type": "string",
        "enum": ["price", "-price", "name", "-name", "created_at", "-created_at"],
    }
    for path in LISTS:
        responses = document["paths"][path]["get"]["responses"]
        assert "invalid_cursor" in responses["400"]["description"], path
        assert "query_timeout" in responses["503"]["description"], path
