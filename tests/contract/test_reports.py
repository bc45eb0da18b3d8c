"""The figures the dashboard reads (OrderRepository.summary_since and count_with_status,
RefundRepository.count_pending, ProductRepository.low_stock): every adapter the same."""

from __future__ import annotations

from datetime import timedelta

import attrs

from core.domain.money import Money
from core.domain.orders import OrderStatus
from core.domain.payments import RefundStatus
from core.ports.repositories import OrderSummary
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import Make, store
from tests.fakes import FixedClock


async def test_the_summary_counts_the_standing_orders_of_the_currency_placed_since_a_time(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    before = make.order(("OLD-1", 9999, 1))
    clock.advance(hours=1)
    since = clock.now()
    at_the_bound = make.order(("MUG-1", 1200, 2))  # 2400, placed exactly at `since`
    clock.advance(minutes=5)
    paid = make.order(("LAMP-1", 5000, 1), status=OrderStatus.PAID, amount_paid=5000, expires_in=None)
    refunded = make.order(
        ("BED-1", 700, 1), status=OrderStatus.REFUNDED, amount_paid=700, amount_refunded=700, expires_in=None
    )
    cancelled = make.order(("CUP-1", 300, 1), status=OrderStatus.CANCELLED, expires_in=None)
    expired = make.order(("CUP-2", 400, 1), status=OrderStatus.EXPIRED, expires_in=None)
    euros = attrs.evolve(make.order(("EUR-1", 800, 1)), currency="EUR", total=Money(800, "EUR"))
    await store(uow_factory, before, at_the_bound, paid, refunded, cancelled, expired, euros)

    async with uow_factory(readonly=True) as uow:
        assert await uow.orders.summary_since(since, "USD") == OrderSummary(orders=3, total=2400 + 5000 + 700)
        assert await uow.orders.summary_since(since - timedelta(hours=2), "USD") == OrderSummary(4, 9999 + 8100)
        assert await uow.orders.summary_since(since, "EUR") == OrderSummary(1, 800)
        assert await uow.orders.summary_since(clock.now() + timedelta(seconds=1), "USD") == OrderSummary(0, 0)


async def test_orders_are_counted_by_status(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    awaiting = [make.order() for _ in range(3)]
    paid = [make.order(status=OrderStatus.PAID, amount_paid=2400, expires_in=None) for _ in range(2)]
    await store(uow_factory, *awaiting, *paid, make.order(status=OrderStatus.FULFILLED, amount_paid=2400))

    async with uow_factory(readonly=True) as uow:
        assert await uow.orders.count_with_status(OrderStatus.PENDING_PAYMENT) == 3
        assert await uow.orders.count_with_status(OrderStatus.PAID) == 2
        assert await uow.orders.count_with_status(OrderStatus.FULFILLED) == 1
        assert await uow.orders.count_with_status(OrderStatus.REFUNDED) == 0


async def test_pending_refunds_are_counted_and_settled_ones_are_not(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    order = make.order(status=OrderStatus.PAID, amount_paid=2400, expires_in=None)
    payment = make.payment(order, provider_reference="pi_1")
    refunds = [
        make.refund(payment, 100),
        make.refund(payment, 200),
        make.refund(payment, 300, status=RefundStatus.SUCCEEDED),
        make.refund(payment, 400, status=RefundStatus.FAILED),
    ]
    async with uow_factory(readonly=True) as uow:
        assert await uow.refunds.count_pending() == 0
    await store(uow_factory, order, payment, *refunds)

    async with uow_factory(readonly=True) as uow:
        assert await uow.refunds.count_pending() == 2


async def test_low_stock_lists_active_products_at_or_below_the_threshold_lowest_first(
    uow_factory: UnitOfWorkFactory, make: Make
) -> None:
    empty = make.product("EMPTY-1", stock=0)
    three_a = make.product("THREE-A", stock=3)
    three_b = make.product("THREE-B", stock=3)
    at_threshold = make.product("FIVE-1", stock=5)
    plenty = make.product("PLENTY-1", stock=6)
    inactive = make.product("GONE-1", stock=0, active=False)
    await store(uow_factory, plenty, three_b, at_threshold, inactive, empty, three_a)

    async with uow_factory(readonly=True) as uow:
        assert [p.sku for p in await uow.products.low_stock(5, 10)] == ["EMPTY-1", "THREE-A", "THREE-B", "FIVE-1"]
        assert [p.sku for p in await uow.products.low_stock(5, 2)] == ["EMPTY-1", "THREE-A"]
        assert [p.sku for p in await uow.products.low_stock(0, 10)] == ["EMPTY-1"]
        found = await uow.products.low_stock(3, 1)
    assert found == [empty]
    assert three_b.id > three_a.id  # the tie above is broken by id
