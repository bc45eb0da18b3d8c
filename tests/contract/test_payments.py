"""PaymentRepository and RefundRepository: every adapter behaves the same
(see core/ports/repositories.py)."""

from __future__ import annotations

import asyncio

import pytest

from core.domain.errors import ConcurrentUpdate, ProviderReferenceTaken
from core.domain.money import Money
from core.domain.orders import Order, OrderStatus
from core.domain.payments import Payment, PaymentMethod, PaymentStatus, Refund, RefundStatus
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from tests.contract.builders import Make, store
from tests.fakes import FixedClock


@pytest.fixture
async def order(uow_factory: UnitOfWorkFactory, make: Make) -> Order:
    order = make.order(("MUG-1", 1200, 2), status=OrderStatus.PAID, amount_paid=2400)
    await store(uow_factory, order)
    return order


async def _payment(uow_factory: UnitOfWorkFactory, payment_id: str) -> Payment | None:
    async with uow_factory(readonly=True) as uow:
        return await uow.payments.get(payment_id)


# Payments.
async def test_a_payment_reads_back_exactly_as_added(uow_factory: UnitOfWorkFactory, make: Make, order: Order) -> None:
    card = make.payment(order, status=PaymentStatus.REQUIRES_ACTION, provider_reference="pi_1")
    card.client_secret = "pi_1_secret_abc"
    card.next_action = {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect", "n": 1}}
    cash = make.payment(order, amount=400, method=PaymentMethod.MANUAL)
    declined = make.payment(order, status=PaymentStatus.FAILED, provider_reference="pi_2")
    declined.failure_code = "generic_decline"
    await store(uow_factory, card, cash, declined)

    async with uow_factory(readonly=True) as uow:
        assert await uow.payments.get(card.id) == card
        assert await uow.payments.get(cash.id) == cash
        assert await uow.payments.get(declined.id) == declined
        assert await uow.payments.get("pay_nothing") is None
        assert await uow.payments.get_by_provider_reference("pi_1") == card
        assert await uow.payments.get_by_provider_reference("pi_2") == declined
        assert await uow.payments.get_by_provider_reference("pi_nothing") is None


async def test_a_provider_reference_belongs_to_one_payment(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, order: Order
) -> None:
    first = make.payment(order, provider_reference="pi_1")
    unreferenced = [make.payment(order, status=PaymentStatus.PROCESSING) for _ in range(3)]  # any number
    await store(uow_factory, first, *unreferenced)

    async with uow_factory() as uow:
        with pytest.raises(ProviderReferenceTaken) as caught:
            await uow.payments.add(make.payment(order, provider_reference="pi_1"))
        assert caught.value.details == {"reference": "pi_1"}
        second = unreferenced[0]
        second.apply(PaymentStatus.SUCCEEDED, at=clock.now(), provider_reference="pi_1")
        with pytest.raises(ProviderReferenceTaken):
            await uow.payments.update(second)
        await uow.commit()

    stored = await _payment(uow_factory, unreferenced[0].id)
    assert stored is not None
    assert (stored.status, stored.provider_reference, stored.version) == (PaymentStatus.PROCESSING, None, 1)


async def test_list_for_order_is_oldest_first_and_only_that_order(
    uow_factory: UnitOfWorkFactory, make: Make, order: Order
) -> None:
    other = make.order()
    await store(uow_factory, other)
    payments = [make.payment(order if n % 2 else other, amount=100 + n) for n in range(5)]
    await store(uow_factory, *reversed(payments))

    async with uow_factory(readonly=True) as uow:
        assert await uow.payments.list_for_order(order.id) == [payments[1], payments[3]]
        assert await uow.payments.list_for_order(other.id) == [payments[0], payments[2], payments[4]]
        assert await uow.payments.list_for_order("ord_nothing") == []


async def test_update_persists_the_signal_fields_and_the_version(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, order: Order
) -> None:
    payment = make.payment(order, status=PaymentStatus.PROCESSING)
    await store(uow_factory, payment)
    clock.advance(seconds=3)

    async with uow_factory() as uow:
        stored = await uow.payments.get(payment.id)
        assert stored is not None
        stored.apply(
            PaymentStatus.REQUIRES_ACTION,
            at=clock.now(),
            provider_reference="pi_9",
            client_secret="pi_9_secret",
            next_action={"type": "use_stripe_sdk"},
        )
        await uow.payments.update(stored)
        await uow.commit()
    assert await _payment(uow_factory, payment.id) == Payment(
        id=payment.id,
        order_id=order.id,
        method=PaymentMethod.CARD,
        provider="stripe",
        status=PaymentStatus.REQUIRES_ACTION,
        amount=Money(2400, "USD"),
        created_at=payment.created_at,
        updated_at=clock.now(),
        provider_reference="pi_9",
        client_secret="pi_9_secret",
        next_action={"type": "use_stripe_sdk"},
        payment_method="pm_card_visa",
        version=2,
    )

    async with uow_factory() as uow:
        stored = await uow.payments.get(payment.id)
        assert stored is not None
        stored.apply(PaymentStatus.FAILED, at=clock.now(), failure_code="insufficient_funds")
        await uow.payments.update(stored)
        await uow.commit()
    failed = await _payment(uow_factory, payment.id)
    assert failed is not None
    assert (failed.status, failed.failure_code, failed.next_action, failed.client_secret, failed.version) == (
        PaymentStatus.FAILED,
        "insufficient_funds",
        None,
        None,  # the client secret is only handed out while there is something to finish
        3,
    )


async def test_a_payment_update_from_a_stale_read_is_a_concurrent_update(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, order: Order
) -> None:
    payment = make.payment(order, status=PaymentStatus.PROCESSING)
    await store(uow_factory, payment)
    first, second = await _payment(uow_factory, payment.id), await _payment(uow_factory, payment.id)
    assert first is not None
    assert second is not None
    first.apply(PaymentStatus.SUCCEEDED, at=clock.now())
    second.apply(PaymentStatus.FAILED, at=clock.now())
    async with uow_factory() as uow:
        await uow.payments.update(first)
        with pytest.raises(ConcurrentUpdate):
            await uow.payments.update(second)
        with pytest.raises(ConcurrentUpdate):
            await uow.payments.update(make.payment(order))  # never added
        await uow.commit()

    stored = await _payment(uow_factory, payment.id)
    assert stored is not None
    assert (stored.status, stored.version) == (PaymentStatus.SUCCEEDED, 2)


# Refunds.
async def test_a_refund_reads_back_exactly_and_lists_oldest_first(
    uow_factory: UnitOfWorkFactory, make: Make, order: Order
) -> None:
    card = make.payment(order, amount=2000, provider_reference="pi_1")
    cash = make.payment(order, amount=400, method=PaymentMethod.MANUAL)
    await store(uow_factory, card, cash)
    refunds = [
        make.refund(card, 500, reason="Chipped – sorry ✓"),
        make.refund(cash, 400, status=RefundStatus.SUCCEEDED),
        make.refund(card, 700, status=RefundStatus.FAILED),
        make.refund(card, 1500),
    ]
    refunds[2].failure_code = "expired_or_canceled_card"
    await store(uow_factory, *refunds)

    async with uow_factory(readonly=True) as uow:
        for refund in refunds:
            assert await uow.refunds.get(refund.id) == refund
        assert await uow.refunds.get("ref_nothing") is None
        assert await uow.refunds.list_for_order(order.id) == refunds
        assert await uow.refunds.list_for_order("ord_nothing") == []
        assert await uow.refunds.list_for_payment(card.id) == [refunds[0], refunds[2], refunds[3]]
        assert await uow.refunds.list_for_payment(cash.id) == [refunds[1]]


async def test_refund_update_persists_the_outcome_with_a_version_check(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, order: Order
) -> None:
    payment = make.payment(order, provider_reference="pi_1")
    await store(uow_factory, payment)
    refund = make.refund(payment, 600)
    await store(uow_factory, refund)
    clock.advance(seconds=1)

    stale = await _refund(uow_factory, refund.id)
    async with uow_factory() as uow:
        stored = await uow.refunds.get(refund.id)
        assert stored is not None
        assert stored.settle(True, at=clock.now(), provider_reference="re_1") is True
        await uow.refunds.update(stored)
        assert stale is not None
        stale.settle(False, at=clock.now(), failure_code="declined")
        with pytest.raises(ConcurrentUpdate):
            await uow.refunds.update(stale)
        await uow.commit()

    assert await _refund(uow_factory, refund.id) == Refund(
        id=refund.id,
        payment_id=payment.id,
        order_id=order.id,
        amount=Money(600, "USD"),
        reason="Broken",
        status=RefundStatus.SUCCEEDED,
        created_at=refund.created_at,
        updated_at=clock.now(),
        provider_reference="re_1",
        version=2,
    )


async def test_units_that_reach_an_order_and_its_payments_from_either_side_all_land(
    uow_factory: UnitOfWorkFactory, make: Make, order: Order
) -> None:
    """Paying, refunding and cancelling read an order, then its payments and refunds;
    settling a card payment, a refund or a webhook reads the payment or the refund first,
    then its order. Run together, they all land, one after the other: none is lost, and
    none fails on the store's locks (on PostgreSQL, a deadlock)."""
    payment = make.payment(order, provider_reference="pi_1")
    await store(uow_factory, payment)
    refund = make.refund(payment, 600)
    await store(uow_factory, refund)

    async def save(uow: UnitOfWork, *changed: Order | Payment | Refund) -> None:
        for thing in changed:
            if isinstance(thing, Order):
                await uow.orders.update(thing)  # a lost update would be a ConcurrentUpdate here
            elif isinstance(thing, Payment):
                await uow.payments.update(thing)
            else:
                await uow.refunds.update(thing)
        await uow.commit()

    async def order_first() -> None:
        async with uow_factory() as uow:
            got = await uow.orders.get(order.id)
            await asyncio.sleep(0)  # let the others run, and reach for what this one holds
            [paid] = await uow.payments.list_for_order(order.id)
            [refunded] = await uow.refunds.list_for_order(order.id)
            assert got is not None
            await save(uow, refunded, paid, got)

    async def payment_first() -> None:
        async with uow_factory() as uow:
            paid = await uow.payments.get_by_provider_reference("pi_1")
            await asyncio.sleep(0)
            assert paid is not None
            [refunded] = await uow.refunds.list_for_payment(paid.id)
            got = await uow.orders.get(paid.order_id)
            assert got is not None
            await save(uow, got, paid, refunded)

    async def refund_first() -> None:
        async with uow_factory() as uow:
            refunded = await uow.refunds.get(refund.id)
            await asyncio.sleep(0)
            assert refunded is not None
            got = await uow.orders.get(refunded.order_id)
            paid = await uow.payments.get(refunded.payment_id)
            assert got is not None and paid is not None
            await save(uow, got, refunded, paid)

    await asyncio.gather(*(side() for _ in range(10) for side in (order_first, payment_first, refund_first)))

    async with uow_factory(readonly=True) as uow:
        got, paid, refunded = (
            await uow.orders.get(order.id),
            await uow.payments.get(payment.id),
            await uow.refunds.get(refund.id),
        )
    assert got is not None and paid is not None and refunded is not None
    assert (got.version, paid.version, refunded.version) == (order.version + 30, 31, 31)


async def _refund(uow_factory: UnitOfWorkFactory, refund_id: str) -> Refund | None:
    async with uow_factory(readonly=True) as uow:
        return await uow.refunds.get(refund_id)


async def test_unsent_refunds_are_pending_without_a_provider_reference_inside_the_window(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock, order: Order
) -> None:
    card = make.payment(order, amount=3000, provider_reference="pi_1")
    await store(uow_factory, card)
    before = clock.now()
    clock.advance(seconds=1)
    first = make.refund(card, 100)  # pending, never acknowledged: unsent
    clock.advance(seconds=1)
    acknowledged = make.refund(card, 200)  # pending at the provider: has its reference
    acknowledged.provider_reference = "re_1"
    settled = make.refund(card, 300, status=RefundStatus.SUCCEEDED)
    clock.advance(seconds=1)
    second = make.refund(card, 400)
    clock.advance(seconds=1)
    too_new = make.refund(card, 500)
    await store(uow_factory, first, acknowledged, settled, second, too_new)

    async with uow_factory(readonly=True) as uow:
        assert await uow.refunds.list_unsent(before, too_new.created_at, limit=10) == [first, second]
        assert await uow.refunds.list_unsent(before, too_new.created_at, limit=1) == [first]
        assert await uow.refunds.list_unsent(first.created_at, too_new.created_at, limit=10) == [second]
