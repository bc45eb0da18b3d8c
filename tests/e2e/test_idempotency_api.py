"""Idempotency-Key on every POST, over real HTTP: a repeated request replays the stored
answer byte for byte and has its effect once; keys are per caller; a key with another body
is refused; a request that wrote nothing can be retried; login and refresh ignore keys."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
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
    held_stripe,
    on_every_store,
    place_order,
    scalar,
    serve,
    stock_of,
    stored_time,
    write_behind,
)
from tests.fakes import FakePaymentGateway, FixedClock

pytestmark = on_every_store


@attrs.frozen
class Raw:
    status: int
    body: bytes
    headers: dict[str, str]


async def _raw(api: Api, method: str, path: str, *, token: str | None, key: str | None, json: Any = None) -> Raw:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None:
        headers["Idempotency-Key"] = key
    async with api.session.request(method, api.base + path, json=json, headers=headers) as response:
        return Raw(response.status, await response.read(), dict(response.headers))


@attrs.frozen
class Shop:
    staff: str
    alice: str
    bob: str
    mug: dict[str, Any]  # 1250, stock 10


@pytest.fixture
async def shop(api: Api) -> Shop:
    staff = await api.token_for("staff@example.com", "staff")
    alice = await api.token_for("alice@example.com")
    bob = await api.token_for("bob@example.com")
    mug = await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=10)
    return Shop(staff, alice, bob, mug)


ONE_MUG = {"items": [{"sku": "MUG-1", "quantity": 1}]}
TWO_MUGS = {"items": [{"sku": "MUG-1", "quantity": 2}]}


async def test_the_same_key_and_body_replay_the_stored_answer_byte_for_byte(api: Api, shop: Shop) -> None:
    first = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="order-1", json=ONE_MUG)
    assert first.status == 201, first.body
    assert "Idempotent-Replayed" not in first.headers
    for _ in range(2):
        again = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="order-1", json=ONE_MUG)
        assert again.status == 201
        assert again.body == first.body
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["Location"] == first.headers["Location"]
        assert again.headers["Content-Type"] == first.headers["Content-Type"]
        assert again.headers["X-Request-ID"] != first.headers["X-Request-ID"]  # a new request all the same
    # The same JSON spelled differently is the same request.
    same = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="order-1", json={"items": [{"quantity": 1, "sku": "MUG-1"}]})  # fmt: skip
    assert same.status == 201 and same.body == first.body
    assert await count_rows(api, "orders") == 1
    assert await stock_of(api, shop.mug["id"]) == 9
    assert await count_rows(api, "idempotency_keys") == 1


async def test_the_same_key_with_another_request_is_refused(api: Api, shop: Shop) -> None:
    first = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="k", json=ONE_MUG)
    assert first.status == 201
    status, body, _ = await api.call(
        "POST",
        "/api/v1/orders",
        json={"items": [{"sku": "MUG-1", "quantity": 2}]},
        token=shop.alice,
        headers={"Idempotency-Key": "k"},
    )
    assert_error(status, body, 422, "idempotency_key_reused")
    # Another path with the same key and no body is another request too.
    status, body, _ = await api.call(
        "POST", "/api/v1/orders/ord_x/cancel", json={}, token=shop.alice, headers={"Idempotency-Key": "k"}
    )
    assert_error(status, body, 422, "idempotency_key_reused")
    assert await count_rows(api, "orders") == 1
    assert await stock_of(api, shop.mug["id"]) == 9


async def test_keys_belong_to_their_caller(api: Api, shop: Shop) -> None:
    alices = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="shared", json=ONE_MUG)
    bobs = await _raw(api, "POST", "/api/v1/orders", token=shop.bob, key="shared", json=ONE_MUG)
    assert (alices.status, bobs.status) == (201, 201)
    assert "Idempotent-Replayed" not in bobs.headers
    assert alices.headers["Location"] != bobs.headers["Location"]
    assert await count_rows(api, "orders") == 2
    assert await stock_of(api, shop.mug["id"]) == 8
    # And each still replays their own.
    again = await _raw(api, "POST", "/api/v1/orders", token=shop.bob, key="shared", json=ONE_MUG)
    assert again.body == bobs.body and again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("key", ["k" * 256, "two words", "", "café"], ids=["256 chars", "space", "empty", "not ASCII"])
async def test_malformed_keys_are_refused(api: Api, shop: Shop, key: str) -> None:
    status, body, _ = await api.call(
        "POST", "/api/v1/orders", json=ONE_MUG, token=shop.alice, headers={"Idempotency-Key": key}
    )
    assert_error(status, body, 422, "validation_failed")
    assert body["error"]["details"] == {
        "fields": {"Idempotency-Key": "must be 1-255 printable characters without spaces"}
    }
    assert await count_rows(api, "orders") == 0
    assert await count_rows(api, "idempotency_keys") == 0


async def test_a_key_of_255_characters_is_fine(api: Api, shop: Shop) -> None:
    key = "k" * 254 + "~"
    first = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key=key, json=ONE_MUG)
    again = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key=key, json=ONE_MUG)
    assert (first.status, again.status) == (201, 201)
    assert again.body == first.body
    assert await count_rows(api, "orders") == 1


async def test_a_request_that_wrote_nothing_can_be_retried_with_the_same_key(api: Api, shop: Shop) -> None:
    bad = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="retry", json={"items": [{"sku": "MUG-1", "quantity": 0}]})  # fmt: skip
    assert bad.status == 422
    unknown = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="retry", json={"items": [{"sku": "MUG-9", "quantity": 1}]})  # fmt: skip
    assert unknown.status == 422
    short = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="retry", json={"items": [{"sku": "MUG-1", "quantity": 11}]})  # fmt: skip
    assert short.status == 409
    assert await count_rows(api, "idempotency_keys") == 0
    fixed = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="retry", json=ONE_MUG)
    assert fixed.status == 201 and "Idempotent-Replayed" not in fixed.headers
    assert await count_rows(api, "orders") == 1
    # From now on the key is the fixed request's.
    again = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="retry", json={"items": [{"sku": "MUG-1", "quantity": 0}]})  # fmt: skip
    assert again.status == 422  # the body is checked before the key
    other = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="retry", json={"items": [{"sku": "MUG-1", "quantity": 2}]})  # fmt: skip
    assert other.status == 422 and b"idempotency_key_reused" in other.body


async def test_every_post_honours_the_key(api: Api, shop: Shop) -> None:
    """Payments, refunds, cancellation, fulfilment, the catalog, stock: one effect each."""
    order = await place_order(api, shop.alice, ONE_MUG["items"])
    oid = order["id"]
    calls: list[tuple[str, str, dict[str, Any] | None, str]] = [
        ("/api/v1/products", shop.staff, {"sku": "CUP-1", "name": "Cup", "price": 100, "stock": 4}, "products"),
        (f"/api/v1/products/{shop.mug['id']}/stock", shop.staff, {"delta": 5, "reason": "delivery"}, "audit_log"),
        (f"/api/v1/orders/{oid}/payments", shop.staff, {"method": "manual", "reference": "cash", "amount": 250}, "payments"),
        (f"/api/v1/orders/{oid}/payments", shop.staff, {"method": "manual", "reference": "cash"}, "payments"),
        (f"/api/v1/orders/{oid}/fulfil", shop.staff, None, "outbox"),
        (f"/api/v1/orders/{oid}/refunds", shop.staff, {"amount": 100, "reason": "dent"}, "refunds"),
    ]  # fmt: skip
    for path, token, body, table in calls:
        before = await count_rows(api, table)
        first = await _raw(api, "POST", path, token=token, key=f"key {path} {body}".replace(" ", "-"), json=body)
        assert first.status in (200, 201), first.body
        middle = await count_rows(api, table)
        assert middle > before, path
        again = await _raw(api, "POST", path, token=token, key=f"key {path} {body}".replace(" ", "-"), json=body)
        assert (again.status, again.body, again.headers["Idempotent-Replayed"]) == (first.status, first.body, "true")
        assert await count_rows(api, table) == middle, path
    assert await stock_of(api, shop.mug["id"]) == 14
    status, got, _ = await api.call("GET", f"/api/v1/orders/{oid}", token=shop.alice)
    assert (got["status"], got["amount_paid"], got["amount_refunded"]) == ("partially_refunded", 1250, 100)


async def test_cancel_with_a_key_releases_the_stock_once(api: Api, shop: Shop) -> None:
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 4}])
    path = f"/api/v1/orders/{order['id']}/cancel"
    first = await _raw(api, "POST", path, token=shop.alice, key="cancel-1", json={"reason": "oops"})
    again = await _raw(api, "POST", path, token=shop.alice, key="cancel-1", json={"reason": "oops"})
    assert (first.status, again.status) == (200, 200) and again.body == first.body
    assert await stock_of(api, shop.mug["id"]) == 10
    # Without the key, the second cancellation is an honest 409.
    status, body, _ = await api.call("POST", path, json={"reason": "oops"}, token=shop.alice)
    assert_error(status, body, 409, "invalid_order_state")


async def test_anonymous_callers_keys_are_scoped_to_their_address(api: Api, shop: Shop) -> None:
    body = {"email": "new@example.com", "password": "a long enough passphrase"}
    first = await _raw(api, "POST", "/api/v1/auth/register", token=None, key="signup", json=body)
    again = await _raw(api, "POST", "/api/v1/auth/register", token=None, key="signup", json=body)
    assert (first.status, again.status) == (201, 201)
    assert again.body == first.body and again.headers["Idempotent-Replayed"] == "true"
    assert await count_rows(api, "users", "email = ?", ("new@example.com",)) == 1
    # Without the key it is an honest conflict.
    status, answer, _ = await api.call("POST", "/api/v1/auth/register", json=body)
    assert_error(status, answer, 409, "email_taken")


async def test_login_and_refresh_ignore_the_key(api: Api, shop: Shop) -> None:
    credentials = {"email": "alice@example.com", "password": "correct battery horse staple"}
    one = await _raw(api, "POST", "/api/v1/auth/login", token=None, key="login", json=credentials)
    two = await _raw(api, "POST", "/api/v1/auth/login", token=None, key="login", json=credentials)
    assert (one.status, two.status) == (200, 200)
    assert "Idempotent-Replayed" not in two.headers
    assert one.body != two.body  # two sessions: secrets are never stored nor replayed
    refresh = json.loads(one.body)["refresh_token"]
    first = await _raw(api, "POST", "/api/v1/auth/refresh", token=None, key="refresh", json={"refresh_token": refresh})
    second = await _raw(api, "POST", "/api/v1/auth/refresh", token=None, key="refresh", json={"refresh_token": refresh})
    assert first.status == 200 and "Idempotent-Replayed" not in first.headers
    # The replay of a spent refresh token is refused (and revokes its family), not replayed.
    assert second.status == 401 and b"refresh_token_reused" in second.body
    assert await count_rows(api, "idempotency_keys") == 0


async def test_the_openapi_document_says_which_posts_take_a_key(api: Api) -> None:
    status, document, _ = await api.call("GET", "/api/v1/openapi.json")
    assert status == 200

    def takes_key(path: str) -> bool:
        parameters = document["paths"][path]["post"].get("parameters", [])
        return any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in parameters)

    assert not takes_key("/api/v1/auth/login")
    assert not takes_key("/api/v1/auth/refresh")
    assert not takes_key("/api/v1/webhooks/stripe")  # Stripe's event ids do that job
    for path in (
        "/api/v1/orders",
        "/api/v1/orders/{order_id}/payments",
        "/api/v1/orders/{order_id}/refunds",
        "/api/v1/orders/{order_id}/cancel",
        "/api/v1/orders/{order_id}/fulfil",
        "/api/v1/auth/register",
    ):
        assert takes_key(path), path


async def test_keys_are_forgotten_after_24_hours(api: Api, shop: Shop) -> None:
    first = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="old", json=ONE_MUG)
    assert first.status == 201
    day_ago = datetime.now(UTC) - timedelta(hours=24, seconds=5)
    await write_behind(api, "UPDATE idempotency_keys SET created_at = ?", day_ago)  # another process's view
    # Expired: the same key is a new request, with any body.
    second = await _raw(api, "POST", "/api/v1/orders", token=shop.alice, key="old", json={"items": [{"sku": "MUG-1", "quantity": 2}]})  # fmt: skip
    assert second.status == 201 and "Idempotent-Replayed" not in second.headers
    assert await count_rows(api, "orders") == 2
    assert await stock_of(api, shop.mug["id"]) == 7
    await write_behind(api, "UPDATE idempotency_keys SET created_at = ?", day_ago)
    service = await api.container.idempotency_service()
    assert await service.purge_expired() == 1
    assert await count_rows(api, "idempotency_keys") == 0


async def test_keys_live_24_hours_by_the_servers_clock(tmp_path: Path, clock: MovableClock, store: Store) -> None:
    # Stamped and expired by the same (injected) clock: a key held by one and expired by
    # another would answer 409 forever, or be forgotten early.
    async with serve(tmp_path / "data", clock=clock, store=store) as api:
        staff = await api.token_for("staff@example.com", "staff")
        alice = await api.token_for("alice@example.com")
        mug = await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=10)
        before = clock.now()
        first = await _raw(api, "POST", "/api/v1/orders", token=alice, key="day", json=ONE_MUG)
        assert first.status == 201
        stamped = await scalar(api, "SELECT created_at FROM idempotency_keys WHERE key = 'day'")
        assert before <= stored_time(stamped) <= clock.now()

        clock.advance(hours=23, minutes=59)
        alice = await api.login("alice@example.com")  # the old token expired meanwhile
        held = await _raw(api, "POST", "/api/v1/orders", token=alice["access_token"], key="day", json=TWO_MUGS)
        assert held.status == 422 and json.loads(held.body)["error"]["code"] == "idempotency_key_reused"

        clock.advance(minutes=2)
        alice = await api.login("alice@example.com")
        again = await _raw(api, "POST", "/api/v1/orders", token=alice["access_token"], key="day", json=TWO_MUGS)
        assert again.status == 201 and "Idempotent-Replayed" not in again.headers
        assert await count_rows(api, "orders") == 2
        assert await stock_of(api, mug["id"]) == 7
        restamped = await scalar(api, "SELECT created_at FROM idempotency_keys WHERE key = 'day'")
        assert stored_time(restamped) >= before + timedelta(hours=24, minutes=1)

        clock.advance(hours=24, seconds=1)
        service = await api.container.idempotency_service()
        assert await service.purge_expired() == 1
        assert await count_rows(api, "idempotency_keys") == 0


async def test_a_copy_that_arrives_while_the_first_is_running_is_409(
    tmp_path: Path, localstripe_url: str, store: Store
) -> None:
    """A card payment is recorded before Stripe is called; while Stripe's answer is held back,
    the same key is in flight."""
    async with held_stripe(tmp_path / "data", localstripe_url, store=store) as (api, gateway):
        alice = await api.token_for("alice@example.com")
        staff = await api.token_for("staff@example.com", "staff")
        await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=10)
        order = await place_order(api, alice, ONE_MUG["items"])
        path = f"/api/v1/orders/{order['id']}/payments"
        card = {"method": "card", "payment_method": "pm_card_visa"}
        first = asyncio.create_task(_raw(api, "POST", path, token=alice, key="pay-once", json=card))
        await asyncio.wait_for(gateway.answers.get(), 10)
        status, body, headers = await api.call(
            "POST", path, json=card, token=alice, headers={"Idempotency-Key": "pay-once"}
        )
        assert_error(status, body, 409, "idempotency_key_in_flight")
        assert "Idempotent-Replayed" not in headers
        gateway.release.set()
        done = await asyncio.wait_for(first, 10)
        assert done.status == 201, done.body
        again = await _raw(api, "POST", path, token=alice, key="pay-once", json=card)
        assert (again.status, again.body, again.headers["Idempotent-Replayed"]) == (201, done.body, "true")
        assert await count_rows(api, "payments") == 1
        status, got, _ = await api.call("GET", f"/api/v1/orders/{order['id']}", token=alice)
        assert (got["status"], got["amount_paid"]) == ("paid", 1250)


async def test_a_key_whose_request_broke_after_its_effect_answers_the_500(tmp_path: Path, store: Store) -> None:
    gateway = FakePaymentGateway(FixedClock())
    async with serve(tmp_path / "data", gateway=gateway, store=store) as api:
        admin = await api.token_for("admin@example.com", "admin")
        customer = await api.token_for("cust@example.com")
        product = await create_product(api, admin)
        order = await place_order(api, customer, [{"product_id": product["id"], "quantity": 1}])
        status, _, _ = await api.call(
            "POST",
            f"/api/v1/orders/{order['id']}/payments",
            json={"method": "card", "payment_method": "pm_card_visa"},
            token=customer,
        )
        assert status == 201

        async def broken(**_: object) -> None:
            raise RuntimeError("unexpected error inside the provider's SDK")

        real_refund = gateway.refund
        gateway.refund = broken  # type: ignore[method-assign,assignment]
        key = {"Idempotency-Key": "refund-1"}
        status, body, _ = await api.call(
            "POST", f"/api/v1/orders/{order['id']}/refunds", json={"reason": "x"}, token=admin, headers=key
        )
        assert_error(status, body, 500, "internal_error")
        gateway.refund = real_refund  # type: ignore[method-assign]
        # The refund was reserved before the call broke: the key's answer is that 500, not
        # "in flight" for a day, and no second refund is reserved by the retry.
        status, again, headers = await api.call(
            "POST", f"/api/v1/orders/{order['id']}/refunds", json={"reason": "x"}, token=admin, headers=key
        )
        assert (status, headers["Idempotent-Replayed"]) == (500, "true")
        assert again["error"]["code"] == "internal_error"
        assert await count_rows(api, "refunds") == 1
