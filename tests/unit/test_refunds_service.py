"""Refunds: reserved before the provider is called, never more than was captured (even when
requested concurrently), settled once whether the answer or the webhook comes first."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import ANY

import pytest

from core.domain.audit import AuditEntry
from core.domain.errors import (
    Invalid,
    InvalidOrderTransition,
    NotAllowed,
    OrderNotFound,
    RefundExceedsCaptured,
    RefundFailed,
    ValidationFailed,
)
from core.domain.money import Money
from core.domain.orders import Order, OrderStatus
from core.domain.payments import PaymentMethod, Refund, RefundStatus
from core.domain.users import Actor
from core.ports.payments import ProviderRefund
from core.services.catalog import CatalogService, CreateProduct
from core.services.orders import FulfilOrder, OrderItem, OrderService, PlaceOrder
from core.services.payments import PaymentService, PayOrder, RefundPayment
from tests.fakes import FakePaymentGateway, FixedClock, InMemoryDatabase
from tests.unit.helpers import START, all_orders, all_refunds, audit, event_types


@pytest.fixture
async def order(catalog: CatalogService, orders: OrderService, staff: Actor, customer: Actor) -> Order:
    mug = await catalog.create_product(CreateProduct(actor=staff, sku="MUG-1", name="Mug", price=500, stock=5))
    return await orders.place_order(PlaceOrder(actor=customer, items=[OrderItem(quantity=2, product_id=mug.id)]))


@pytest.fixture
async def paid(payments: PaymentService, customer: Actor, order: Order) -> Order:
    """The order (total 1000) paid by card."""
    await payments.pay(
        PayOrder(actor=customer, order_id=order.id, method=PaymentMethod.CARD, payment_method="pm_card_visa")
    )
    return order


def refund(actor: Actor, order: Order, amount: int | None = None, reason: str = "Chipped") -> RefundPayment:
    return RefundPayment(actor=actor, order_id=order.id, amount=amount, reason=reason)


def stored_order(db: InMemoryDatabase) -> Order:
    (order,) = all_orders(db)
    return order


async def deliver_last(payments: PaymentService, gateway: FakePaymentGateway) -> bool:
    payload, header = gateway.sent[-1]
    event = gateway.parse_event(payload, header)
    assert event is not None
    return await payments.handle_provider_event(event)


async def test_a_partial_then_the_rest_refund_a_paid_order(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, staff: Actor, paid: Order
) -> None:
    (first,) = await payments.refund(refund(staff, paid, 300, reason="  Chipped  "))

    assert first == Refund(
        id=ANY,
        payment_id=ANY,
        order_id=paid.id,
        amount=Money(300, "USD"),
        reason="Chipped",
        status=RefundStatus.SUCCEEDED,
        created_at=START,
        updated_at=START,
        provider_reference="re_fake_1",
        version=2,
    )
    assert (stored_order(db).status, stored_order(db).amount_refunded) == (OrderStatus.PARTIALLY_REFUNDED, 300)
    assert gateway._answers[first.id][1].reference == "re_fake_1"  # the refund id was the idempotency key

    (rest,) = await payments.refund(refund(staff, paid))  # by default, all that remains

    assert rest.amount == Money(700, "USD")
    assert (stored_order(db).status, stored_order(db).amount_refunded) == (OrderStatus.REFUNDED, 1000)
    assert gateway.intents["pi_fake_1"].refunded == 1000
    assert event_types(db)[-2:] == ["refund.created", "refund.created"]
    assert next(e for e in audit(db) if e.action == "refund.created") == AuditEntry(
        id=ANY,
        at=START,
        actor_id="usr_staff",
        action="refund.created",
        object_type="order",
        object_id=paid.id,
        source_ip="10.0.0.2",
        details={
            "refund_id": first.id,
            "payment_id": first.payment_id,
            "amount": 300,
            "currency": "USD",
            "reason": "Chipped",
            "failure_code": None,
        },
    )
    # Nothing is left to refund.
    for amount in (1, None):
        with pytest.raises(RefundExceedsCaptured) as caught:
            await payments.refund(refund(staff, paid, amount))
        assert caught.value.details == {"refundable": 0}


async def test_a_fulfilled_order_can_be_refunded(
    payments: PaymentService, orders: OrderService, db: InMemoryDatabase, staff: Actor, admin_actor: Actor, paid: Order
) -> None:
    await orders.fulfil_order(FulfilOrder(actor=staff, order_id=paid.id))
    await payments.refund(refund(admin_actor, paid, 1000))
    assert stored_order(db).status is OrderStatus.REFUNDED


async def test_a_refund_above_what_remains_is_refused_and_says_how_much_remains(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, staff: Actor, paid: Order
) -> None:
    await payments.refund(refund(staff, paid, 600))
    before = repr(db.store)

    with pytest.raises(RefundExceedsCaptured) as caught:
        await payments.refund(refund(staff, paid, 401))

    assert (caught.value.code, caught.value.details) == ("refund_exceeds_captured", {"refundable": 400})
    assert repr(db.store) == before
    assert gateway.calls["refund"] == 1


async def test_what_remains_refundable_is_captured_less_refunds_and_only_staff_may_ask(
    payments: PaymentService, staff: Actor, customer: Actor, order: Order, paid: Order
) -> None:
    assert await payments.refundable(staff, paid.id) == 1000
    await payments.refund(refund(staff, paid, 600))
    assert await payments.refundable(staff, paid.id) == 400
    with pytest.raises(NotAllowed):
        await payments.refundable(customer, paid.id)
    with pytest.raises(OrderNotFound):
        await payments.refundable(staff, "ord_nothing")


async def test_twenty_concurrent_refunds_never_exceed_what_was_captured(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, staff: Actor, paid: Order
) -> None:
    outcomes = await asyncio.gather(
        *(payments.refund(refund(staff, paid, 100)) for _ in range(20)), return_exceptions=True
    )

    succeeded = [o for o in outcomes if isinstance(o, list)]
    assert len(succeeded) == 10
    assert [type(o) for o in outcomes if not isinstance(o, list)] == [RefundExceedsCaptured] * 10
    assert sum(r.amount.amount for r in all_refunds(db) if r.status is RefundStatus.SUCCEEDED) == 1000
    assert (stored_order(db).status, stored_order(db).amount_refunded) == (OrderStatus.REFUNDED, 1000)
    assert gateway.intents["pi_fake_1"].refunded == 1000
    assert gateway.calls["refund"] == 10


async def test_concurrent_refunds_held_at_the_provider_are_still_bounded(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, staff: Actor, paid: Order
) -> None:
    # Every refund is reserved before any provider answer comes back: the reservations alone
    # must keep the sum within the capture.
    gateway.hold()
    tasks = [asyncio.create_task(payments.refund(refund(staff, paid, 300))) for _ in range(5)]
    await gateway.waiting.wait()
    await asyncio.sleep(0)
    gateway.release()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert sorted(type(o).__name__ for o in outcomes) == [
        "RefundExceedsCaptured",
        "RefundExceedsCaptured",
        "list",
        "list",
        "list",
    ]
    assert stored_order(db).amount_refunded == 900


async def test_a_refund_the_provider_declines_fails_and_releases_its_reservation(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, staff: Actor, paid: Order
) -> None:
    gateway.refund_failure = "expired_or_canceled_card"
    with pytest.raises(RefundFailed) as caught:
        await payments.refund(refund(staff, paid, 1000))

    (failed,) = all_refunds(db)
    assert (caught.value.code, caught.value.details) == (
        "refund_failed",
        {"refund_ids": [failed.id], "failure_code": "expired_or_canceled_card"},
    )
    assert (failed.status, failed.failure_code) == (RefundStatus.FAILED, "expired_or_canceled_card")
    assert (stored_order(db).status, stored_order(db).amount_refunded) == (OrderStatus.PAID, 0)
    assert "refund.failed" in [e.action for e in audit(db)]

    gateway.refund_failure = None
    (ok,) = await payments.refund(refund(staff, paid, 1000))
    assert ok.status is RefundStatus.SUCCEEDED


async def test_an_unreachable_provider_leaves_the_refund_pending_until_its_webhook_settles_it(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, staff: Actor, paid: Order
) -> None:
    gateway.lose_answers = True  # the provider refunds; we never hear its answer
    (answered,) = await payments.refund(refund(staff, paid, 400))
    assert answered.status is RefundStatus.PENDING  # accepted, not done: no error for the caller
    (pending,) = all_refunds(db)
    assert pending.status is RefundStatus.PENDING
    assert stored_order(db).amount_refunded == 0
    with pytest.raises(RefundExceedsCaptured) as caught:  # still counted against what remains
        await payments.refund(refund(staff, paid, 601))
    assert caught.value.details == {"refundable": 600}

    gateway.lose_answers = False
    assert await deliver_last(payments, gateway) is True

    (settled,) = all_refunds(db)
    assert (settled.id, settled.status) == (pending.id, RefundStatus.SUCCEEDED)
    assert (stored_order(db).status, stored_order(db).amount_refunded) == (OrderStatus.PARTIALLY_REFUNDED, 400)
    # A retry now asks the provider again with the same key: the same refund, not a second one.
    assert await payments.retry_pending_refunds(staff, paid.id) == []
    assert gateway.intents["pi_fake_1"].refunded == 400


@pytest.mark.parametrize("webhook_first", [True, False])
async def test_a_refund_counts_once_whether_its_answer_or_its_webhook_comes_first(
    payments: PaymentService,
    gateway: FakePaymentGateway,
    db: InMemoryDatabase,
    staff: Actor,
    paid: Order,
    webhook_first: bool,
) -> None:
    gateway.hold()
    refunding = asyncio.create_task(payments.refund(refund(staff, paid, 250)))
    await gateway.waiting.wait()
    if webhook_first:
        assert await deliver_last(payments, gateway) is True
    gateway.release()
    (done,) = await refunding
    if not webhook_first:
        assert await deliver_last(payments, gateway) is True
    assert await deliver_last(payments, gateway) is False

    assert (done.status, done.provider_reference) == (RefundStatus.SUCCEEDED, "re_fake_1")
    assert [(r.amount.amount, r.status, r.provider_reference) for r in all_refunds(db)] == [
        (250, RefundStatus.SUCCEEDED, "re_fake_1")
    ]
    assert stored_order(db).amount_refunded == 250
    assert event_types(db).count("refund.created") == 1


async def test_a_refund_made_at_the_provider_is_recorded_from_its_webhook(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, staff: Actor, paid: Order
) -> None:
    await payments.refund(refund(staff, paid, 100))
    gateway.refund_outside("pi_fake_1", 350)  # someone used the provider's dashboard

    assert await deliver_last(payments, gateway) is True

    assert [(r.amount.amount, r.reason, r.status) for r in all_refunds(db)] == [
        (100, "Chipped", RefundStatus.SUCCEEDED),
        (350, "Refunded at the payment provider.", RefundStatus.SUCCEEDED),
    ]
    assert (stored_order(db).status, stored_order(db).amount_refunded) == (OrderStatus.PARTIALLY_REFUNDED, 450)
    with pytest.raises(RefundExceedsCaptured) as caught:
        await payments.refund(refund(staff, paid, 551))
    assert caught.value.details == {"refundable": 550}


async def test_refunds_come_from_the_most_recent_payments_first(
    payments: PaymentService,
    gateway: FakePaymentGateway,
    db: InMemoryDatabase,
    staff: Actor,
    customer: Actor,
    order: Order,
) -> None:
    cash = await payments.pay(
        PayOrder(actor=staff, order_id=order.id, method=PaymentMethod.MANUAL, reference="Cash", amount=400)
    )
    card = await payments.pay(
        PayOrder(actor=customer, order_id=order.id, method=PaymentMethod.CARD, payment_method="pm_card_visa")
    )
    assert card.amount == Money(600, "USD")

    refunds = await payments.refund(refund(staff, order, 700))

    assert [(r.payment_id, r.amount.amount, r.status) for r in refunds] == [
        (card.id, 600, RefundStatus.SUCCEEDED),
        (cash.id, 100, RefundStatus.SUCCEEDED),  # handed back by staff: recorded, no call
    ]
    assert gateway.calls["refund"] == 1
    assert (stored_order(db).status, stored_order(db).amount_refunded) == (OrderStatus.PARTIALLY_REFUNDED, 700)


@pytest.mark.parametrize(
    ("amount", "reason", "fields"),
    [
        (None, "", {"reason": "must have 1 to 500 characters"}),
        (None, "   ", {"reason": "must have 1 to 500 characters"}),
        (None, "x" * 501, {"reason": "must have 1 to 500 characters"}),
        (0, "Chipped", {"amount": "must be a positive integer number of minor units"}),
        (-1, "Chipped", {"amount": "must be a positive integer number of minor units"}),
        (1.5, "Chipped", {"amount": "must be a positive integer number of minor units"}),
        ("100", "Chipped", {"amount": "must be a positive integer number of minor units"}),
    ],
)
async def test_bad_refund_requests_are_refused(
    payments: PaymentService,
    db: InMemoryDatabase,
    staff: Actor,
    paid: Order,
    amount: object,
    reason: str,
    fields: dict[str, str],
) -> None:
    before = repr(db.store)
    with pytest.raises(ValidationFailed) as caught:
        await payments.refund(RefundPayment(actor=staff, order_id=paid.id, amount=amount, reason=reason))  # type: ignore[arg-type]
    assert caught.value.details == {"fields": fields}
    assert repr(db.store) == before


async def test_only_staff_refund_and_only_orders_that_took_money(
    payments: PaymentService, db: InMemoryDatabase, staff: Actor, customer: Actor, order: Order
) -> None:
    with pytest.raises(NotAllowed):
        await payments.refund(refund(customer, order))
    with pytest.raises(InvalidOrderTransition) as caught:
        await payments.refund(refund(staff, order))
    assert caught.value.details == {"status": "pending_payment", "action": "refund"}
    with pytest.raises(OrderNotFound):
        await payments.refund(
            refund(
                staff,
                Order.place(
                    id="ord_nothing", customer_id="x", lines=order.lines, currency="USD", at=START, expires_at=START
                ),
            )
        )
    assert all_refunds(db) == []


async def test_refunds_are_listed_for_whoever_may_see_the_order(
    payments: PaymentService, staff: Actor, customer: Actor, paid: Order
) -> None:
    (made,) = await payments.refund(refund(staff, paid, 100))
    assert await payments.list_refunds(customer, paid.id) == [made]
    with pytest.raises(OrderNotFound):
        await payments.list_refunds(Actor("usr_other", customer.role), paid.id)


async def test_a_refund_the_provider_leaves_pending_keeps_its_reservation(
    catalog: CatalogService,
    orders: OrderService,
    payments: PaymentService,
    gateway: FakePaymentGateway,
    db: InMemoryDatabase,
    staff: Actor,
    customer: Actor,
) -> None:
    # Stripe answers "pending" when it accepts a refund it cannot pay out yet: not a failure.
    real_refund = gateway.refund

    async def pending_at_the_provider(*, payment_reference: str, amount: Money, idempotency_key: str) -> ProviderRefund:
        done = await real_refund(payment_reference=payment_reference, amount=amount, idempotency_key=idempotency_key)
        return ProviderRefund(done.reference, payment_reference, amount, succeeded=False, failure_code=None)

    gateway.refund = pending_at_the_provider  # type: ignore[method-assign]
    mug = await catalog.create_product(CreateProduct(actor=staff, sku="PEND-1", name="Mug", price=500, stock=5))
    order = await orders.place_order(PlaceOrder(actor=customer, items=[OrderItem(quantity=2, product_id=mug.id)]))
    await payments.pay(
        PayOrder(actor=customer, order_id=order.id, method=PaymentMethod.CARD, payment_method="pm_card_visa")
    )

    [refund] = await payments.refund(RefundPayment(actor=staff, order_id=order.id, amount=1000, reason="Chipped"))

    assert refund.status is RefundStatus.PENDING
    assert refund.provider_reference is not None
    with pytest.raises(Invalid) as caught:  # the pending refund still counts: nothing left to refund
        await payments.refund(RefundPayment(actor=staff, order_id=order.id, amount=1, reason="Again"))
    assert caught.value.code == "refund_exceeds_captured"


async def test_refunds_the_provider_never_heard_of_are_sent_again_by_housekeeping(
    payments: PaymentService,
    gateway: FakePaymentGateway,
    clock: FixedClock,
    db: InMemoryDatabase,
    staff: Actor,
    paid: Order,
) -> None:
    gateway.down = True  # nothing reaches the provider
    (accepted,) = await payments.refund(refund(staff, paid, 400))
    assert (accepted.status, accepted.provider_reference) == (RefundStatus.PENDING, None)

    assert await payments.resend_unsent_refunds() == 0  # not a minute old yet
    clock.advance(minutes=2)
    assert await payments.resend_unsent_refunds() == 0  # still down: stays pending, nothing lost
    gateway.down = False
    assert await payments.resend_unsent_refunds() == 0  # tried a moment ago: tried again a minute later
    clock.advance(minutes=1)
    assert await payments.resend_unsent_refunds() == 1

    (settled,) = all_refunds(db)
    assert (settled.id, settled.status) == (accepted.id, RefundStatus.SUCCEEDED)
    assert (stored_order(db).status, stored_order(db).amount_refunded) == (OrderStatus.PARTIALLY_REFUNDED, 400)
    assert gateway.intents["pi_fake_1"].refunded == 400
    assert await payments.resend_unsent_refunds() == 0  # done: nothing left to send


async def test_unsent_refunds_older_than_the_providers_key_window_are_left_for_staff(
    payments: PaymentService,
    gateway: FakePaymentGateway,
    clock: FixedClock,
    db: InMemoryDatabase,
    staff: Actor,
    paid: Order,
) -> None:
    gateway.down = True
    await payments.refund(refund(staff, paid, 400))
    gateway.down = False
    clock.advance(hours=23, minutes=1)  # resending now might make a second refund at the provider
    assert await payments.resend_unsent_refunds() == 0
    assert [r.status for r in all_refunds(db)] == [RefundStatus.PENDING]


async def test_servers_sweeping_at_once_send_each_unsent_refund_once(
    payments: PaymentService,
    gateway: FakePaymentGateway,
    clock: FixedClock,
    db: InMemoryDatabase,
    staff: Actor,
    paid: Order,
) -> None:
    gateway.down = True
    await payments.refund(refund(staff, paid, 400))
    gateway.down = False
    clock.advance(minutes=2)
    calls: list[str] = []
    real_refund = gateway.refund

    async def counted(**kwargs: Any) -> Any:
        calls.append(kwargs["idempotency_key"])
        return await real_refund(**kwargs)

    gateway.refund = counted  # type: ignore[method-assign]

    sent = await asyncio.gather(*(payments.resend_unsent_refunds() for _ in range(4)))

    assert sorted(sent) == [0, 0, 0, 1]
    assert len(calls) == 1
    (settled,) = all_refunds(db)
    assert settled.status is RefundStatus.SUCCEEDED
