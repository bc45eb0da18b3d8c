"""Races on a real server: many real HTTP requests at once (asyncio.gather) against one
store, SQLite or PostgreSQL. Stock is never oversold, refunds never exceed what was captured, and one
Idempotency-Key has one effect however many copies arrive together."""

from __future__ import annotations

import asyncio
import collections
import json

import pytest

from tests.e2e.conftest import (
    Api,
    assert_error,
    count_rows,
    create_product,
    on_every_store,
    place_order,
    scalar,
    stock_of,
)

pytestmark = on_every_store


@pytest.fixture
async def staff(api: Api) -> str:
    return await api.token_for("staff@example.com", "staff")


@pytest.fixture
async def customers(api: Api) -> list[str]:
    return [await api.token_for(f"customer{i}@example.com") for i in range(5)]


async def test_50_orders_for_the_last_10_units(api: Api, staff: str, customers: list[str]) -> None:
    last = await create_product(api, staff, sku="LAST-1", name="Last ones", price=1000, stock=10)
    plenty = await create_product(api, staff, sku="MANY-1", name="Plenty", price=100, stock=500)
    items = [{"sku": "MANY-1", "quantity": 2}, {"product_id": last["id"], "quantity": 1}]
    results = await asyncio.gather(
        *(api.call("POST", "/api/v1/orders", json={"items": items}, token=customers[i % 5]) for i in range(50))
    )
    statuses = collections.Counter(status for status, _, _ in results)
    assert statuses == {201: 10, 409: 40}, statuses
    for status, body, _ in results:
        if status == 409:
            assert_error(status, body, 409, "insufficient_stock")
            assert body["error"]["details"]["lines"] == [
                {"index": 1, "product_id": last["id"], "sku": "LAST-1", "requested": 1, "available": 0}
            ]
    assert await stock_of(api, last["id"]) == 0
    assert await stock_of(api, plenty["id"]) == 500 - 2 * 10  # the refused orders reserved nothing
    assert await count_rows(api, "orders") == 10
    assert await count_rows(api, "order_lines", "product_id = ?", (last["id"],)) == 10
    created = {body["id"] for status, body, _ in results if status == 201}
    assert len(created) == 10
    assert await count_rows(api, "outbox", "type = 'order.created'") == 10


async def test_20_concurrent_refunds_never_exceed_the_payment(api: Api, staff: str, customers: list[str]) -> None:
    await create_product(api, staff, sku="TV-1", name="Television", price=2000, stock=1)
    order = await place_order(api, customers[0], [{"sku": "TV-1", "quantity": 1}])
    status, payment, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/payments", json={"method": "manual", "reference": "cash"}, token=staff
    )
    assert status == 201 and payment["amount"] == 2000
    results = await asyncio.gather(
        *(
            api.call(
                "POST", f"/api/v1/orders/{order['id']}/refunds", json={"amount": 300, "reason": "race"}, token=staff
            )
            for _ in range(20)
        )
    )
    succeeded = [body for status, body, _ in results if status == 201]
    refused = [(status, body) for status, body, _ in results if status != 201]
    refunded = sum(r["amount"] for body in succeeded for r in body["refunds"])
    assert refunded <= 2000
    assert len(succeeded) == 6 and refunded == 1800  # each 300; a seventh would be 2100
    for status, body in refused:
        assert_error(status, body, 422, "refund_exceeds_captured")
        assert body["error"]["details"]["refundable"] in range(0, 2000, 100)
    assert await scalar(api, "SELECT amount_refunded FROM orders WHERE id = ?", order["id"]) == 1800
    assert await scalar(api, "SELECT sum(amount) FROM refunds WHERE status = 'succeeded'") == 1800
    assert await count_rows(api, "refunds") == 6
    status, got, _ = await api.call("GET", f"/api/v1/orders/{order['id']}", token=staff)
    assert (got["status"], got["amount_paid"], got["amount_refunded"]) == ("partially_refunded", 2000, 1800)


async def test_concurrent_cancellations_release_the_stock_once(api: Api, staff: str, customers: list[str]) -> None:
    product = await create_product(api, staff, sku="LAMP-1", name="Lamp", price=500, stock=5)
    order = await place_order(api, customers[0], [{"sku": "LAMP-1", "quantity": 3}])
    results = await asyncio.gather(
        *(api.call("POST", f"/api/v1/orders/{order['id']}/cancel", json={}, token=customers[0]) for _ in range(10))
    )
    assert sorted(status for status, _, _ in results) == [200] + [409] * 9
    for status, body, _ in results:
        if status == 409:
            assert_error(status, body, 409, "invalid_order_state")
    assert await stock_of(api, product["id"]) == 5
    assert await count_rows(api, "outbox", "type = 'order.cancelled'") == 1


async def test_cancel_racing_payments_keeps_the_books_straight(api: Api, staff: str, customers: list[str]) -> None:
    """Whatever wins, money is never lost: a cancelled order gives back all it took."""
    product = await create_product(api, staff, sku="CHAIR-1", name="Chair", price=1000, stock=5)
    order = await place_order(api, customers[0], [{"sku": "CHAIR-1", "quantity": 2}])
    path = f"/api/v1/orders/{order['id']}"
    calls = [
        api.call(
            "POST", f"{path}/payments", json={"method": "manual", "reference": f"r{i}", "amount": 500}, token=staff
        )
        for i in range(4)
    ]
    # Staff cancel: once a payment is in, the customer may no longer (cancel_needs_staff).
    calls.insert(2, api.call("POST", f"{path}/cancel", json={}, token=staff))
    results = await asyncio.gather(*calls)
    assert all(status in (200, 201, 409) for status, _, _ in results), results
    assert results[2][0] == 200  # the cancellation itself always wins its turn: nothing blocks it
    status, got, _ = await api.call("GET", path, token=staff)
    assert got["status"] == "cancelled"
    paid = sum(body["amount"] for status, body, _ in results if status == 201)
    assert got["amount_paid"] == paid and got["amount_refunded"] == paid
    assert await stock_of(api, product["id"]) == 5


@pytest.mark.parametrize("stock", [100, 3], ids=["plenty of stock", "exactly enough for one"])
async def test_one_key_sent_20_times_at_once_has_one_effect(
    api: Api, staff: str, customers: list[str], stock: int
) -> None:
    """With exactly enough stock for one order, the copies that lose the race must not
    answer insufficient_stock: the request they repeat succeeded."""
    product = await create_product(api, staff, sku="DESK-1", name="Desk", price=15000, stock=stock)
    body = {"items": [{"sku": "DESK-1", "quantity": 3}]}
    headers = {"Idempotency-Key": "checkout-7f3a"}
    results = await asyncio.gather(
        *(api.call("POST", "/api/v1/orders", json=body, token=customers[0], headers=headers) for _ in range(20))
    )
    assert all(status < 500 for status, _, _ in results), results
    created = [(answer, h) for status, answer, h in results if status == 201]
    others = [(status, answer) for status, answer, _ in results if status != 201]
    assert created, results
    assert len({answer["id"] for answer, _ in created}) == 1
    assert sum(1 for _, h in created if "Idempotent-Replayed" not in h) == 1  # one original, the rest replays
    for status, answer in others:
        assert_error(status, answer, 409, "idempotency_key_in_flight")
    assert await count_rows(api, "orders") == 1
    assert await stock_of(api, product["id"]) == stock - 3
    # Afterwards, every retry is the replay.
    status, answer, h = await api.call("POST", "/api/v1/orders", json=body, token=customers[0], headers=headers)
    assert status == 201 and answer["id"] == created[0][0]["id"] and h["Idempotent-Replayed"] == "true"


async def test_one_key_for_a_manual_payment_sent_20_times_at_once(api: Api, staff: str, customers: list[str]) -> None:
    await create_product(api, staff, sku="BIKE-1", name="Bike", price=30000, stock=1)
    order = await place_order(api, customers[0], [{"sku": "BIKE-1", "quantity": 1}])
    pay = {"method": "manual", "reference": "deposit", "amount": 10000}
    results = await asyncio.gather(
        *(
            api.call(
                "POST",
                f"/api/v1/orders/{order['id']}/payments",
                json=pay,
                token=staff,
                headers={"Idempotency-Key": "deposit-1"},
            )
            for _ in range(20)
        )
    )
    statuses = collections.Counter(status for status, _, _ in results)
    assert set(statuses) <= {201, 409} and statuses[201] >= 1, statuses
    assert len({json.dumps(body) for status, body, _ in results if status == 201}) == 1
    assert await count_rows(api, "payments") == 1
    status, got, _ = await api.call("GET", f"/api/v1/orders/{order['id']}", token=staff)
    assert (got["status"], got["amount_paid"]) == ("pending_payment", 10000)


async def test_concurrent_manual_payments_never_pay_an_order_twice(api: Api, staff: str, customers: list[str]) -> None:
    await create_product(api, staff, sku="SOFA-1", name="Sofa", price=2000, stock=1)
    order = await place_order(api, customers[0], [{"sku": "SOFA-1", "quantity": 1}])
    results = await asyncio.gather(
        *(
            api.call(
                "POST",
                f"/api/v1/orders/{order['id']}/payments",
                json={"method": "manual", "reference": f"instalment {i}", "amount": 300},
                token=staff,
            )
            for i in range(20)
        )
    )
    statuses = collections.Counter(status for status, _, _ in results)
    # 6 x 300 = 1800; a seventh would be 2100, above the total of 2000.
    assert statuses == {201: 6, 422: 14}, statuses
    for status, body, _ in results:
        if status == 422:
            assert_error(status, body, 422, "amount_exceeds_balance")
            assert body["error"]["details"]["remaining"] in range(200, 2001, 300)
    status, got, _ = await api.call("GET", f"/api/v1/orders/{order['id']}", token=staff)
    assert (got["status"], got["amount_paid"]) == ("pending_payment", 1800)
    assert await count_rows(api, "payments") == 6
