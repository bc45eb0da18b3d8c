"""Payment use cases: card payments through the fake provider, manual payments, and the
provider's webhooks, in every order they can arrive."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import timedelta
from unittest.mock import ANY

import pytest

from core.domain.audit import AuditEntry
from core.domain.errors import (
    AmountExceedsBalance,
    AuthenticationRequired,
    Invalid,
    InvalidOrderTransition,
    NotAllowed,
    OrderNotFound,
    PaymentFailed,
    PaymentNotFound,
    Unavailable,
    ValidationFailed,
)
from core.domain.money import Money
from core.domain.orders import Order, OrderStatus
from core.domain.payments import Payment, PaymentMethod, PaymentStatus, RefundStatus
from core.domain.users import Actor, Role
from core.ports.payments import ProviderEventKind
from core.services.catalog import CatalogService, CreateProduct
from core.services.orders import CancelOrder, OrderItem, OrderService, PlaceOrder
from core.services.payments import PaymentService, PayOrder
from tests.fakes import FakePaymentGateway, FixedClock, InMemoryDatabase, SequentialIds
from tests.unit.helpers import (
    START,
    actions,
    all_orders,
    all_payments,
    all_refunds,
    audit,
    event_types,
    stored_actor,
)

CARD = PaymentMethod.CARD
MANUAL = PaymentMethod.MANUAL


@pytest.fixture
async def order(catalog: CatalogService, orders: OrderService, staff: Actor, customer: Actor) -> Order:
    mug = await catalog.create_product(CreateProduct(actor=staff, sku="MUG-1", name="Mug", price=1200, stock=5))
    return await orders.place_order(PlaceOrder(actor=customer, items=[OrderItem(quantity=2, product_id=mug.id)]))


def card(actor: Actor, order: Order, payment_method: str = "pm_card_visa") -> PayOrder:
    return PayOrder(actor=actor, order_id=order.id, method=CARD, payment_method=payment_method)


def manual(
    actor: Actor, order: Order, amount: int | None = None, reference: str | None = "Till 3, receipt 41"
) -> PayOrder:
    return PayOrder(actor=actor, order_id=order.id, method=MANUAL, reference=reference, amount=amount)


def stored_order(db: InMemoryDatabase) -> Order:
    (order,) = all_orders(db)
    return order


async def deliver(payments: PaymentService, gateway: FakePaymentGateway, n: int) -> bool:
    """Deliver the n-th webhook the provider sent, through signature checking."""
    payload, header = gateway.sent[n]
    event = gateway.parse_event(payload, header)
    assert event is not None
    return await payments.handle_provider_event(event)


# Cards.
async def test_a_card_payment_pays_the_order(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, customer: Actor, order: Order
) -> None:
    payment = await payments.pay(card(customer, order))

    assert payment == Payment(
        id=ANY,
        order_id=order.id,
        method=CARD,
        provider="stripe",
        status=PaymentStatus.SUCCEEDED,
        amount=Money(2400, "USD"),
        created_at=START,
        updated_at=START,
        provider_reference="pi_fake_1",
        payment_method="pm_card_visa",
        version=2,
    )
    assert all_payments(db) == [payment]
    paid = stored_order(db)
    assert (paid.status, paid.amount_paid) == (OrderStatus.PAID, 2400)
    assert event_types(db) == ["order.created", "payment.succeeded", "order.paid"]
    intent = gateway.intents["pi_fake_1"]
    assert (intent.amount, intent.metadata) == (
        Money(2400, "USD"),
        {"tillbox_payment_id": payment.id, "tillbox_order_id": order.id},
    )
    assert gateway._answers[payment.id][1].reference == "pi_fake_1"  # our payment id was the idempotency key


async def test_staff_may_pay_by_card_for_a_customer(
    payments: PaymentService, db: InMemoryDatabase, staff: Actor, order: Order
) -> None:
    await payments.pay(card(staff, order))
    assert stored_order(db).status is OrderStatus.PAID


async def test_a_declined_card_fails_the_payment_and_says_why(
    payments: PaymentService, db: InMemoryDatabase, customer: Actor, order: Order
) -> None:
    with pytest.raises(PaymentFailed) as caught:
        await payments.pay(card(customer, order, "pm_card_chargeDeclined"))

    (payment,) = all_payments(db)
    assert (caught.value.code, caught.value.details) == (
        "payment_failed",
        {"payment_id": payment.id, "decline_code": "generic_decline"},
    )
    assert (payment.status, payment.failure_code) == (PaymentStatus.FAILED, "generic_decline")
    assert (stored_order(db).status, stored_order(db).amount_paid) == (OrderStatus.PENDING_PAYMENT, 0)
    assert event_types(db) == ["order.created", "payment.failed"]

    # The customer tries another card.
    second = await payments.pay(card(customer, order))
    assert second.id != payment.id
    assert stored_order(db).status is OrderStatus.PAID


async def test_a_card_that_needs_3d_secure_comes_back_with_what_the_client_needs(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, customer: Actor, order: Order
) -> None:
    payment = await payments.pay(card(customer, order, "pm_card_threeDSecure2Required"))

    assert (payment.status, payment.client_secret, payment.next_action) == (
        PaymentStatus.REQUIRES_ACTION,
        "pi_fake_1_secret_fake",
        {"type": "use_stripe_sdk"},
    )
    assert all_payments(db) == [payment]
    assert stored_order(db).status is OrderStatus.PENDING_PAYMENT
    assert gateway.sent == []

    gateway.complete_action("pi_fake_1")
    assert await deliver(payments, gateway, 0) is True

    (done,) = all_payments(db)
    assert (done.status, done.next_action) == (PaymentStatus.SUCCEEDED, None)
    assert (stored_order(db).status, stored_order(db).amount_paid) == (OrderStatus.PAID, 2400)


async def test_a_refused_request_fails_the_payment_instead_of_leaving_it_processing(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, customer: Actor, order: Order
) -> None:
    with pytest.raises(Invalid) as caught:
        await payments.pay(card(customer, order, "pm_nonsense"))
    assert caught.value.code == "payment_method_invalid"
    (payment,) = all_payments(db)
    assert (payment.status, payment.failure_code) == (PaymentStatus.FAILED, "payment_method_invalid")

    await payments.pay(card(customer, order))
    assert stored_order(db).status is OrderStatus.PAID


async def test_an_unconfigured_provider_is_unavailable_and_nothing_is_saved(
    db: InMemoryDatabase, clock: FixedClock, ids: SequentialIds, customer: Actor, order: Order
) -> None:
    service = PaymentService(db, FakePaymentGateway(clock, configured=False), clock, ids)
    before = repr(db.store)
    with pytest.raises(Unavailable) as caught:
        await service.pay(card(customer, order))
    assert (caught.value.code, caught.value.retry_after) == ("payment_provider_unavailable", None)
    assert repr(db.store) == before


async def test_an_unreachable_provider_leaves_the_payment_processing_and_a_retry_reuses_its_key(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, customer: Actor, order: Order
) -> None:
    gateway.down = True
    with pytest.raises(Unavailable) as caught:
        await payments.pay(card(customer, order))
    assert (caught.value.code, caught.value.retry_after) == ("payment_provider_unavailable", 30)
    (payment,) = all_payments(db)
    assert payment.status is PaymentStatus.PROCESSING
    assert stored_order(db).status is OrderStatus.PENDING_PAYMENT

    gateway.down = False
    retried = await payments.pay(card(customer, order))

    assert (retried.id, retried.status) == (payment.id, PaymentStatus.SUCCEEDED)
    assert len(all_payments(db)) == 1
    assert gateway.charges == 1


async def test_an_answer_lost_after_the_provider_charged_is_never_a_second_charge(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, customer: Actor, order: Order
) -> None:
    gateway.lose_answers = True
    with pytest.raises(Unavailable):
        await payments.pay(card(customer, order))
    assert gateway.charges == 1
    assert all_payments(db)[0].status is PaymentStatus.PROCESSING

    gateway.lose_answers = False
    retried = await payments.pay(card(customer, order, "pm_card_other"))  # the same attempt: its own card and key

    assert retried.status is PaymentStatus.SUCCEEDED
    assert gateway.charges == 1
    assert gateway.calls["create_card_payment"] == 2
    assert (stored_order(db).status, stored_order(db).amount_paid) == (OrderStatus.PAID, 2400)
    # The provider's webhook for that charge changes nothing more.
    assert await deliver(payments, gateway, 0) is True
    assert (stored_order(db).amount_paid, event_types(db).count("order.paid")) == (2400, 1)


async def test_a_lost_answer_is_settled_by_the_webhook(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, customer: Actor, order: Order
) -> None:
    gateway.lose_answers = True
    with pytest.raises(Unavailable):
        await payments.pay(card(customer, order))

    assert await deliver(payments, gateway, 0) is True  # found by the metadata: no reference was saved yet

    (payment,) = all_payments(db)
    assert (payment.status, payment.provider_reference) == (PaymentStatus.SUCCEEDED, "pi_fake_1")
    assert stored_order(db).status is OrderStatus.PAID


# One state machine: the answer and the webhooks in any order, any number of times.
@pytest.mark.parametrize("webhooks_before_answer", [0, 1, 2, 3])
async def test_the_answer_and_its_webhooks_pay_the_order_once_whatever_the_order(
    payments: PaymentService,
    gateway: FakePaymentGateway,
    db: InMemoryDatabase,
    customer: Actor,
    order: Order,
    webhooks_before_answer: int,
) -> None:
    gateway.hold()
    paying = asyncio.create_task(payments.pay(card(customer, order)))
    await gateway.waiting.wait()  # the provider has charged; our caller waits for the answer
    outcomes = [await deliver(payments, gateway, 0) for _ in range(webhooks_before_answer)]
    gateway.release()
    payment = await paying
    outcomes += [await deliver(payments, gateway, 0) for _ in range(3 - webhooks_before_answer)]

    assert outcomes == [True, False, False]  # the event is applied once, whenever it comes
    assert payment.status is PaymentStatus.SUCCEEDED
    paid = stored_order(db)
    assert (paid.status, paid.amount_paid, paid.amount_refunded) == (OrderStatus.PAID, 2400, 0)
    assert event_types(db) == ["order.created", "payment.succeeded", "order.paid"]
    assert all_refunds(db) == []


async def test_separate_webhooks_for_the_same_payment_change_nothing_after_the_first(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, customer: Actor, order: Order
) -> None:
    payment = await payments.pay(card(customer, order))
    intent = gateway.intents[payment.provider_reference or ""]
    # Redeliveries under new ids (e.g. the provider's retries of other kinds), and a stale decline.
    for kind in (
        ProviderEventKind.PAYMENT_SUCCEEDED,
        ProviderEventKind.PAYMENT_SUCCEEDED,
        ProviderEventKind.PAYMENT_FAILED,
    ):
        payload = gateway.event_payload(kind, intent)
        event = gateway.parse_event(payload, gateway.sign(payload))
        assert event is not None
        assert await payments.handle_provider_event(event) is True

    assert all_payments(db)[0].status is PaymentStatus.SUCCEEDED
    assert (stored_order(db).amount_paid, event_types(db).count("order.paid")) == (2400, 1)


async def test_a_success_after_a_decline_still_counts(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, customer: Actor, order: Order
) -> None:
    with pytest.raises(PaymentFailed):
        await payments.pay(card(customer, order, "pm_card_chargeDeclined"))
    intent = gateway.intents["pi_fake_1"]
    intent.status = intent.status.SUCCEEDED  # the customer confirmed it again on their side
    payload = gateway.event_payload(ProviderEventKind.PAYMENT_SUCCEEDED, intent)
    event = gateway.parse_event(payload, gateway.sign(payload))
    assert event is not None
    await payments.handle_provider_event(event)

    assert (stored_order(db).status, stored_order(db).amount_paid) == (OrderStatus.PAID, 2400)


async def test_events_about_payments_we_do_not_know_are_recorded_and_ignored(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, order: Order
) -> None:
    from tests.fakes import FakeIntent

    stranger = FakeIntent(
        "pi_elsewhere",
        Money(100, "USD"),
        "pm_card_visa",
        gateway.outcomes["pm_card_visa"][0],
        {"tillbox_payment_id": "pay_nope"},
    )
    payload = gateway.event_payload(ProviderEventKind.PAYMENT_SUCCEEDED, stranger, event_id="evt_x")
    before = repr(db.store.orders), repr(db.store.payments)
    event = gateway.parse_event(payload, gateway.sign(payload))
    assert event is not None

    assert await payments.handle_provider_event(event) is True
    assert await payments.handle_provider_event(event) is False
    assert (repr(db.store.orders), repr(db.store.payments)) == before


# Money that arrives when the order no longer needs it goes back.
async def test_a_payment_that_succeeds_after_the_order_was_cancelled_is_refunded(
    payments: PaymentService,
    orders: OrderService,
    gateway: FakePaymentGateway,
    db: InMemoryDatabase,
    customer: Actor,
    staff: Actor,
    order: Order,
) -> None:
    await payments.pay(card(customer, order, "pm_card_threeDSecure2Required"))
    # Staff cancel (a customer may not while a card payment is open: cancel_needs_staff).
    await orders.cancel_order(CancelOrder(actor=staff, order_id=order.id))
    gateway.complete_action("pi_fake_1")  # the customer finished 3-D Secure anyway

    await deliver(payments, gateway, 0)

    closed = stored_order(db)
    assert (closed.status, closed.amount_paid, closed.amount_refunded) == (OrderStatus.CANCELLED, 2400, 2400)
    (refund,) = all_refunds(db)
    assert (refund.amount.amount, refund.status) == (2400, RefundStatus.SUCCEEDED)
    assert gateway.intents["pi_fake_1"].refunded == 2400
    assert "payment.surplus" in actions(db)
    # The provider's refund webhook finds the books already right.
    await deliver(payments, gateway, 1)
    assert (stored_order(db).amount_refunded, len(all_refunds(db))) == (2400, 1)


async def test_two_card_payments_for_one_order_refund_the_second(
    payments: PaymentService, gateway: FakePaymentGateway, db: InMemoryDatabase, customer: Actor, order: Order
) -> None:
    await payments.pay(card(customer, order, "pm_card_threeDSecure2Required"))  # abandoned...
    await payments.pay(card(customer, order))  # ... for another card, which pays
    gateway.complete_action("pi_fake_1")  # then the first one completes after all
    await deliver(payments, gateway, 1)

    paid = stored_order(db)
    assert (paid.status, paid.amount_paid, paid.amount_refunded) == (OrderStatus.PAID, 4800, 2400)
    assert gateway.intents["pi_fake_1"].refunded == 2400
    assert gateway.intents["pi_fake_2"].refunded == 0


# Who may pay what.
@pytest.mark.parametrize("status", ["cancelled", "expired", "paid"])
async def test_only_an_order_awaiting_payment_can_be_paid(
    payments: PaymentService,
    orders: OrderService,
    gateway: FakePaymentGateway,
    clock: FixedClock,
    db: InMemoryDatabase,
    customer: Actor,
    staff: Actor,
    order: Order,
    status: str,
) -> None:
    if status == "cancelled":
        await orders.cancel_order(CancelOrder(actor=customer, order_id=order.id))
    elif status == "expired":
        await orders.expire_due(START + timedelta(hours=1))
    else:
        await payments.pay(manual(staff, order))
    before = repr(db.store)

    for cmd in (card(customer, order), manual(staff, order)):
        with pytest.raises(InvalidOrderTransition) as caught:
            await payments.pay(cmd)
        assert (caught.value.code, caught.value.details) == ("invalid_order_state", {"status": status, "action": "pay"})
    assert repr(db.store) == before
    assert gateway.calls["create_card_payment"] == 0


async def test_an_order_past_its_deadline_is_expired_when_someone_tries_to_pay_it(
    payments: PaymentService, clock: FixedClock, db: InMemoryDatabase, customer: Actor, order: Order
) -> None:
    clock.advance(minutes=30)
    with pytest.raises(InvalidOrderTransition) as caught:
        await payments.pay(card(customer, order))
    assert caught.value.details == {"status": "expired", "action": "pay"}
    assert stored_order(db).status is OrderStatus.EXPIRED
    assert db.store.products[order.lines[0].product_id].stock == 5
    assert all_payments(db) == []


async def test_someone_elses_order_is_not_found(
    payments: PaymentService, db: InMemoryDatabase, anonymous: Actor, order: Order
) -> None:
    other = stored_actor(db, "usr_other", Role.CUSTOMER, "10.0.1.2")
    with pytest.raises(OrderNotFound):
        await payments.pay(card(other, order))
    with pytest.raises(AuthenticationRequired):
        await payments.pay(card(anonymous, order))
    for actor in (other, anonymous):
        with pytest.raises(OrderNotFound):
            await payments.list_payments(actor, order.id)
    assert all_payments(db) == []


@pytest.mark.parametrize(
    ("cmd", "fields"),
    [
        (lambda a, o: PayOrder(actor=a, order_id=o.id, method=CARD), {"payment_method": ANY}),
        (lambda a, o: PayOrder(actor=a, order_id=o.id, method=CARD, payment_method=""), {"payment_method": ANY}),
        (
            lambda a, o: PayOrder(actor=a, order_id=o.id, method=CARD, payment_method="pm_card_visa", amount=100),
            {"amount": ANY},
        ),
    ],
)
async def test_bad_card_requests_are_refused(
    payments: PaymentService,
    db: InMemoryDatabase,
    customer: Actor,
    order: Order,
    cmd: Callable[..., PayOrder],
    fields: dict[str, object],
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await payments.pay(cmd(customer, order))
    assert caught.value.details == {"fields": fields}
    assert all_payments(db) == []


# Manual payments.
async def test_staff_record_manual_payments_that_add_up(
    payments: PaymentService,
    gateway: FakePaymentGateway,
    db: InMemoryDatabase,
    clock: FixedClock,
    staff: Actor,
    order: Order,
) -> None:
    first = await payments.pay(manual(staff, order, amount=1000, reference="  Bank transfer 77  "))
    assert (first.status, first.amount, first.reference, first.provider, first.method) == (
        PaymentStatus.SUCCEEDED,
        Money(1000, "USD"),
        "Bank transfer 77",
        "manual",
        MANUAL,
    )
    partly = stored_order(db)
    assert (partly.status, partly.amount_paid, partly.expires_at) == (OrderStatus.PENDING_PAYMENT, 1000, None)

    clock.advance(minutes=40)  # no longer expires: money was taken
    second = await payments.pay(manual(staff, order))  # the rest, by default

    assert second.amount == Money(1400, "USD")
    assert (stored_order(db).status, stored_order(db).amount_paid) == (OrderStatus.PAID, 2400)
    assert event_types(db) == ["order.created", "payment.succeeded", "payment.succeeded", "order.paid"]
    assert [e for e in audit(db) if e.action == "payment.recorded_manually"] == [
        AuditEntry(
            id=ANY,
            at=START,
            actor_id="usr_staff",
            action="payment.recorded_manually",
            object_type="order",
            object_id=order.id,
            source_ip="10.0.0.2",
            details={"payment_id": first.id, "amount": 1000, "currency": "USD", "reference": "Bank transfer 77"},
        ),
        AuditEntry(
            id=ANY,
            at=clock.now(),
            actor_id="usr_staff",
            action="payment.recorded_manually",
            object_type="order",
            object_id=order.id,
            source_ip="10.0.0.2",
            details={"payment_id": second.id, "amount": 1400, "currency": "USD", "reference": "Till 3, receipt 41"},
        ),
    ]
    assert sum(gateway.calls.values()) == 0


async def test_a_manual_payment_cannot_exceed_the_balance(
    payments: PaymentService, db: InMemoryDatabase, staff: Actor, order: Order
) -> None:
    await payments.pay(manual(staff, order, amount=2000))
    before = repr(db.store)
    with pytest.raises(AmountExceedsBalance) as caught:
        await payments.pay(manual(staff, order, amount=401))
    assert caught.value.details == {"remaining": 400}
    assert repr(db.store) == before


@pytest.mark.parametrize(
    ("amount", "reference", "fields"),
    [
        (None, None, {"reference": "must have 1 to 200 characters"}),
        (None, "   ", {"reference": "must have 1 to 200 characters"}),
        (None, "x" * 201, {"reference": "must have 1 to 200 characters"}),
        (0, "Cash", {"amount": "must be a positive integer number of minor units"}),
        (-5, "Cash", {"amount": "must be a positive integer number of minor units"}),
        (10.0, "Cash", {"amount": "must be a positive integer number of minor units"}),
        ("10", "Cash", {"amount": "must be a positive integer number of minor units"}),
    ],
)
async def test_bad_manual_payments_are_refused(
    payments: PaymentService,
    db: InMemoryDatabase,
    staff: Actor,
    order: Order,
    amount: object,
    reference: str | None,
    fields: dict[str, str],
) -> None:
    before = repr(db.store)
    with pytest.raises(ValidationFailed) as caught:
        await payments.pay(manual(staff, order, amount=amount, reference=reference))  # type: ignore[arg-type]
    assert caught.value.details == {"fields": fields}
    assert repr(db.store) == before


async def test_customers_cannot_record_manual_payments(
    payments: PaymentService, db: InMemoryDatabase, customer: Actor, order: Order
) -> None:
    with pytest.raises(NotAllowed):
        await payments.pay(manual(customer, order))
    assert all_payments(db) == []


# Reading.
async def test_payments_are_listed_for_whoever_may_see_the_order(
    payments: PaymentService, customer: Actor, staff: Actor, order: Order
) -> None:
    with pytest.raises(PaymentFailed):
        await payments.pay(card(customer, order, "pm_card_chargeDeclined"))
    paid = await payments.pay(card(customer, order))

    listed = await payments.list_payments(customer, order.id)
    assert [(p.status, p.failure_code) for p in listed] == [
        (PaymentStatus.FAILED, "generic_decline"),
        (PaymentStatus.SUCCEEDED, None),
    ]
    assert await payments.get_payment(staff, paid.id) == paid
    assert await payments.get_payment(customer, paid.id) == paid
    for actor, payment_id in ((Actor("usr_other", Role.CUSTOMER), paid.id), (staff, "pay_nothing")):
        with pytest.raises(PaymentNotFound):
            await payments.get_payment(actor, payment_id)


# A lost answer, then a retry and two deliveries of the webhook in every order: the order is paid once.
@pytest.mark.parametrize("order_of_deliveries", list(itertools.permutations(range(3))))
async def test_a_lost_answer_then_any_mix_of_retries_and_webhooks_pays_once(
    payments: PaymentService,
    gateway: FakePaymentGateway,
    db: InMemoryDatabase,
    customer: Actor,
    order: Order,
    order_of_deliveries: tuple[int, ...],
) -> None:
    gateway.lose_answers = True
    with pytest.raises(Unavailable):
        await payments.pay(card(customer, order))
    gateway.lose_answers = False

    async def retry() -> None:
        try:
            await payments.pay(card(customer, order))
        except InvalidOrderTransition:
            pass  # already paid by the webhook

    steps = [retry, lambda: deliver(payments, gateway, 0), lambda: deliver(payments, gateway, 0)]
    for n in order_of_deliveries:
        await steps[n]()

    assert gateway.charges == 1
    paid = stored_order(db)
    assert (paid.status, paid.amount_paid) == (OrderStatus.PAID, 2400)
    assert event_types(db).count("order.paid") == 1
    assert event_types(db).count("payment.succeeded") == 1
