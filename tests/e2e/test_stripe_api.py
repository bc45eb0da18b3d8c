"""Card payments and refunds through Stripe, over real HTTP, against localstripe: the server's
container is configured with localstripe's address, as an operator would configure Stripe's."""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
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
    rows,
    scalar,
    serve,
    stock_of,
    stripe_settings,
)
from tests.localstripe.fixtures import SECRET_KEY, THREE_D_SECURE_CARD, create_card_payment_method

pytestmark = on_every_store


@attrs.frozen
class Shop:
    staff: str
    alice: str
    mug: dict[str, Any]  # 1250, stock 20


@pytest.fixture
async def shop(stripe_api: Api) -> Shop:
    staff = await stripe_api.token_for("staff@example.com", "staff")
    alice = await stripe_api.token_for("alice@example.com")
    mug = await create_product(stripe_api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=20)
    return Shop(staff, alice, mug)


async def _pay_by_card(api: Api, token: str, order_id: str, payment_method: str, **kw: Any) -> tuple[int, Any, Any]:
    return await api.call(
        "POST",
        f"/api/v1/orders/{order_id}/payments",
        json={"method": "card", "payment_method": payment_method},
        token=token,
        **kw,
    )


async def _get(api: Api, token: str, path: str) -> Any:
    status, body, _ = await api.call("GET", path, token=token)
    assert status == 200, body
    return body


async def stripe_object(localstripe_url: str, path: str) -> dict[str, Any]:
    """What localstripe holds: the provider's side of the books."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{localstripe_url}/v1/{path}", headers={"Authorization": f"Bearer {SECRET_KEY}"}) as response,
    ):
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def test_a_card_payment_succeeds_and_pays_the_order(stripe_api: Api, shop: Shop, localstripe_url: str) -> None:
    api = stripe_api
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 3}])
    status, payment, _ = await _pay_by_card(api, shop.alice, order["id"], "pm_card_visa")
    assert status == 201, payment
    assert payment["provider_reference"].startswith("pi_")
    excluded = ("id", "created_at", "updated_at", "provider_reference")
    assert {k: v for k, v in payment.items() if k not in excluded} == {
        "order_id": order["id"],
        "method": "card",
        "provider": "stripe",
        "status": "succeeded",
        "amount": 3750,
        "currency": "USD",
        "reference": None,
        "failure_code": None,
    }  # and no client_secret: there is nothing left for the customer to do
    paid = await _get(api, shop.alice, f"/api/v1/orders/{order['id']}")
    assert (paid["status"], paid["amount_paid"], paid["amount_refunded"]) == ("paid", 3750, 0)
    assert await stock_of(api, shop.mug["id"]) == 17

    intent = await stripe_object(localstripe_url, f"payment_intents/{payment['provider_reference']}")
    assert (intent["status"], intent["amount"], intent["currency"]) == ("succeeded", 3750, "usd")
    assert intent["metadata"] == {"tillbox_payment_id": payment["id"], "tillbox_order_id": order["id"]}
    assert await scalar(api, "SELECT payment_method FROM payments WHERE id = ?", payment["id"]) == "pm_card_visa"
    assert await count_rows(api, "outbox", "type = 'order.paid'") == 1

    status, body, _ = await _pay_by_card(api, shop.alice, order["id"], "pm_card_visa")
    assert_error(status, body, 409, "invalid_order_state")
    assert body["error"]["details"] == {"status": "paid", "action": "pay"}
    assert await count_rows(api, "payments") == 1


async def test_a_declined_card_is_402_and_the_order_still_awaits_payment(stripe_api: Api, shop: Shop) -> None:
    api = stripe_api
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 1}])
    status, body, _ = await _pay_by_card(
        api, shop.alice, order["id"], "pm_card_chargeCustomerFail", headers={"Idempotency-Key": "pay-1"}
    )
    assert_error(status, body, 402, "payment_failed")
    details = body["error"]["details"]
    assert details["decline_code"] == "card_declined"
    assert details["payment_id"].startswith("pay_")
    now = await _get(api, shop.alice, f"/api/v1/orders/{order['id']}")
    assert (now["status"], now["amount_paid"]) == ("pending_payment", 0)
    payments = await _get(api, shop.alice, f"/api/v1/orders/{order['id']}/payments")
    [failed] = payments["data"]
    assert (failed["id"], failed["status"], failed["failure_code"]) == (
        details["payment_id"],
        "failed",
        "card_declined",
    )
    assert failed["provider_reference"].startswith("pi_")

    # The refusal was written (a failed payment), so the same key replays it.
    status, again, headers = await _pay_by_card(
        api, shop.alice, order["id"], "pm_card_chargeCustomerFail", headers={"Idempotency-Key": "pay-1"}
    )
    assert status == 402 and again == body and headers["Idempotent-Replayed"] == "true"
    assert await count_rows(api, "payments") == 1

    # Another card pays.
    status, payment, _ = await _pay_by_card(api, shop.alice, order["id"], "pm_card_visa")
    assert status == 201 and payment["status"] == "succeeded" and payment["id"] != details["payment_id"]
    now = await _get(api, shop.alice, f"/api/v1/orders/{order['id']}")
    assert (now["status"], now["amount_paid"]) == ("paid", 1250)


async def test_a_card_that_needs_3d_secure_answers_requires_action(
    stripe_api: Api, shop: Shop, localstripe_url: str
) -> None:
    api = stripe_api
    card = await create_card_payment_method(localstripe_url, THREE_D_SECURE_CARD)
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 2}])
    status, payment, _ = await _pay_by_card(api, shop.alice, order["id"], card)
    assert status == 201, payment
    assert (payment["status"], payment["amount"]) == ("requires_action", 2500)
    reference = payment["provider_reference"]
    assert payment["client_secret"].startswith(f"{reference}_secret_")
    assert payment["next_action"]["type"] == "use_stripe_sdk"
    now = await _get(api, shop.alice, f"/api/v1/orders/{order['id']}")
    assert (now["status"], now["amount_paid"]) == ("pending_payment", 0)
    intent = await stripe_object(localstripe_url, f"payment_intents/{reference}")
    assert intent["status"] == "requires_action"


async def test_an_unknown_payment_method_is_refused_and_charges_nothing(stripe_api: Api, shop: Shop) -> None:
    api = stripe_api
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 1}])
    status, body, _ = await _pay_by_card(api, shop.alice, order["id"], "pm_does_not_exist")
    assert_error(status, body, 422, "payment_request_invalid")
    assert body["error"]["details"]["provider_status"] == 404
    assert await scalar(api, "SELECT status FROM payments WHERE order_id = ?", order["id"]) == "failed"
    now = await _get(api, shop.alice, f"/api/v1/orders/{order['id']}")
    assert (now["status"], now["amount_paid"]) == ("pending_payment", 0)
    status, payment, _ = await _pay_by_card(api, shop.alice, order["id"], "pm_card_visa")
    assert status == 201 and payment["status"] == "succeeded"


async def test_refunds_through_stripe(stripe_api: Api, shop: Shop, localstripe_url: str) -> None:
    api = stripe_api
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 4}])
    status, payment, _ = await _pay_by_card(api, shop.alice, order["id"], "pm_card_visa")
    assert status == 201 and payment["amount"] == 5000

    status, body, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/refunds", json={"amount": 1200, "reason": "Chipped"}, token=shop.staff
    )
    assert status == 201, body
    [refund] = body["refunds"]
    assert (refund["payment_id"], refund["amount"], refund["status"]) == (payment["id"], 1200, "succeeded")
    reference = await scalar(api, "SELECT provider_reference FROM refunds WHERE id = ?", refund["id"])
    at_stripe = await stripe_object(localstripe_url, f"refunds/{reference}")
    assert (at_stripe["amount"], at_stripe["payment_intent"], at_stripe["status"]) == (
        1200,
        payment["provider_reference"],
        "succeeded",
    )
    now = await _get(api, shop.alice, f"/api/v1/orders/{order['id']}")
    assert (now["status"], now["amount_refunded"]) == ("partially_refunded", 1200)

    # localstripe would refund more than was charged; Tillbox does not ask it to.
    status, body, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/refunds", json={"amount": 3801, "reason": "All"}, token=shop.staff
    )
    assert_error(status, body, 422, "refund_exceeds_captured")
    assert body["error"]["details"] == {"refundable": 3800}
    status, body, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/refunds", json={"reason": "Returned"}, token=shop.staff
    )
    assert status == 201 and [r["amount"] for r in body["refunds"]] == [3800]
    now = await _get(api, shop.alice, f"/api/v1/orders/{order['id']}")
    assert (now["status"], now["amount_paid"], now["amount_refunded"]) == ("refunded", 5000, 5000)
    assert await count_rows(api, "refunds", "status = 'succeeded' AND provider_reference LIKE 're_%'") == 2


async def test_concurrent_card_refunds_never_exceed_the_charge(stripe_api: Api, shop: Shop) -> None:
    """localstripe has no refund limit: the reservation in Tillbox's own books is what holds."""
    api = stripe_api
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 4}])
    status, _, _ = await _pay_by_card(api, shop.alice, order["id"], "pm_card_visa")
    assert status == 201
    results = await asyncio.gather(
        *(
            api.call(
                "POST",
                f"/api/v1/orders/{order['id']}/refunds",
                json={"amount": 1250, "reason": "race"},
                token=shop.staff,
            )
            for _ in range(10)
        )
    )
    assert collections.Counter(status for status, _, _ in results) == {201: 4, 422: 6}
    for status, body, _ in results:
        if status == 422:
            assert_error(status, body, 422, "refund_exceeds_captured")
    now = await _get(api, shop.staff, f"/api/v1/orders/{order['id']}")
    assert (now["status"], now["amount_refunded"]) == ("refunded", 5000)
    assert await count_rows(api, "refunds") == 4


async def test_cancelling_a_card_paid_order_refunds_it_at_stripe(
    stripe_api: Api, shop: Shop, localstripe_url: str
) -> None:
    api = stripe_api
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 2}])
    status, payment, _ = await _pay_by_card(api, shop.alice, order["id"], "pm_card_visa")
    assert status == 201
    status, body, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/cancel", json={"reason": "Wrong colour"}, token=shop.alice
    )
    assert_error(status, body, 403, "cancel_needs_staff")  # paid: the shop decides (by default)
    status, cancelled, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/cancel", json={"reason": "Wrong colour"}, token=shop.staff
    )
    assert status == 200, cancelled
    assert (cancelled["status"], cancelled["amount_paid"], cancelled["amount_refunded"]) == ("cancelled", 2500, 2500)
    assert await stock_of(api, shop.mug["id"]) == 20
    reference = await scalar(api, "SELECT provider_reference FROM refunds WHERE order_id = ?", order["id"])
    at_stripe = await stripe_object(localstripe_url, f"refunds/{reference}")
    assert (at_stripe["amount"], at_stripe["payment_intent"]) == (2500, payment["provider_reference"])


async def test_another_customer_cannot_pay_an_order_by_card(stripe_api: Api, shop: Shop) -> None:
    api = stripe_api
    bob = await api.token_for("bob@example.com")
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 1}])
    status, body, _ = await _pay_by_card(api, bob, order["id"], "pm_card_visa")
    assert_error(status, body, 404, "order_not_found")
    assert await count_rows(api, "payments") == 0


async def test_concurrent_card_payments_of_one_order_pay_it_once(stripe_api: Api, shop: Shop) -> None:
    """The copies that find the first payment still processing retry that payment with its
    own Stripe idempotency key (localstripe ignores the key, so it may hold extra
    PaymentIntents; Stripe would not): Tillbox's books show one payment, paid once."""
    api = stripe_api
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 2}])
    results = await asyncio.gather(*(_pay_by_card(api, shop.alice, order["id"], "pm_card_visa") for _ in range(8)))
    statuses = collections.Counter(status for status, _, _ in results)
    assert set(statuses) <= {201, 409} and statuses[201] >= 1, results
    assert len({body["id"] for status, body, _ in results if status == 201}) == 1
    for status, body, _ in results:
        if status == 409:
            assert_error(status, body, 409, "invalid_order_state")
            assert body["error"]["details"]["status"] == "paid"
    now = await _get(api, shop.alice, f"/api/v1/orders/{order['id']}")
    assert (now["status"], now["amount_paid"]) == ("paid", 2500)
    assert await count_rows(api, "payments") == 1
    assert await count_rows(api, "outbox", "type = 'order.paid'") == 1


async def test_a_card_payment_that_succeeds_after_the_order_expired_is_refunded(
    tmp_path: Path, localstripe_url: str, clock: MovableClock, store: Store
) -> None:
    async with held_stripe(
        tmp_path / "data", localstripe_url, clock=clock, TILLBOX_ORDERS_EXPIRY_CHECK_SECONDS="1", store=store
    ) as (api, gateway):
        staff = await api.token_for("staff@example.com", "staff")
        alice = await api.token_for("alice@example.com")
        mug = await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=5)
        order = await place_order(api, alice, [{"sku": "MUG-1", "quantity": 2}])
        paying = asyncio.create_task(_pay_by_card(api, alice, order["id"], "pm_card_visa"))
        answer = await asyncio.wait_for(gateway.answers.get(), 10)
        clock.advance(minutes=31)  # Stripe's answer is slower than the order's deadline
        await api.housekeeping_round()  # the sweep after the deadline passed
        assert await scalar(api, "SELECT status FROM orders WHERE id = ?", order["id"]) == "expired"
        assert await stock_of(api, mug["id"]) == 5

        gateway.release.set()
        status, payment, _ = await asyncio.wait_for(paying, 10)
        assert status == 201 and payment["status"] == "succeeded"  # the money was taken: a fact
        row = await rows(api, "SELECT status, amount_paid, amount_refunded FROM orders WHERE id = ?", order["id"])
        assert row == [("expired", 2500, 2500)]  # and given back at once
        [(amount, refund_status, reason, reference)] = await rows(
            api, "SELECT amount, status, reason, provider_reference FROM refunds WHERE order_id = ?", order["id"]
        )
        assert (amount, refund_status) == (2500, "succeeded")
        assert reason == "Paid after the order no longer needed it; returned automatically."
        at_stripe = await stripe_object(localstripe_url, f"refunds/{reference}")
        assert (at_stripe["amount"], at_stripe["payment_intent"]) == (2500, answer.reference)
        assert await stock_of(api, mug["id"]) == 5  # the stock stays released
        assert await count_rows(api, "audit_log", "action = 'payment.surplus' AND object_id = ?", (order["id"],)) == 1


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port bound and never listened on, held for the whole test: connections to it are
    refused, and no other process can start listening there meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_an_unreachable_provider_fails_fast_and_nothing_else_does(
    tmp_path: Path, refusing_port: int, store: Store
) -> None:
    settings = {
        **stripe_settings(f"http://127.0.0.1:{refusing_port}"),
        "TILLBOX_STRIPE_RETRY_ATTEMPTS": "1",
        "TILLBOX_STRIPE_BREAKER_THRESHOLD": "2",
        "TILLBOX_STRIPE_BREAKER_RESET_SECONDS": "60",
    }
    async with serve(tmp_path / "data", store=store, **settings) as api:
        staff = await api.token_for("staff@example.com", "staff")
        alice = await api.token_for("alice@example.com")
        mug = await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=5)
        order = await place_order(api, alice, [{"sku": "MUG-1", "quantity": 1}])
        for _ in range(3):  # two failures open the breaker; the third does not try
            status, body, headers = await _pay_by_card(api, alice, order["id"], "pm_card_visa")
            assert_error(status, body, 503, "payment_provider_unavailable")
            assert int(headers["Retry-After"]) >= 1
            assert body["error"]["details"]["retry_after"] == int(headers["Retry-After"])
        assert int(headers["Retry-After"]) > 50  # the breaker's own wait, not a network timeout's
        # One attempt, retried each time with its own idempotency key: never a second payment.
        assert await rows(api, "SELECT status FROM payments") == [("processing",)]
        status, got, _ = await api.call("GET", f"/api/v1/orders/{order['id']}", token=alice)
        assert (got["status"], got["amount_paid"]) == ("pending_payment", 0)
        # A 503 under an Idempotency-Key is not the key's answer for 24 hours: a retry with
        # the same key runs again (reusing the saved payment), so it is never replayed.
        keyed = {"Idempotency-Key": "pay-once", "Authorization": f"Bearer {alice}"}
        for _ in range(2):
            status, body, headers = await api.call(
                "POST",
                f"/api/v1/orders/{order['id']}/payments",
                json={"method": "card", "payment_method": "pm_card_visa"},
                headers=keyed,
            )
            assert_error(status, body, 503, "payment_provider_unavailable")
            assert "Idempotent-Replayed" not in headers
        assert await scalar(api, "SELECT count(*) FROM idempotency_keys") == 0
        assert await rows(api, "SELECT status FROM payments") == [("processing",)]
        # Everything else keeps serving.
        status, products, _ = await api.call("GET", "/api/v1/products")
        assert status == 200 and [p["id"] for p in products["data"]] == [mug["id"]]
        # Paid at the till; a refund while Stripe is down is for the till's payment: at once.
        status, body, _ = await api.call(
            "POST",
            f"/api/v1/orders/{order['id']}/payments",
            json={"method": "manual", "reference": "paid at the till"},
            token=staff,
        )
        assert status == 201, body
        status, got, _ = await api.call("GET", f"/api/v1/orders/{order['id']}", token=alice)
        assert (got["status"], got["amount_paid"]) == ("paid", 1250)


async def test_a_store_may_let_customers_cancel_orders_paid_by_card_only(
    tmp_path: Path, localstripe_url: str, store: Store
) -> None:
    settings = {"TILLBOX_ORDERS_CUSTOMERS_CANCEL_PAID_CARD_ORDERS": "true", **stripe_settings(localstripe_url)}
    async with serve(tmp_path / "data", store=store, **settings) as api:
        staff = await api.token_for("staff@example.com", "staff")
        alice = await api.token_for("alice@example.com")
        mug = await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=20)
        by_card = await place_order(api, alice, [{"sku": "MUG-1", "quantity": 2}])
        status, _, _ = await _pay_by_card(api, alice, by_card["id"], "pm_card_visa")
        assert status == 201
        status, cancelled, _ = await api.call("POST", f"/api/v1/orders/{by_card['id']}/cancel", json={}, token=alice)
        assert status == 200, cancelled
        assert (cancelled["status"], cancelled["amount_refunded"]) == ("cancelled", 2500)

        # A cash payment is handed back by staff: the customer still cannot cancel such an order.
        in_cash = await place_order(api, alice, [{"sku": "MUG-1", "quantity": 1}])
        status, _, _ = await api.call(
            "POST",
            f"/api/v1/orders/{in_cash['id']}/payments",
            json={"method": "manual", "reference": "till 3", "amount": 500},
            token=staff,
        )
        assert status == 201
        refunds_before = await count_rows(api, "refunds")
        status, body, _ = await api.call("POST", f"/api/v1/orders/{in_cash['id']}/cancel", json={}, token=alice)
        assert_error(status, body, 403, "cancel_needs_staff")
        status, order, _ = await api.call("GET", f"/api/v1/orders/{in_cash['id']}", token=alice)
        assert (order["status"], order["amount_paid"], order["amount_refunded"]) == ("pending_payment", 500, 0)
        assert await count_rows(api, "refunds") == refunds_before
        assert await stock_of(api, mug["id"]) == 19  # the cash order still holds its unit
