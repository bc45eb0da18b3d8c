"""The catalog over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.domain.money import Money
from tests.e2e.conftest import Api, assert_error, on_every_store, rows

pytestmark = on_every_store


@pytest.fixture
async def staff(api: Api) -> str:
    return await api.token_for("staff@example.com", "staff")


async def _create(api: Api, token: str, **fields: Any) -> dict[str, Any]:
    body = {"sku": "MUG-1", "name": "Blue mug", "price": 1299, **fields}
    status, product, headers = await api.call("POST", "/api/v1/products", json=body, token=token)
    assert status == 201, product
    assert headers["ETag"] == '"v1"'
    return product


async def test_create_get_update_with_etags(api: Api, staff: str) -> None:
    product = await _create(api, staff, description="Holds coffee", stock=5)
    assert product["price"] == 1299 and product["currency"] == "USD" and product["stock"] == 5
    assert product["active"] is True and product["description"] == "Holds coffee"
    pid = product["id"]

    status, got, headers = await api.call("GET", f"/api/v1/products/{pid}")
    assert status == 200 and got == product
    etag = headers["ETag"]

    status, updated, headers = await api.call(
        "PATCH", f"/api/v1/products/{pid}", json={"price": 1499}, token=staff, headers={"If-Match": etag}
    )
    assert status == 200 and updated["price"] == 1499 and headers["ETag"] == '"v2"'

    # The old ETag is stale now.
    status, body, _ = await api.call(
        "PATCH", f"/api/v1/products/{pid}", json={"price": 1}, token=staff, headers={"If-Match": etag}
    )
    assert_error(status, body, 412, "version_mismatch")
    assert body["error"]["details"]["current_version"] == 2
    status, got, _ = await api.call("GET", f"/api/v1/products/{pid}")
    assert got["price"] == 1499


async def test_stock_never_goes_below_zero(api: Api, staff: str) -> None:
    pid = (await _create(api, staff, stock=3))["id"]
    status, body, _ = await api.call("POST", f"/api/v1/products/{pid}/stock", json={"delta": -4}, token=staff)
    assert_error(status, body, 409, "insufficient_stock")
    status, product, _ = await api.call(
        "POST", f"/api/v1/products/{pid}/stock", json={"delta": -3, "reason": "sold"}, token=staff
    )
    assert status == 200 and product["stock"] == 0
    status, body, _ = await api.call("POST", f"/api/v1/products/{pid}/stock", json={"delta": 0}, token=staff)
    assert_error(status, body, 422, "validation_failed")


async def test_concurrent_stock_decrements_never_oversell(api: Api, staff: str) -> None:
    pid = (await _create(api, staff, stock=10))["id"]
    results = await asyncio.gather(
        *(api.call("POST", f"/api/v1/products/{pid}/stock", json={"delta": -1}, token=staff) for _ in range(30))
    )
    assert sorted(r[0] for r in results) == [200] * 10 + [409] * 20
    status, product, _ = await api.call("GET", f"/api/v1/products/{pid}")
    assert product["stock"] == 0


async def test_customers_cannot_write_and_do_not_see_inactive_products(api: Api, staff: str) -> None:
    customer = await api.token_for("cus@example.com")
    status, body, _ = await api.call(
        "POST", "/api/v1/products", json={"sku": "X", "name": "X", "price": 1}, token=customer
    )
    assert_error(status, body, 403, "forbidden")
    status, body, _ = await api.call("POST", "/api/v1/products", json={"sku": "X", "name": "X", "price": 1})
    assert_error(status, body, 401, "authentication_required")
    hidden = await _create(api, staff, sku="HIDDEN", active=False)
    status, body, _ = await api.call("GET", f"/api/v1/products/{hidden['id']}", token=customer)
    assert_error(status, body, 404, "product_not_found")
    status, page, _ = await api.call("GET", "/api/v1/products", token=customer)
    assert [p["sku"] for p in page["data"]] == []
    status, page, _ = await api.call("GET", "/api/v1/products?active=false", token=staff)
    assert [p["sku"] for p in page["data"]] == ["HIDDEN"]


async def test_list_paginates_filters_and_searches(api: Api, staff: str) -> None:
    names = ["Red mug", "Blue mug", "Green teapot", "Steel kettle", "Oak table"]
    for n, name in enumerate(names):
        await _create(api, staff, sku=f"P-{n}", name=name, price=(n + 1) * 1000)
    seen: list[str] = []
    cursor = None
    while True:
        path = "/api/v1/products?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await api.call("GET", path)
        assert status == 200
        seen += [p["name"] for p in page["data"]]
        if not page["meta"]["has_more"]:
            assert page["meta"]["next_cursor"] is None
            break
        cursor = page["meta"]["next_cursor"]
    assert seen == names

    status, page, _ = await api.call("GET", "/api/v1/products?q=mug")
    assert sorted(p["name"] for p in page["data"]) == ["Blue mug", "Red mug"]
    status, page, _ = await api.call("GET", "/api/v1/products?q=tea")
    assert [p["name"] for p in page["data"]] == ["Green teapot"]
    status, page, _ = await api.call("GET", "/api/v1/products?price_min=2000&price_max=4000")
    assert [p["price"] for p in page["data"]] == [2000, 3000, 4000]


@pytest.mark.parametrize(
    "query",
    ['"', "'; DROP TABLE products; --", "NEAR(mug tea)", "*", "name:mug", "mug AND OR NOT", "^", "(((", "\\", "\x00"],
)
async def test_search_syntax_is_harmless(api: Api, staff: str, query: str) -> None:
    await _create(api, staff, name="Blue mug")
    async with api.session.get(api.base + "/api/v1/products", params={"q": query}) as response:
        assert response.status in (200, 422)
        body = await response.json()
        if response.status == 200:
            assert isinstance(body["data"], list)
        else:
            assert body["error"]["code"] == "validation_failed"
    status, page, _ = await api.call("GET", "/api/v1/products")
    assert len(page["data"]) == 1  # the table is still there


async def test_delete_and_conflicts(api: Api, staff: str) -> None:
    a = await _create(api, staff, sku="A-1")
    await _create(api, staff, sku="B-1")
    status, body, _ = await api.call(
        "POST", "/api/v1/products", json={"sku": "A-1", "name": "dup", "price": 1}, token=staff
    )
    assert_error(status, body, 409, "sku_taken")
    status, body, _ = await api.call("PATCH", f"/api/v1/products/{a['id']}", json={"sku": "B-1"}, token=staff)
    assert_error(status, body, 409, "sku_taken")
    status, _, _ = await api.call("DELETE", f"/api/v1/products/{a['id']}", token=staff, headers={"If-Match": '"v9"'})
    assert status == 412
    status, _, _ = await api.call("DELETE", f"/api/v1/products/{a['id']}", token=staff)
    assert status == 204
    status, body, _ = await api.call("GET", f"/api/v1/products/{a['id']}")
    assert_error(status, body, 404, "product_not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sku": "S", "name": "N", "price": -1}, "price"),
        ({"sku": "S", "name": "N", "price": 12.5}, "price"),
        ({"sku": "S", "name": "N", "price": 1e20}, "price"),
        ({"sku": "S", "name": "N", "price": "12"}, "price"),
        ({"sku": "S", "name": "N", "price": True}, "price"),
        ({"sku": "S", "name": "N", "price": 1, "stock": -1}, "stock"),
        ({"sku": "S", "name": "", "price": 1}, "name"),
        ({"sku": "has space", "name": "N", "price": 1}, "sku"),
        ({"name": "N", "price": 1}, "sku"),
        ({"sku": "S", "name": "N", "price": 1, "id": "prd_mine"}, "id"),
        ({"sku": "S", "name": "N", "price": 1, "version": 7}, "version"),
        ({"sku": "S", "name": "N", "price": 1, "created_at": "2020-01-01T00:00:00Z"}, "created_at"),
        ({"sku": "S", "name": "N", "price": 1, "currency": "usd"}, "currency"),
    ],
)
async def test_bad_product_bodies_are_refused_and_write_nothing(
    api: Api, staff: str, body: dict[str, Any], field: str
) -> None:
    status, response, _ = await api.call("POST", "/api/v1/products", json=body, token=staff)
    assert_error(status, response, 422, "validation_failed")
    assert field in response["error"]["details"]["fields"]
    status, page, _ = await api.call("GET", "/api/v1/products", token=staff)
    assert page["data"] == []


async def test_integral_numbers_are_integers(api: Api, staff: str) -> None:
    # JSON has one number type: 1200.0 is the integer 1200 (as JSON Schema says); 12.5 is refused above.
    product = await _create(api, staff, price=1200.0, stock=3.0)
    assert product["price"] == 1200
    assert product["stock"] == 3
    # Stored as integers too (SQLite would keep a real 1200.0 as given; it comes back a float).
    [(price, stock)] = await rows(api, "SELECT price, stock FROM products")
    assert (type(price), price, type(stock), stock) == (int, 1200, int, 3)


async def test_foreign_currency_is_refused(api: Api, staff: str) -> None:
    status, body, _ = await api.call(
        "POST", "/api/v1/products", json={"sku": "S", "name": "N", "price": 1, "currency": "EUR"}, token=staff
    )
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"]["fields"] == {"currency": "must be one of USD"}


async def test_listed_products_are_never_stale(api: Api, staff: str) -> None:
    product = await _create(api, staff, sku="FRESH-1", stock=5)
    pid = product["id"]

    async def listed() -> list[dict[str, Any]]:
        status, page, _ = await api.call("GET", "/api/v1/products?q=FRESH")
        assert status == 200
        return page["data"]

    assert [p["price"] for p in await listed()] == [1299]
    await api.call("PATCH", f"/api/v1/products/{pid}", json={"price": 1500, "name": "Fresher mug"}, token=staff)
    assert [(p["price"], p["name"]) for p in await listed()] == [(1500, "Fresher mug")]
    await api.call("POST", f"/api/v1/products/{pid}/stock", json={"delta": -2}, token=staff)
    assert [p["stock"] for p in await listed()] == [3]
    await api.call("PATCH", f"/api/v1/products/{pid}", json={"active": False}, token=staff)
    assert await listed() == []
    status, page, _ = await api.call("GET", "/api/v1/products?active=false", token=staff)
    assert [p["id"] for p in page["data"]] == [pid]
    # Another server process (or the CLI) changing the database is seen too.
    database = await api.container.database()
    async with database() as uow:
        stored = await uow.products.get(pid)
        stored.update({"active": True, "price": Money(42, "USD")}, at=stored.updated_at)
        await uow.products.update(stored)
        await uow.commit()
    assert [p["price"] for p in await listed()] == [42]


async def test_a_sku_with_a_trailing_newline_is_refused_by_the_schema(api: Api, staff: str) -> None:
    # ECMAScript's $ (the schema's dialect) does not match before a final newline; Python's would.
    status, body, _ = await api.call(
        "POST", "/api/v1/products", json={"sku": "MUG-1\n", "name": "N", "price": 1}, token=staff
    )
    assert_error(status, body, 422, "validation_failed")
    assert list(body["error"]["details"]["fields"]) == ["sku"]
