"""Stripe's webhooks over real HTTP: events that localstripe itself signs and delivers to the
running server, and events signed here by Stripe's documented scheme
(``Stripe-Signature: t=<unix>,v1=<HMAC-SHA256 of "t.body">``) for what localstripe does not
send. Whatever the order of the API's answer and the webhooks, an order changes once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest
import stripe

from tests.e2e.conftest import (
    Api,
    Store,
    assert_error,
    count_rows,
    create_product,
    held_stripe,
    on_every_store,
    place_order,
    rows,
    scalar,
    webhooks_to,
)
from tests.localstripe.fixtures import (
    THREE_D_SECURE_CARD,
    WEBHOOK_SECRET,
    authenticate_payment,
    create_card_payment_method,
)

pytestmark = on_every_store

WEBHOOK = "/api/v1/webhooks/stripe"


def stripe_event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    event = {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }
    return json.dumps(event).encode()


def sign(payload: bytes, *, timestamp: int | None = None, secret: str = WEBHOOK_SECRET) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, timestamp)


async def deliver(api: Api, payload: bytes, signature: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    status, body, _ = await api.call("POST", WEBHOOK, data=payload, headers=headers)
    return status, body


def intent_succeeded(reference: str, amount: int, **metadata: str) -> dict[str, Any]:
    return {
        "id": reference,
        "object": "payment_intent",
        "status": "succeeded",
        "amount": amount,
        "currency": "usd",
        "metadata": metadata,
    }


@attrs.frozen
class Shop:
    staff: str
    alice: str


async def _shop(api: Api) -> Shop:
    staff = await api.token_for("staff@example.com", "staff")
    alice = await api.token_for("alice@example.com")
    await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=20)
    return Shop(staff, alice)


async def _pay(api: Api, token: str, order_id: str, payment_method: str) -> tuple[int, Any]:
    status, body, _ = await api.call(
        "POST",
        f"/api/v1/orders/{order_id}/payments",
        json={"method": "card", "payment_method": payment_method},
        token=token,
    )
    return status, body


async def _order_row(api: Api, order_id: str) -> tuple[str, int, int]:
    row = (await rows(api, "SELECT status, amount_paid, amount_refunded FROM orders WHERE id = ?", order_id))[0]
    return row[0], row[1], row[2]


async def _events(api: Api, kind: str, aggregate_id: str) -> int:
    return await count_rows(api, "outbox", "type = ? AND aggregate_id = ?", (kind, aggregate_id))


# Delivered by localstripe.
async def test_a_delivered_success_after_the_api_answer_changes_nothing_more(stripe_webhooks: Api) -> None:
    api = stripe_webhooks
    shop = await _shop(api)
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 2}])
    status, payment = await _pay(api, shop.alice, order["id"], "pm_card_visa")
    assert status == 201 and payment["status"] == "succeeded"
    assert await _order_row(api, order["id"]) == ("paid", 2500, 0)

    answer = await api.wait_for_webhook("payment_intent.succeeded", payment["provider_reference"])
    assert (answer.status, answer.body) == (200, {"received": True, "applied": True})
    assert await count_rows(api, "provider_events", "event_id = ?", (answer.event_id,)) == 1
    assert await _order_row(api, order["id"]) == ("paid", 2500, 0)  # paid once, not 5000
    assert await count_rows(api, "payments") == 1
    assert await _events(api, "order.paid", order["id"]) == 1
    assert await _events(api, "payment.succeeded", payment["id"]) == 1


async def test_a_3d_secure_payment_is_paid_by_the_delivered_webhook(stripe_webhooks: Api, localstripe_url: str) -> None:
    api = stripe_webhooks
    shop = await _shop(api)
    card = await create_card_payment_method(localstripe_url, THREE_D_SECURE_CARD)
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 1}])
    status, payment = await _pay(api, shop.alice, order["id"], card)
    assert status == 201 and payment["status"] == "requires_action"
    await authenticate_payment(localstripe_url, payment["provider_reference"], payment["client_secret"], success=True)

    answer = await api.wait_for_webhook("payment_intent.succeeded", payment["provider_reference"])
    assert (answer.status, answer.body) == (200, {"received": True, "applied": True})
    assert await _order_row(api, order["id"]) == ("paid", 1250, 0)
    status, payments, _ = await api.call("GET", f"/api/v1/orders/{order['id']}/payments", token=shop.alice)
    [now] = payments["data"]
    assert (now["id"], now["status"]) == (payment["id"], "succeeded")
    assert "next_action" not in now  # nothing left for the customer to do
    assert await _events(api, "order.paid", order["id"]) == 1


async def test_a_delivered_failure_after_the_decline_changes_nothing_more(stripe_webhooks: Api) -> None:
    api = stripe_webhooks
    shop = await _shop(api)
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 1}])
    status, body = await _pay(api, shop.alice, order["id"], "pm_card_chargeCustomerFail")
    assert_error(status, body, 402, "payment_failed")
    reference = await scalar(
        api, "SELECT provider_reference FROM payments WHERE id = ?", body["error"]["details"]["payment_id"]
    )
    answer = await api.wait_for_webhook("payment_intent.payment_failed", reference)
    assert answer.status == 200, answer
    assert await _order_row(api, order["id"]) == ("pending_payment", 0, 0)
    assert await scalar(api, "SELECT status FROM payments WHERE provider_reference = ?", reference) == "failed"
    assert await count_rows(api, "outbox", "type = 'payment.failed'") == 1


async def test_a_success_delivered_before_the_api_answer_pays_the_order_once(
    tmp_path: Path, localstripe_url: str, store: Store
) -> None:
    async with (
        held_stripe(tmp_path / "data", localstripe_url, store=store) as (api, gateway),
        webhooks_to(api, localstripe_url),
    ):
        shop = await _shop(api)
        order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 3}])
        paying = asyncio.create_task(_pay(api, shop.alice, order["id"], "pm_card_visa"))
        answer = await asyncio.wait_for(gateway.answers.get(), 10)
        # Stripe has charged; our payment is saved (processing) but knows no reference yet.
        assert await scalar(api, "SELECT status || ' ' || coalesce(provider_reference, '-') FROM payments") == (
            "processing -"
        )

        delivered = await api.wait_for_webhook("payment_intent.succeeded", answer.reference)
        assert (delivered.status, delivered.body) == (200, {"received": True, "applied": True})
        assert await _order_row(api, order["id"]) == ("paid", 3750, 0)
        assert await scalar(api, "SELECT provider_reference FROM payments") == answer.reference

        gateway.release.set()
        status, payment = await asyncio.wait_for(paying, 10)
        assert status == 201, payment
        assert (payment["status"], payment["provider_reference"]) == ("succeeded", answer.reference)
        assert await _order_row(api, order["id"]) == ("paid", 3750, 0)
        assert await count_rows(api, "payments") == 1
        assert await _events(api, "order.paid", order["id"]) == 1
        assert await _events(api, "payment.succeeded", payment["id"]) == 1
        assert await count_rows(api, "refunds") == 0  # nothing was taken twice, nothing to give back


# Signed here.
@pytest.fixture
async def shop(stripe_api: Api) -> Shop:
    return await _shop(stripe_api)


async def _awaiting_action(api: Api, shop: Shop, localstripe_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An order and its card payment that waits for 3-D Secure: only a webhook can settle it."""
    card = await create_card_payment_method(localstripe_url, THREE_D_SECURE_CARD)
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 2}])
    status, payment = await _pay(api, shop.alice, order["id"], card)
    assert status == 201 and payment["status"] == "requires_action"
    return order, payment


async def test_bad_signatures_are_400_and_change_nothing(stripe_api: Api, shop: Shop, localstripe_url: str) -> None:
    api = stripe_api
    order, payment = await _awaiting_action(api, shop, localstripe_url)
    payload = stripe_event("payment_intent.succeeded", intent_succeeded(payment["provider_reference"], 2500))
    now = int(time.time())
    tampered = payload.replace(b'"amount": 2500', b'"amount": 25')
    assert tampered != payload
    cases = {
        "no signature": (payload, None),
        "empty signature": (payload, ""),
        "garbage": (payload, "not a signature"),
        "another secret": (payload, sign(payload, secret="whsec_someone_else")),
        "tampered body": (tampered, sign(payload)),
        "another scheme": (payload, sign(payload).replace("v1=", "v0=")),
        "stale": (payload, sign(payload, timestamp=now - 301)),
        "not JSON": (b"payment_intent.succeeded", sign(b"payment_intent.succeeded")),
        "not UTF-8": (b"\xff\xfe{}", "t=1,v1=00"),
    }
    for case, (body, signature) in cases.items():
        status, answer = await deliver(api, body, signature)
        assert_error(status, answer, 400, "invalid_signature")
        assert answer["error"]["details"] == {}, case
    assert await _order_row(api, order["id"]) == ("pending_payment", 0, 0)
    assert await count_rows(api, "provider_events") == 0

    # Signed well and fresh enough (within 300 s), the same event is applied.
    status, answer = await deliver(api, payload, sign(payload, timestamp=now - 290))
    assert (status, answer) == (200, {"received": True, "applied": True})
    assert await _order_row(api, order["id"]) == ("paid", 2500, 0)


async def test_a_well_signed_body_that_is_not_an_event_is_refused(stripe_api: Api, shop: Shop) -> None:
    for payload in (b"{}", b'{"id": "evt_1", "type": "payment_intent.succeeded"}', b"[]", b"null"):
        status, answer = await deliver(stripe_api, payload, sign(payload))
        assert_error(status, answer, 400, "invalid_signature")
    assert await count_rows(stripe_api, "provider_events") == 0


async def test_an_unknown_event_type_is_200_and_ignored(stripe_api: Api, shop: Shop, localstripe_url: str) -> None:
    api = stripe_api
    order, payment = await _awaiting_action(api, shop, localstripe_url)
    for kind in ("customer.created", "payment_intent.created", "charge.dispute.created"):
        payload = stripe_event(kind, intent_succeeded(payment["provider_reference"], 2500))
        status, answer = await deliver(api, payload, sign(payload))
        assert (status, answer) == (200, {"received": True, "applied": False})
    assert await _order_row(api, order["id"]) == ("pending_payment", 0, 0)
    assert await count_rows(api, "provider_events") == 0
    assert await count_rows(api, "outbox", "type != 'order.created'") == 0


async def test_the_same_event_twice_is_applied_once(stripe_api: Api, shop: Shop, localstripe_url: str) -> None:
    api = stripe_api
    order, payment = await _awaiting_action(api, shop, localstripe_url)
    payload = stripe_event("payment_intent.succeeded", intent_succeeded(payment["provider_reference"], 2500))
    status, answer = await deliver(api, payload, sign(payload))
    assert (status, answer) == (200, {"received": True, "applied": True})
    assert await _order_row(api, order["id"]) == ("paid", 2500, 0)

    status, answer = await deliver(api, payload, sign(payload))  # Stripe retries with a new signature
    assert (status, answer) == (200, {"received": True, "applied": False})
    # Another event saying the same: applied (a new event) but the payment has already moved.
    other = stripe_event("payment_intent.succeeded", intent_succeeded(payment["provider_reference"], 2500))
    status, answer = await deliver(api, other, sign(other))
    assert (status, answer) == (200, {"received": True, "applied": True})
    # And a late failure cannot undo a success.
    failed = stripe_event(
        "payment_intent.payment_failed",
        {**intent_succeeded(payment["provider_reference"], 2500), "last_payment_error": {"code": "card_declined"}},
    )
    status, answer = await deliver(api, failed, sign(failed))
    assert (status, answer) == (200, {"received": True, "applied": True})

    assert await _order_row(api, order["id"]) == ("paid", 2500, 0)
    assert await _events(api, "order.paid", order["id"]) == 1
    assert await _events(api, "payment.succeeded", payment["id"]) == 1
    assert await count_rows(api, "outbox", "type = 'payment.failed'") == 0
    assert await count_rows(api, "provider_events") == 3
    status, payments, _ = await api.call("GET", f"/api/v1/orders/{order['id']}/payments", token=shop.alice)
    assert [p["status"] for p in payments["data"]] == ["succeeded"]


async def test_a_settled_payment_no_longer_shows_its_client_secret(
    stripe_api: Api, shop: Shop, localstripe_url: str
) -> None:
    api = stripe_api
    order, payment = await _awaiting_action(api, shop, localstripe_url)
    payload = stripe_event("payment_intent.succeeded", intent_succeeded(payment["provider_reference"], 2500))
    status, answer = await deliver(api, payload, sign(payload))
    assert (status, answer) == (200, {"received": True, "applied": True})
    status, payments, _ = await api.call("GET", f"/api/v1/orders/{order['id']}/payments", token=shop.alice)
    [now] = payments["data"]
    assert now["status"] == "succeeded"
    assert "client_secret" not in now and "next_action" not in now


async def test_an_event_about_a_payment_we_never_made_changes_nothing(stripe_api: Api, shop: Shop) -> None:
    api = stripe_api
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 1}])
    payload = stripe_event(
        "payment_intent.succeeded",
        intent_succeeded("pi_someone_elses", 1250, tillbox_payment_id="pay_nothing", tillbox_order_id=order["id"]),
    )
    status, answer = await deliver(api, payload, sign(payload))
    assert (status, answer) == (200, {"received": True, "applied": True})  # recorded, so a retry is a no-op
    assert await _order_row(api, order["id"]) == ("pending_payment", 0, 0)
    assert await count_rows(api, "payments") == 0


async def test_charge_refunded_counts_what_we_did_not_refund_ourselves_once(stripe_api: Api, shop: Shop) -> None:
    """localstripe never sends charge.refunded: these are signed here."""
    api = stripe_api
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 4}])
    status, payment = await _pay(api, shop.alice, order["id"], "pm_card_visa")
    assert status == 201 and payment["amount"] == 5000
    status, body, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/refunds", json={"amount": 1000, "reason": "Dent"}, token=shop.staff
    )
    assert status == 201, body

    def charge_refunded(total: int) -> bytes:
        charge = {
            "id": "ch_1",
            "object": "charge",
            "payment_intent": payment["provider_reference"],
            "amount": 5000,
            "amount_refunded": total,
            "currency": "usd",
        }
        return stripe_event("charge.refunded", charge)

    ours = charge_refunded(1000)  # the event about our own refund
    status, answer = await deliver(api, ours, sign(ours))
    assert (status, answer) == (200, {"received": True, "applied": True})
    assert await _order_row(api, order["id"]) == ("partially_refunded", 5000, 1000)
    assert await count_rows(api, "refunds") == 1

    dashboard = charge_refunded(1500)  # 500 more, refunded in Stripe's dashboard
    for applied in (True, False):
        status, answer = await deliver(api, dashboard, sign(dashboard))
        assert (status, answer) == (200, {"received": True, "applied": applied})
    assert await _order_row(api, order["id"]) == ("partially_refunded", 5000, 1500)
    status, refunds, _ = await api.call("GET", f"/api/v1/orders/{order['id']}/refunds", token=shop.staff)
    assert [(r["amount"], r["reason"], r["status"]) for r in refunds["data"]] == [
        (1000, "Dent", "succeeded"),
        (500, "Refunded at the payment provider.", "succeeded"),
    ]
    assert await count_rows(api, "outbox", "type = 'refund.created'") == 2
