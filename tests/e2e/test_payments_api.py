"""Payments and refunds over real HTTP, without a card provider: manual payments that staff
record, refunds, the audit log and the outbox rows they write, and card payments answering
503 while Stripe is not configured."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from entrypoints.container import provide
from tests.e2e.conftest import (
    Api,
    Store,
    assert_error,
    count_rows,
    create_product,
    on_every_store,
    place_order,
    rows,
    scalar,
    serve,
    stock_of,
)
from tests.fakes import FakePaymentGateway, FixedClock

pytestmark = on_every_store


@attrs.frozen
class Shop:
    admin_id: str
    admin: str
    staff_id: str
    staff: str
    alice: str
    mug: dict[str, Any]  # 1250, stock 10
    tea: dict[str, Any]  # 399, stock 10


@pytest.fixture
async def shop(api: Api) -> Shop:
    admin_id, admin = await api.account("admin@example.com", "admin")
    staff_id, staff = await api.account("staff@example.com", "staff")
    alice = await api.token_for("alice@example.com")
    mug = await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=10)
    tea = await create_product(api, staff, sku="TEA-1", name="Green tea", price=399, stock=10)
    return Shop(admin_id, admin, staff_id, staff, alice, mug, tea)


async def _order(api: Api, shop: Shop) -> dict[str, Any]:
    """An order of 3697: two mugs and three teas."""
    order = await place_order(api, shop.alice, [{"sku": "MUG-1", "quantity": 2}, {"sku": "TEA-1", "quantity": 3}])
    assert order["total"] == 3697
    return order


async def _pay(api: Api, token: str, order_id: str, **body: Any) -> tuple[int, Any]:
    status, answer, _ = await api.call(
        "POST", f"/api/v1/orders/{order_id}/payments", json={"method": "manual", **body}, token=token
    )
    return status, answer


async def _refund(api: Api, token: str, order_id: str, **body: Any) -> tuple[int, Any]:
    status, answer, _ = await api.call("POST", f"/api/v1/orders/{order_id}/refunds", json=body, token=token)
    return status, answer


async def _get(api: Api, token: str, order_id: str) -> dict[str, Any]:
    status, order, _ = await api.call("GET", f"/api/v1/orders/{order_id}", token=token)
    assert status == 200, order
    return order


# Manual payments.
async def test_manual_payments_are_for_staff_only(api: Api, shop: Shop) -> None:
    order = await _order(api, shop)
    status, body = await _pay(api, shop.alice, order["id"], reference="I paid, honest")
    assert_error(status, body, 403, "forbidden")
    assert await count_rows(api, "payments") == 0
    assert (await _get(api, shop.alice, order["id"]))["amount_paid"] == 0


async def test_partial_manual_payments_add_up_to_paid(api: Api, shop: Shop) -> None:
    order = await _order(api, shop)
    status, first = await _pay(api, shop.staff, order["id"], reference="cash 1", amount=1000)
    assert status == 201, first
    assert first["id"].startswith("pay_")
    assert first["updated_at"] == first["created_at"]
    assert {k: v for k, v in first.items() if k not in ("id", "created_at", "updated_at")} == {
        "order_id": order["id"],
        "method": "manual",
        "provider": "manual",
        "status": "succeeded",
        "amount": 1000,
        "currency": "USD",
        "provider_reference": None,
        "reference": "cash 1",
        "failure_code": None,
    }
    now = await _get(api, shop.alice, order["id"])
    assert (now["status"], now["amount_paid"]) == ("pending_payment", 1000)
    assert now["expires_at"] is None  # money was taken: the order no longer expires by itself

    status, second = await _pay(api, shop.staff, order["id"], reference="transfer 2", amount=2000)
    assert status == 201 and second["amount"] == 2000
    assert (await _get(api, shop.alice, order["id"]))["status"] == "pending_payment"

    # No amount: the balance due.
    status, last = await _pay(api, shop.staff, order["id"], reference="cash 3")
    assert status == 201 and last["amount"] == 697
    paid = await _get(api, shop.alice, order["id"])
    assert (paid["status"], paid["amount_paid"], paid["amount_refunded"]) == ("paid", 3697, 0)

    status, listed, _ = await api.call("GET", f"/api/v1/orders/{order['id']}/payments", token=shop.alice)
    assert status == 200
    assert [(p["id"], p["amount"]) for p in listed["data"]] == [
        (first["id"], 1000),
        (second["id"], 2000),
        (last["id"], 697),
    ]

    status, body = await _pay(api, shop.staff, order["id"], reference="one more")
    assert_error(status, body, 409, "invalid_order_state")
    assert body["error"]["details"] == {"status": "paid", "action": "pay"}
    assert await count_rows(api, "payments") == 3
    assert await scalar(api, "SELECT amount_paid FROM orders WHERE id = ?", order["id"]) == 3697


async def test_a_payment_above_the_balance_is_refused(api: Api, shop: Shop) -> None:
    order = await _order(api, shop)
    status, body = await _pay(api, shop.staff, order["id"], reference="too much", amount=3698)
    assert_error(status, body, 422, "amount_exceeds_balance")
    assert body["error"]["details"] == {"remaining": 3697}
    status, _ = await _pay(api, shop.staff, order["id"], reference="part", amount=1000)
    assert status == 201
    status, body = await _pay(api, shop.staff, order["id"], reference="too much", amount=2698)
    assert_error(status, body, 422, "amount_exceeds_balance")
    assert body["error"]["details"] == {"remaining": 2697}
    assert await count_rows(api, "payments") == 1
    assert (await _get(api, shop.staff, order["id"]))["amount_paid"] == 1000


BAD_PAYMENTS: list[tuple[str, dict[str, Any]]] = [
    ("no reference", {"method": "manual", "amount": 100}),
    ("empty reference", {"method": "manual", "reference": ""}),
    ("blank reference", {"method": "manual", "reference": "   "}),
    ("reference too long", {"method": "manual", "reference": "x" * 201}),
    ("fractional amount", {"method": "manual", "reference": "r", "amount": 10.5}),
    ("amount as text", {"method": "manual", "reference": "r", "amount": "100"}),
    ("zero amount", {"method": "manual", "reference": "r", "amount": 0}),
    ("negative amount", {"method": "manual", "reference": "r", "amount": -100}),
    ("unknown method", {"method": "cheque", "reference": "r"}),
    ("no method", {"reference": "r"}),
    ("a currency field", {"method": "manual", "reference": "r", "currency": "EUR"}),
    ("card fields on a manual payment", {"method": "manual", "reference": "r", "payment_method": "pm_card_visa"}),
    ("an amount on a card payment", {"method": "card", "payment_method": "pm_card_visa", "amount": 100}),
    ("a card payment without its method", {"method": "card"}),
    ("a malformed payment method", {"method": "card", "payment_method": "tok_visa"}),
]


@pytest.mark.parametrize(("case", "body"), BAD_PAYMENTS, ids=[c[0] for c in BAD_PAYMENTS])
async def test_bad_payments_are_refused_and_write_nothing(api: Api, shop: Shop, case: str, body: Any) -> None:
    order = await _order(api, shop)
    status, answer, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/payments", json=body, token=shop.staff)
    assert_error(status, answer, 422, "validation_failed")
    assert answer["error"]["details"]["fields"], answer
    assert await count_rows(api, "payments") == 0
    assert (await _get(api, shop.staff, order["id"]))["amount_paid"] == 0


async def test_no_payment_on_a_cancelled_or_unknown_order(api: Api, shop: Shop) -> None:
    order = await _order(api, shop)
    status, body, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/cancel", json={}, token=shop.alice)
    assert status == 200, body
    status, body = await _pay(api, shop.staff, order["id"], reference="late cash")
    assert_error(status, body, 409, "invalid_order_state")
    assert body["error"]["details"] == {"status": "cancelled", "action": "pay"}
    status, body = await _pay(api, shop.staff, "ord_nothing", reference="cash")
    assert_error(status, body, 404, "order_not_found")
    assert await count_rows(api, "payments") == 0


async def test_card_payments_without_stripe_are_unavailable_and_nothing_else_is(api: Api, shop: Shop) -> None:
    order = await _order(api, shop)
    status, body, headers = await api.call(
        "POST",
        f"/api/v1/orders/{order['id']}/payments",
        json={"method": "card", "payment_method": "pm_card_visa"},
        token=shop.alice,
    )
    assert_error(status, body, 503, "payment_provider_unavailable")
    assert await count_rows(api, "payments") == 0
    assert (await _get(api, shop.alice, order["id"]))["status"] == "pending_payment"
    # Webhooks from a provider that is not configured are refused with 503 too, so that
    # Stripe keeps them until the operator sets the secret.
    status, body, _ = await api.call(
        "POST", "/api/v1/webhooks/stripe", data=b"{}", headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert_error(status, body, 503, "payment_provider_unavailable")

    # Everything else works: the catalog, manual payments, fulfilment.
    status, products, _ = await api.call("GET", "/api/v1/products")
    assert status == 200 and len(products["data"]) == 2
    status, _ = await _pay(api, shop.staff, order["id"], reference="cash")
    assert status == 201
    status, fulfilled, _ = await api.call("POST", f"/api/v1/orders/{order['id']}/fulfil", token=shop.staff)
    assert status == 200 and fulfilled["status"] == "fulfilled"


# Refunds.
async def test_refunds_partial_then_the_rest(api: Api, shop: Shop) -> None:
    order = await _order(api, shop)
    status, payment = await _pay(api, shop.staff, order["id"], reference="cash")
    assert status == 201

    status, body = await _refund(api, shop.alice, order["id"], reason="I want my money")
    assert_error(status, body, 403, "forbidden")

    status, body = await _refund(api, shop.staff, order["id"], amount=1000, reason="One mug was chipped")
    assert status == 201, body
    assert [r["id"] for r in body["refunds"]] == [body["id"]]  # one payment: one refund, also at the top
    [refund] = body["refunds"]
    assert refund["id"].startswith("ref_")
    assert {k: v for k, v in refund.items() if k not in ("id", "created_at")} == {
        "payment_id": payment["id"],
        "order_id": order["id"],
        "amount": 1000,
        "currency": "USD",
        "reason": "One mug was chipped",
        "status": "succeeded",
        "provider_reference": None,  # a manual refund: no provider
    }
    now = await _get(api, shop.alice, order["id"])
    assert (now["status"], now["amount_paid"], now["amount_refunded"]) == ("partially_refunded", 3697, 1000)

    status, body = await _refund(api, shop.staff, order["id"], amount=2698, reason="too much")
    assert_error(status, body, 422, "refund_exceeds_captured")
    assert body["error"]["details"] == {"refundable": 2697}

    # No amount: all that remains.
    status, body = await _refund(api, shop.staff, order["id"], reason="Returned the rest")
    assert status == 201 and [r["amount"] for r in body["refunds"]] == [2697]
    now = await _get(api, shop.alice, order["id"])
    assert (now["status"], now["amount_paid"], now["amount_refunded"]) == ("refunded", 3697, 3697)

    status, body = await _refund(api, shop.staff, order["id"], reason="again")
    assert_error(status, body, 422, "refund_exceeds_captured")
    assert body["error"]["details"] == {"refundable": 0}
    status, listed, _ = await api.call("GET", f"/api/v1/orders/{order['id']}/refunds", token=shop.alice)
    assert [r["amount"] for r in listed["data"]] == [1000, 2697]
    assert await scalar(api, "SELECT sum(amount) FROM refunds WHERE order_id = ?", order["id"]) == 3697
    assert await scalar(api, "SELECT amount_refunded FROM orders WHERE id = ?", order["id"]) == 3697


async def test_a_refund_spans_several_payments_newest_first(api: Api, shop: Shop) -> None:
    order = await _order(api, shop)
    _, first = await _pay(api, shop.staff, order["id"], reference="cash", amount=1000)
    _, second = await _pay(api, shop.staff, order["id"], reference="card terminal")
    assert second["amount"] == 2697
    status, body = await _refund(api, shop.staff, order["id"], amount=3000, reason="Goodwill")
    assert status == 201, body
    assert [(r["payment_id"], r["amount"]) for r in body["refunds"]] == [(second["id"], 2697), (first["id"], 303)]
    assert body["id"] == body["refunds"][0]["id"]
    now = await _get(api, shop.staff, order["id"])
    assert (now["status"], now["amount_refunded"]) == ("partially_refunded", 3000)


async def test_refunds_are_refused_when_there_is_nothing_to_refund_or_the_input_is_bad(api: Api, shop: Shop) -> None:
    order = await _order(api, shop)
    status, body = await _refund(api, shop.staff, order["id"], reason="nothing paid yet")
    assert_error(status, body, 409, "invalid_order_state")
    assert body["error"]["details"] == {"status": "pending_payment", "action": "refund"}
    await _pay(api, shop.staff, order["id"], reference="cash")
    for bad in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x", "amount": 0}, {"reason": "x", "amount": 1.5},
                {"reason": "x", "amount": "100"}, {"reason": "x", "amount": -1}, {"reason": "x", "payment_id": "p"}):  # fmt: skip
        status, body = await _refund(api, shop.staff, order["id"], **bad)
        assert_error(status, body, 422, "validation_failed")
    status, body = await _refund(api, shop.staff, "ord_nothing", reason="x")
    assert_error(status, body, 404, "order_not_found")
    assert await count_rows(api, "refunds") == 0
    assert (await _get(api, shop.staff, order["id"]))["amount_refunded"] == 0


async def test_cancelling_a_paid_order_refunds_it_and_releases_the_stock(api: Api, shop: Shop) -> None:
    order = await _order(api, shop)
    await _pay(api, shop.staff, order["id"], reference="cash", amount=1000)
    await _pay(api, shop.staff, order["id"], reference="cash")
    status, cancelled, _ = await api.call(
        "POST", f"/api/v1/orders/{order['id']}/cancel", json={"reason": "Out of the country"}, token=shop.staff
    )
    assert status == 200, cancelled
    assert (cancelled["status"], cancelled["amount_paid"], cancelled["amount_refunded"]) == ("cancelled", 3697, 3697)
    assert (await stock_of(api, shop.mug["id"]), await stock_of(api, shop.tea["id"])) == (10, 10)
    status, listed, _ = await api.call("GET", f"/api/v1/orders/{order['id']}/refunds", token=shop.staff)
    assert sorted((r["amount"], r["reason"], r["status"]) for r in listed["data"]) == [
        (1000, "Out of the country", "succeeded"),
        (2697, "Out of the country", "succeeded"),
    ]


# The audit log and the outbox.
async def _audit(api: Api, shop: Shop, object_id: str) -> list[dict[str, Any]]:
    status, page, _ = await api.call("GET", f"/api/v1/admin/audit?object_id={object_id}", token=shop.admin)
    assert status == 200, page
    return list(page["data"])


async def test_payments_refunds_cancellations_and_fulfilments_are_audited(api: Api, shop: Shop) -> None:
    sold = await _order(api, shop)
    _, payment = await _pay(api, shop.staff, sold["id"], reference="receipt 42")
    await api.call("POST", f"/api/v1/orders/{sold['id']}/fulfil", token=shop.staff)
    _, refunds = await _refund(api, shop.admin, sold["id"], amount=399, reason="One tea was stale")
    cancelled = await _order(api, shop)
    await api.call("POST", f"/api/v1/orders/{cancelled['id']}/cancel", json={"reason": "Too slow"}, token=shop.alice)

    entries = await _audit(api, shop, sold["id"])
    assert [e["action"] for e in entries] == ["refund.created", "order.fulfilled", "payment.recorded_manually"]
    assert {e["object_type"] for e in entries} == {"order"}
    assert [e["actor_id"] for e in entries] == [shop.admin_id, shop.staff_id, shop.staff_id]
    assert all(e["source_ip"] == "127.0.0.1" for e in entries)
    refund, fulfilled, recorded = entries
    assert recorded["details"] == {
        "payment_id": payment["id"],
        "amount": 3697,
        "currency": "USD",
        "reference": "receipt 42",
    }
    assert refund["details"] == {
        "refund_id": refunds["refunds"][0]["id"],
        "payment_id": payment["id"],
        "amount": 399,
        "currency": "USD",
        "reason": "One tea was stale",
        "failure_code": None,
    }
    assert fulfilled["details"] == {}

    [entry] = await _audit(api, shop, cancelled["id"])
    assert entry["action"] == "order.cancelled"
    assert entry["details"] == {"status": "pending_payment", "reason": "Too slow", "amount_paid": 0}
    assert entry["actor_id"] is not None and entry["actor_id"] not in (shop.staff_id, shop.admin_id)

    status, page, _ = await api.call("GET", "/api/v1/admin/audit?action=refund.created", token=shop.admin)
    assert status == 200 and [e["object_id"] for e in page["data"]] == [sold["id"]]
    status, body, _ = await api.call("GET", f"/api/v1/admin/audit?object_id={sold['id']}", token=shop.staff)
    assert_error(status, body, 403, "forbidden")


async def test_order_payment_and_refund_events_are_in_the_outbox(api: Api, shop: Shop) -> None:
    order = await _order(api, shop)
    _, payment = await _pay(api, shop.staff, order["id"], reference="cash")
    _, refunds = await _refund(api, shop.staff, order["id"], amount=500, reason="Late delivery")
    events = await rows(api, "SELECT id, type, aggregate_type, aggregate_id, payload, occurred_at, delivered_at FROM outbox ORDER BY id")  # fmt: skip
    assert [(r[1], r[2], r[3]) for r in events] == [
        ("order.created", "order", order["id"]),
        ("payment.succeeded", "payment", payment["id"]),
        ("order.paid", "order", order["id"]),
        ("refund.created", "refund", refunds["refunds"][0]["id"]),
    ]
    assert all(r[6] is None for r in events)  # not delivered yet: delivery is a later issue
    created, succeeded, paid, refunded = (json.loads(r[4]) for r in events)
    assert created == order
    assert (paid["id"], paid["status"], paid["amount_paid"], paid["total"]) == (order["id"], "paid", 3697, 3697)
    assert {k: succeeded[k] for k in ("id", "order_id", "method", "provider", "status", "amount", "currency")} == {
        "id": payment["id"],
        "order_id": order["id"],
        "method": "manual",
        "provider": "manual",
        "status": "succeeded",
        "amount": 3697,
        "currency": "USD",
    }
    assert "client_secret" not in succeeded
    assert refunded == {**refunds["refunds"][0], "provider_reference": None}


async def test_a_refund_while_the_provider_is_down_is_accepted_and_sent_later(tmp_path: Path, store: Store) -> None:
    gateway = FakePaymentGateway(FixedClock())
    async with serve(tmp_path / "data", gateway=gateway, store=store) as api:
        staff = await api.token_for("staff@example.com", "staff")
        alice = await api.token_for("alice@example.com")
        await create_product(api, staff, sku="MUG-1", name="Blue mug", price=1250, stock=5)
        order = await place_order(api, alice, [{"sku": "MUG-1", "quantity": 2}])
        status, _, _ = await api.call(
            "POST",
            f"/api/v1/orders/{order['id']}/payments",
            json={"method": "card", "payment_method": "pm_card_visa"},
            token=alice,
        )
        assert status == 201
        gateway.down = True
        status, body = await _refund(api, staff, order["id"], amount=500, reason="Chipped")
        assert status == 202, body  # accepted, not done
        assert (body["status"], body["amount"], body["provider_reference"]) == ("pending", 500, None)
        status, body = await _refund(api, staff, order["id"], amount=2001, reason="Too much")
        assert_error(status, body, 422, "refund_exceeds_captured")
        assert body["error"]["details"] == {"refundable": 2000}  # the pending 500 still counts

        gateway.down = False
        payments = await provide(api.container.payment_service)
        assert await payments.resend_unsent_refunds(settled_after=timedelta(0)) == 1  # what housekeeping does
        status, refunds, _ = await api.call("GET", f"/api/v1/orders/{order['id']}/refunds", token=staff)
        assert [(r["amount"], r["status"]) for r in refunds["data"]] == [(500, "succeeded")]
        got = await _get(api, alice, order["id"])
        assert (got["status"], got["amount_refunded"]) == ("partially_refunded", 500)
