"""Orders over real HTTP: placing (stock reserved, products snapshotted), reading and
listing, cancelling, fulfilling, and every kind of bad input refused with nothing written."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.e2e.conftest import (
    Api,
    MovableClock,
    Store,
    assert_error,
    count_rows,
    create_product,
    on_every_store,
    place_order,
    scalar,
    serve,
    stock_of,
)

pytestmark = on_every_store


@attrs.frozen
class Shop:
    staff: str
    alice_id: str
    alice: str
    bob_id: str
    bob: str
    mug: dict[str, Any]  # 1250, stock 10
    tea: dict[str, Any]  # 399, stock 5


@pytest.fixture
async def shop(api: Api) -> Shop:
    staff = await api.token_for("staff@example.com", "staff")
    alice_id, alice = await api.account("alice@example.com")
    bob_id, bob = await api.account("bob@example.com")
    mug = await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=10)
    tea = await create_product(api, staff, sku="TEA-1", name="Green tea", price=399, stock=5)
    return Shop(staff, alice_id, alice, bob_id, bob, mug, tea)


def _time(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


async def _pay_manually(api: Api, staff: str, order: dict[str, Any]) -> None:
    status, body, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/payments", json={"method": "manual", "reference": "cash"}, token=staff
    )
    assert status == 201, body


# Placing.
async def test_place_by_product_id_and_by_sku(api: Api, shop: Shop) -> None:
    status, order, headers = await api.call(
        "POST",
        "/api/v1/orders",
        json={"items": [{"product_id": shop.mug["id"], "quantity": 2}, {"sku": "TEA-1", "quantity": 3}]},
        token=shop.alice,
    )
    assert status == 201, order
    assert headers["Location"] == f"/api/v1/orders/{order['id']}"
    assert order["id"].startswith("ord_")
    assert order["customer_id"] == shop.alice_id
    assert order["status"] == "pending_payment"
    assert order["items"] == [
        {
            "product_id": shop.mug["id"],
            "sku": "MUG-1",
            "name": "Blue mug",
            "unit_price": 1250,
            "quantity": 2,
            "line_total": 2500,
        },
        {
            "product_id": shop.tea["id"],
            "sku": "TEA-1",
            "name": "Green tea",
            "unit_price": 399,
            "quantity": 3,
            "line_total": 1197,
        },
    ]
    assert (order["subtotal"], order["total"], order["amount_paid"], order["amount_refunded"]) == (3697, 3697, 0, 0)
    assert order["currency"] == "USD"
    assert order["created_at"] == order["updated_at"]
    assert _time(order["expires_at"]) - _time(order["created_at"]) == timedelta(minutes=30)
    assert await stock_of(api, shop.mug["id"]) == 8
    assert await stock_of(api, shop.tea["id"]) == 2

    status, got, _ = await api.call("GET", headers["Location"], token=shop.alice)
    assert status == 200 and got == order

    # The order keeps the product as it was: later catalog changes do not touch it.
    status, body, _ = await api.call(
        "PATCH", f"/api/v1/products/{shop.mug['id']}", json={"price": 9999, "name": "Red mug"}, token=shop.staff
    )
    assert status == 200, body
    status, got, _ = await api.call("GET", f"/api/v1/orders/{order['id']}", token=shop.alice)
    assert got["items"][0]["unit_price"] == 1250 and got["items"][0]["name"] == "Blue mug"
    assert got["total"] == 3697

    payload = await scalar(
        api, "SELECT payload FROM outbox WHERE type = 'order.created' AND aggregate_id = ?", order["id"]
    )
    assert json.loads(payload) == order


async def test_an_order_of_free_products_is_paid_at_once(api: Api, shop: Shop) -> None:
    free = await create_product(api, shop.staff, sku="SAMPLE", name="Sample", price=0, stock=3)
    order = await place_order(api, shop.alice, [{"sku": "SAMPLE", "quantity": 1}])
    assert order["status"] == "paid" and order["total"] == 0
    assert await stock_of(api, free["id"]) == 2
    assert await count_rows(api, "outbox", "type = 'order.paid' AND aggregate_id = ?", (order["id"],)) == 1


# Reading and listing.
async def test_customers_list_their_own_orders_staff_list_all(api: Api, shop: Shop) -> None:
    mine = [await place_order(api, shop.alice, [{"sku": "TEA-1", "quantity": 1}]) for _ in range(3)]
    bobs = await place_order(api, shop.bob, [{"sku": "MUG-1", "quantity": 1}])
    status, body, _ = await api.call("POST", f"/api/v1/orders/{mine[1]['id']}/cancel", json={}, token=shop.alice)
    assert status == 200, body

    status, page, _ = await api.call("GET", "/api/v1/orders", token=shop.alice)
    assert status == 200
    assert [o["id"] for o in page["data"]] == [o["id"] for o in reversed(mine)]  # newest first
    assert page["meta"] == {"has_more": False, "next_cursor": None}
    # A customer's customer_id filter cannot reach anyone else's orders.
    status, page, _ = await api.call("GET", f"/api/v1/orders?customer_id={shop.bob_id}", token=shop.alice)
    assert status == 200 and {o["customer_id"] for o in page["data"]} == {shop.alice_id}
    status, page, _ = await api.call("GET", "/api/v1/orders", token=shop.bob)
    assert [o["id"] for o in page["data"]] == [bobs["id"]]

    status, page, _ = await api.call("GET", "/api/v1/orders", token=shop.staff)
    assert [o["id"] for o in page["data"]] == [bobs["id"]] + [o["id"] for o in reversed(mine)]
    status, page, _ = await api.call("GET", f"/api/v1/orders?customer_id={shop.bob_id}", token=shop.staff)
    assert [o["id"] for o in page["data"]] == [bobs["id"]]
    status, page, _ = await api.call("GET", "/api/v1/orders?status=cancelled", token=shop.staff)
    assert [(o["id"], o["status"]) for o in page["data"]] == [(mine[1]["id"], "cancelled")]
    status, page, _ = await api.call(
        "GET", f"/api/v1/orders?status=pending_payment&customer_id={shop.alice_id}", token=shop.staff
    )
    assert [o["id"] for o in page["data"]] == [mine[2]["id"], mine[0]["id"]]

    # Cursor pages: every order once, in the same order.
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        path = "/api/v1/orders?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await api.call("GET", path, token=shop.staff)
        assert status == 200, page
        pages += 1
        seen += [o["id"] for o in page["data"]]
        if not page["meta"]["has_more"]:
            assert page["meta"]["next_cursor"] is None
            break
        assert len(page["data"]) == 3
        cursor = page["meta"]["next_cursor"]
    assert pages == 2
    assert seen == [bobs["id"]] + [o["id"] for o in reversed(mine)]
    # Pages of a filtered list: one order a page, the cancelled one never among them.
    seen, cursor = [], None
    while True:
        path = "/api/v1/orders?status=pending_payment&limit=1" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await api.call("GET", path, token=shop.staff)
        seen += [o["id"] for o in page["data"]]
        if not page["meta"]["has_more"]:
            break
        cursor = page["meta"]["next_cursor"]
    assert seen == [bobs["id"], mine[2]["id"], mine[0]["id"]]

    for query in ("status=lost", "limit=0", "limit=101", "limit=x"):
        status, body, _ = await api.call("GET", f"/api/v1/orders?{query}", token=shop.staff)
        assert_error(status, body, 422, "validation_failed")
    status, body, _ = await api.call("GET", "/api/v1/orders")
    assert_error(status, body, 401, "authentication_required")


async def test_another_customers_order_is_not_found(api: Api, shop: Shop) -> None:
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 1}])
    path = f"/api/v1/orders/{order['id']}"
    for method, suffix, body in (
        ("GET", "", None),
        ("GET", "/payments", None),
        ("GET", "/refunds", None),
        ("POST", "/cancel", {}),
    ):
        status, answer, _ = await api.call(method, path + suffix, json=body, token=shop.bob)
        assert_error(status, answer, 404, "order_not_found")
        assert answer["error"]["details"] == {"order_id": order["id"]}
    status, answer, _ = await api.call("GET", "/api/v1/orders/ord_nothing", token=shop.staff)
    assert_error(status, answer, 404, "order_not_found")
    status, answer, _ = await api.call("GET", path)
    assert_error(status, answer, 401, "authentication_required")
    # Bob's attempt changed nothing; staff see the order.
    status, got, _ = await api.call("GET", path, token=shop.staff)
    assert status == 200 and got["status"] == "pending_payment"
    assert await stock_of(api, shop.mug["id"]) == 9


# Cancelling and fulfilling.
async def test_cancel_releases_the_stock(api: Api, shop: Shop) -> None:
    order = await place_order(
        api, shop.alice, [{"sku": "MUG-1", "quantity": 3}, {"product_id": shop.tea["id"], "quantity": 5}]
    )
    assert (await stock_of(api, shop.mug["id"]), await stock_of(api, shop.tea["id"])) == (7, 0)
    status, cancelled, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/cancel", json={"reason": "changed my mind"}, token=shop.alice
    )
    assert status == 200, cancelled
    assert cancelled["status"] == "cancelled"
    assert (cancelled["amount_paid"], cancelled["amount_refunded"]) == (0, 0)
    assert (await stock_of(api, shop.mug["id"]), await stock_of(api, shop.tea["id"])) == (10, 5)
    assert await count_rows(api, "outbox", "type = 'order.cancelled' AND aggregate_id = ?", (order["id"],)) == 1

    # Once only: the stock is not released twice.
    status, body, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/cancel", json={}, token=shop.alice)
    assert_error(status, body, 409, "invalid_order_state")
    assert body["error"]["details"] == {"status": "cancelled", "action": "cancel"}
    assert (await stock_of(api, shop.mug["id"]), await stock_of(api, shop.tea["id"])) == (10, 5)

    status, body, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/cancel", json={"reason": 5}, token=shop.alice
    )
    assert_error(status, body, 422, "validation_failed")


async def test_fulfil_needs_staff_and_a_paid_order(api: Api, shop: Shop) -> None:
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 1}])
    path = f"/api/v1/orders/{order['id']}/fulfil"
    status, body, _ = await api.call("POST", path, token=shop.alice)
    assert_error(status, body, 403, "forbidden")
    status, body, _ = await api.call("POST", path, token=shop.staff)
    assert_error(status, body, 409, "invalid_order_state")
    assert body["error"]["details"] == {"status": "pending_payment", "action": "fulfil"}

    await _pay_manually(api, shop.staff, order)
    status, fulfilled, _ = await api.call("POST", path, token=shop.staff)
    assert status == 200, fulfilled
    assert fulfilled["status"] == "fulfilled" and fulfilled["amount_paid"] == 1250
    assert await stock_of(api, shop.mug["id"]) == 9  # fulfilling keeps the reservation: it was sold

    status, body, _ = await api.call("POST", path, token=shop.staff)
    assert_error(status, body, 409, "invalid_order_state")
    assert body["error"]["details"]["status"] == "fulfilled"
    status, body, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/cancel", json={}, token=shop.staff)
    assert_error(status, body, 409, "invalid_order_state")
    assert body["error"]["details"]["status"] == "fulfilled"

    cancelled = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 1}])
    await api.call("POST", f"/api/v1/orders/{cancelled['id']}/cancel", json={}, token=shop.alice)
    status, body, _ = await api.call("POST", f"/api/v1/orders/{cancelled['id']}/fulfil", token=shop.staff)
    assert_error(status, body, 409, "invalid_order_state")
    assert body["error"]["details"]["status"] == "cancelled"
    assert await count_rows(api, "outbox", "type = 'order.fulfilled'") == 1


# Stock.
async def test_insufficient_stock_names_every_short_line_and_changes_nothing(api: Api, shop: Shop) -> None:
    cup = await create_product(api, shop.staff, sku="CUP-1", name="Cup", price=500, stock=1)
    status, body, _ = await api.call(
        "POST",
        "/api/v1/orders",
        json={
            "items": [
                {"sku": "MUG-1", "quantity": 11},
                {"product_id": shop.tea["id"], "quantity": 5},  # exactly what there is
                {"product_id": cup["id"], "quantity": 2},
            ]
        },
        token=shop.alice,
    )
    assert_error(status, body, 409, "insufficient_stock")
    assert body["error"]["details"] == {
        "lines": [
            {"index": 0, "product_id": shop.mug["id"], "sku": "MUG-1", "requested": 11, "available": 10},
            {"index": 2, "product_id": cup["id"], "sku": "CUP-1", "requested": 2, "available": 1},
        ]
    }
    assert [await stock_of(api, p) for p in (shop.mug["id"], shop.tea["id"], cup["id"])] == [10, 5, 1]
    assert await count_rows(api, "orders") == 0
    assert await count_rows(api, "order_lines") == 0
    assert await count_rows(api, "outbox") == 0


# Bad input: each refused in the envelope, nothing written.
def _items(*lines: dict[str, Any]) -> dict[str, Any]:
    return {"items": list(lines)}


BAD_ORDERS: list[tuple[str, Any, int, str, dict[str, Any]]] = [
    ("zero quantity", _items({"sku": "MUG-1", "quantity": 0}), 422, "validation_failed", {"items[0].quantity": "must be at least 1"}),
    ("negative quantity", _items({"sku": "MUG-1", "quantity": -2}), 422, "validation_failed", {"items[0].quantity": "must be at least 1"}),
    ("fractional quantity", _items({"sku": "MUG-1", "quantity": 1.5}), 422, "validation_failed", {"items[0].quantity": "must be an integer"}),
    ("quantity as text", _items({"sku": "MUG-1", "quantity": "2"}), 422, "validation_failed", {"items[0].quantity": "must be an integer"}),
    ("quantity null", _items({"sku": "MUG-1", "quantity": None}), 422, "validation_failed", {"items[0].quantity": "must be an integer"}),
    ("1001 units", _items({"sku": "MUG-1", "quantity": 1001}), 422, "validation_failed", {"items[0].quantity": "must be at most 1000"}),
    ("no quantity", _items({"sku": "MUG-1"}), 422, "validation_failed", {"items[0].quantity": "is required"}),
    ("no items", {"items": []}, 422, "validation_failed", {"items": "must have at least 1 items"}),
    ("101 items", {"items": [{"sku": f"S{i}", "quantity": 1} for i in range(101)]}, 422, "validation_failed", {"items": "must have at most 100 items"}),
    ("items missing", {}, 422, "validation_failed", {"items": "is required"}),
    ("items not a list", {"items": {"sku": "MUG-1", "quantity": 1}}, 422, "validation_failed", {"items": "must be an array"}),
    ("body a list", [{"sku": "MUG-1", "quantity": 1}], 422, "validation_failed", {"body": "must be an object"}),
    ("both product_id and sku", _items({"product_id": "PRODUCT", "sku": "MUG-1", "quantity": 1}), 422, "validation_failed", {"items[0].sku": "is not a field of this request"}),
    ("neither product_id nor sku", _items({"quantity": 1}), 422, "validation_failed", {"items[0].product_id": "is required"}),
    ("empty sku", _items({"sku": "", "quantity": 1}), 422, "validation_failed", {"items[0].sku": "has characters or a form that is not allowed"}),
    ("empty product_id", _items({"product_id": "", "quantity": 1}), 422, "validation_failed", {"items[0].product_id": "must have at least 1 characters"}),
    ("extra field on a line", _items({"sku": "MUG-1", "quantity": 1, "unit_price": 1}), 422, "validation_failed", {"items[0].unit_price": "is not a field of this request"}),
    ("extra top-level field", {**_items({"sku": "MUG-1", "quantity": 1}), "customer_id": "usr_x"}, 422, "validation_failed", {"customer_id": "is not a field of this request"}),
    ("unknown product id", _items({"product_id": "prd_nothing", "quantity": 1}), 422, "unknown_product", {"lines": [{"index": 0, "product_id": "prd_nothing"}]}),
    ("unknown sku", _items({"sku": "MUG-1", "quantity": 1}, {"sku": "NOPE-9", "quantity": 1}), 422, "unknown_product", {"lines": [{"index": 1, "sku": "NOPE-9"}]}),
    ("inactive product", _items({"sku": "OLD-1", "quantity": 1}), 422, "unknown_product", {"lines": [{"index": 0, "sku": "OLD-1"}]}),
    ("the same product twice", _items({"sku": "MUG-1", "quantity": 1}, {"product_id": "PRODUCT", "quantity": 2}), 422, "duplicate_product", {"product_id": "PRODUCT", "lines": [0, 1]}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "status", "code", "details"), BAD_ORDERS, ids=[c[0] for c in BAD_ORDERS])
async def test_bad_orders_are_refused_and_write_nothing(
    api: Api, shop: Shop, case: str, body: Any, status: int, code: str, details: dict[str, Any]
) -> None:
    await create_product(api, shop.staff, sku="OLD-1", name="Retired", price=100, stock=5, active=False)
    text = json.dumps(body).replace("PRODUCT", shop.mug["id"])
    got, answer, _ = await api.call(
        "POST", "/api/v1/orders", data=text, headers={"Content-Type": "application/json"}, token=shop.alice
    )
    assert_error(got, answer, status, code)
    expected = json.loads(json.dumps(details).replace("PRODUCT", shop.mug["id"]))
    assert answer["error"]["details"] == (expected if code != "validation_failed" else {"fields": expected})
    assert await count_rows(api, "orders") == 0
    assert await stock_of(api, shop.mug["id"]) == 10


@pytest.mark.parametrize(
    ("content_type", "data", "status", "code"),
    [
        ("text/plain", '{"items": [{"sku": "MUG-1", "quantity": 1}]}', 415, "unsupported_media_type"),
        ("application/x-www-form-urlencoded", "items=MUG-1", 415, "unsupported_media_type"),
        ("application/json", '{"items": [{"sku": "MUG-1", "quantity": 1}]', 400, "malformed_json"),
        ("application/json", "", 422, "validation_failed"),  # no body is {}: items is required
        ("application/json", '{"items": [{"sku": "MUG-1", "quantity": NaN}]}', 400, "malformed_json"),
    ],
    ids=["text", "form", "truncated json", "empty body", "NaN"],
)
async def test_bodies_that_are_not_json_are_refused(
    api: Api, shop: Shop, content_type: str, data: str, status: int, code: str
) -> None:
    got, body, _ = await api.call(
        "POST", "/api/v1/orders", data=data, headers={"Content-Type": content_type}, token=shop.alice
    )
    assert_error(got, body, status, code)
    assert await count_rows(api, "orders") == 0
    assert await stock_of(api, shop.mug["id"]) == 10


async def test_anonymous_callers_cannot_order(api: Api, shop: Shop) -> None:
    status, body, _ = await api.call("POST", "/api/v1/orders", json=_items({"sku": "MUG-1", "quantity": 1}))
    assert_error(status, body, 401, "authentication_required")
    status, body, _ = await api.call(
        "POST", "/api/v1/orders", json=_items({"sku": "MUG-1", "quantity": 1}), token="not-a-token"
    )
    assert_error(status, body, 401, "invalid_token")
    assert await count_rows(api, "orders") == 0


# Expiry.
async def _status_in_database(api: Api, order_id: str) -> str:
    status: str = await scalar(api, "SELECT status FROM orders WHERE id = ?", order_id)
    return status


async def test_unpaid_orders_expire_by_the_servers_own_task(clock_api: Api, clock: MovableClock) -> None:
    api = clock_api
    staff = await api.token_for("staff@example.com", "staff")
    alice = await api.token_for("alice@example.com")
    mug = await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=10)
    unpaid = await place_order(api, alice, [{"sku": "MUG-1", "quantity": 3}])
    paid = await place_order(api, alice, [{"sku": "MUG-1", "quantity": 2}])
    await _pay_manually(api, staff, paid)
    partly = await place_order(api, alice, [{"sku": "MUG-1", "quantity": 1}])
    status, body, _ = await api.call(
        "POST",
        f"/api/v1/orders/{partly['id']}/payments",
        json={"method": "manual", "reference": "deposit", "amount": 100},
        token=staff,
    )
    assert status == 201, body
    await api.housekeeping_round()  # a whole sweep, with nothing due yet
    assert await _status_in_database(api, unpaid["id"]) == "pending_payment"
    assert await stock_of(api, mug["id"]) == 4

    clock.advance(minutes=30, seconds=1)
    fresh = await place_order(api, await api.token_for("bob@example.com"), [{"sku": "MUG-1", "quantity": 1}])
    await api.housekeeping_round()  # the sweep after the clock moved
    assert await _status_in_database(api, unpaid["id"]) == "expired"
    assert await stock_of(api, mug["id"]) == 3 + 3  # the expired order's three are back
    assert await _status_in_database(api, paid["id"]) == "paid"
    assert await _status_in_database(api, partly["id"]) == "pending_payment"  # money was taken: staff decide
    assert await _status_in_database(api, fresh["id"]) == "pending_payment"  # its deadline is 30 min away
    assert await count_rows(api, "outbox", "type = 'order.expired'") == 1
    assert await count_rows(api, "outbox", "type = 'order.expired' AND aggregate_id = ?", (unpaid["id"],)) == 1

    # Tokens issued before the jump have expired with it; a new session sees the result.
    alice = (await api.login("alice@example.com"))["access_token"]
    staff = (await api.login("staff@example.com"))["access_token"]
    status, got, _ = await api.call("GET", f"/api/v1/orders/{unpaid['id']}", token=alice)
    assert (got["status"], got["amount_paid"]) == ("expired", 0)
    status, body, _ = await api.call(
        "POST", f"/api/v1/orders/{unpaid['id']}/payments", json={"method": "manual", "reference": "late"}, token=staff
    )
    assert_error(status, body, 409, "invalid_order_state")
    assert body["error"]["details"] == {"status": "expired", "action": "pay"}
    status, body, _ = await api.call("POST", f"/api/v1/orders/{unpaid['id']}/cancel", json={}, token=alice)
    assert_error(status, body, 409, "invalid_order_state")
    await api.housekeeping_round()  # later sweeps change nothing more
    assert await stock_of(api, mug["id"]) == 6
    assert await _status_in_database(api, partly["id"]) == "pending_payment"
    assert await count_rows(api, "outbox", "type = 'order.expired'") == 1


async def test_paying_an_order_past_its_deadline_expires_it_even_before_the_sweep(
    tmp_path: Path, clock: MovableClock, store: Store
) -> None:
    async with serve(tmp_path / "data", clock=clock, store=store) as api:  # the sweep runs every 30 s: not in this test
        staff = await api.token_for("staff@example.com", "staff")
        mug = await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=10)
        order = await place_order(api, staff, [{"sku": "MUG-1", "quantity": 4}])
        clock.advance(minutes=31)
        staff = (await api.login("staff@example.com"))["access_token"]
        status, body, _ = await api.call(
            "POST", f"/api/v1/orders/{order['id']}/payments", json={"method": "manual", "reference": "r"}, token=staff
        )
        assert_error(status, body, 409, "invalid_order_state")
        assert body["error"]["details"] == {"status": "expired", "action": "pay"}
        assert await _status_in_database(api, order["id"]) == "expired"
        assert await stock_of(api, mug["id"]) == 10
        assert await count_rows(api, "payments") == 0


async def test_the_expiry_time_is_a_setting(tmp_path: Path, store: Store) -> None:
    async with serve(tmp_path / "data", TILLBOX_ORDERS_EXPIRY_MINUTES="5", store=store) as api:
        staff = await api.token_for("staff@example.com", "staff")
        await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=10)
        order = await place_order(api, staff, [{"sku": "MUG-1", "quantity": 1}])
        assert _time(order["expires_at"]) - _time(order["created_at"]) == timedelta(minutes=5)


async def test_the_servers_housekeeping_purges_outbox_events_past_the_configured_retention(
    tmp_path: Path, clock: MovableClock, store: Store
) -> None:
    async with serve(tmp_path / "data", clock=clock, TILLBOX_OUTBOX_RETENTION_DAYS="2", store=store) as api:
        staff = await api.token_for("staff@example.com", "staff")
        alice = await api.token_for("alice@example.com")
        await create_product(api, staff, sku="MUG-1", price=1250, stock=10)
        await place_order(api, alice, [{"sku": "MUG-1", "quantity": 1}])
        assert await count_rows(api, "outbox") == 1  # order.created
        outbox = await api.container.outbox_service()

        clock.advance(days=1, hours=23)
        assert await outbox.purge_old_events() == 0
        assert await count_rows(api, "outbox") == 1
        clock.advance(hours=1, seconds=1)
        assert await outbox.purge_old_events() == 1
        assert await count_rows(api, "outbox") == 0
        assert await count_rows(api, "orders") == 1  # only the event goes
