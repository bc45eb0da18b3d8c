"""Bodies built to be expensive: each is refused with at most 20 problems, writes nothing,
and never holds the server (bench/hostile_bodies.py measures the CPU each one costs)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.e2e.conftest import Api, assert_error, count_rows, create_product, on_every_store, stock_of

pytestmark = on_every_store

JSON = {"Content-Type": "application/json"}
FLOOD = json.dumps({"items": [{}] * 200_000}, separators=(",", ":"))  # 586 KiB: under the body limit


@pytest.fixture
async def shop(api: Api) -> dict[str, Any]:
    staff = await api.token_for("staff@example.com", "staff")
    product = await create_product(api, staff, sku="MUG-1", stock=10)
    customer = await api.token_for("customer@example.com")
    return {"staff": staff, "customer": customer, "product": product}


async def _nothing_written(api: Api, product_id: str) -> None:
    assert await count_rows(api, "orders") == 0
    assert await count_rows(api, "idempotency_keys") == 0
    assert await stock_of(api, product_id) == 10


async def test_two_hundred_thousand_empty_lines_are_refused_with_twenty_problems(
    api: Api, shop: dict[str, Any]
) -> None:
    assert len(FLOOD) < 600 * 1024
    status, body, _ = await api.call(
        "POST",
        "/api/v1/orders",
        data=FLOOD,
        headers={**JSON, "Idempotency-Key": "flood-1"},
        token=shop["customer"],
    )
    assert_error(status, body, 422, "validation_failed")
    details = body["error"]["details"]
    assert details["truncated"] is True
    assert len(details["fields"]) == 20
    assert details["fields"]["items"] == "must have at most 100 items"
    assert details["fields"]["items[0].quantity"] == "is required"
    await _nothing_written(api, shop["product"]["id"])


async def test_health_answers_during_a_flood_of_such_bodies(api: Api, shop: dict[str, Any]) -> None:
    stop = asyncio.Event()
    refused: list[int] = []

    async def flood() -> None:
        while not stop.is_set():
            status, body, _ = await api.call("POST", "/api/v1/orders", data=FLOOD, headers=JSON, token=shop["customer"])
            assert_error(status, body, 422, "validation_failed")
            refused.append(status)

    flooders = [asyncio.create_task(flood()) for _ in range(4)]
    try:
        # Health checks one after another while four clients keep sending floods: each
        # answers in its turn (before the fix, each waited ~33 s behind one flood body).
        # The checks run until floods were refused meanwhile, so they did overlap.
        checks = 0
        async with asyncio.timeout(60):
            while checks < 20 or len(refused) < 8:
                status, body, _ = await api.call("GET", "/healthz")
                assert (status, body) == (200, {"status": "ok"})
                checks += 1
                for task in flooders:
                    if task.done():
                        task.result()  # a flood that failed fails the test
    finally:
        stop.set()
        await asyncio.gather(*flooders)
    assert len(refused) >= 8
    await _nothing_written(api, shop["product"]["id"])


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        # Tens of thousands of unknown fields (just under 1 MiB).
        (
            "/cancel",
            {f"field{i}": 0 for i in range(60_000)},
            {f"field{i}": "is not a field of this request" for i in range(20)},
        ),
        # A string a thousand times too long.
        ("/cancel", {"reason": "x" * 500_000}, {"reason": "must have at most 500 characters"}),
        # A name longer than any field.
        ("/cancel", {"n" * 100_000: 1}, {"n" * 64 + "…": "is not a field of this request"}),
    ],
    ids=["many-fields", "long-string", "long-name"],
)
async def test_hostile_shapes_get_bounded_answers(
    api: Api, shop: dict[str, Any], path: str, body: dict[str, Any], expected: dict[str, str]
) -> None:
    order = await _order(api, shop)
    status, answer, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}{path}", data=json.dumps(body), headers=JSON, token=shop["customer"]
    )
    assert_error(status, answer, 422, "validation_failed")
    assert answer["error"]["details"]["fields"] == expected
    assert answer["error"]["details"].get("truncated", False) is (len(body) > 20)
    status, still, _ = await api.call("GET", f"/api/v1/orders/{order['id']}", token=shop["customer"])
    assert still["status"] == "pending_payment"
    assert await stock_of(api, shop["product"]["id"]) == 9


async def test_deep_nesting_is_refused_in_the_envelope(api: Api, shop: dict[str, Any]) -> None:
    nested = "[" * 1_000 + "]" * 1_000  # within the JSON parser's depth limit (1,024)
    raw = '{"items": [' + nested + "]}"
    status, body, _ = await api.call("POST", "/api/v1/orders", data=raw, headers=JSON, token=shop["customer"])
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"]["fields"] == {"items[0]": "must be an object"}
    deeper = '{"items": [' + "[" * 2_000 + "]" * 2_000 + "]}"
    status, body, _ = await api.call("POST", "/api/v1/orders", data=deeper, headers=JSON, token=shop["customer"])
    assert_error(status, body, 400, "malformed_json")
    await _nothing_written(api, shop["product"]["id"])


async def _order(api: Api, shop: dict[str, Any]) -> dict[str, Any]:
    status, order, _ = await api.call(
        "POST",
        "/api/v1/orders",
        json={"items": [{"product_id": shop["product"]["id"], "quantity": 1}]},
        token=shop["customer"],
    )
    assert status == 201, order
    return order
