"""OrderRepository: every adapter behaves the same (see core/ports/repositories.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.domain.errors import ConcurrentUpdate
from core.domain.money import Money
from core.domain.orders import Order, OrderLine, OrderStatus
from core.domain.pagination import Page, PageRequest
from core.ports.repositories import OrderFilter
from core.ports.unit_of_work import UnitOfWorkFactory
from tests.contract.builders import Make, store
from tests.fakes import FixedClock


async def _get(uow_factory: UnitOfWorkFactory, order_id: str) -> Order | None:
    async with uow_factory(readonly=True) as uow:
        return await uow.orders.get(order_id)


async def _ids(uow_factory: UnitOfWorkFactory, f: OrderFilter, limit: int = 100) -> list[str]:
    """The ids of every match, following pages of `limit`."""
    ids: list[str] = []
    after = None
    async with uow_factory(readonly=True) as uow:
        while True:
            page = await uow.orders.list(PageRequest(limit=limit, after=after), f)
            ids += [o.id for o in page.items]
            if page.next_after is None:
                return ids
            after = page.next_after


async def test_an_order_reads_back_exactly_as_added_with_its_lines_in_order(
    uow_factory: UnitOfWorkFactory, make: Make
) -> None:
    # More lines than sort the same by any other column, and text that must survive.
    order = make.order(("ZED-9", 100, 1), ("ÄPFEL-1", 0, 1000), ("MUG-1", 1200, 2), ("BED-2", 99_999, 3))
    order.lines[1] = OrderLine("prd_x", "ÄPFEL-1", "Äpfel „Boskoop“ 🍎", Money(0, "USD"), 1000)
    other = make.order(expires_in=None, status=OrderStatus.PAID, amount_paid=2400)
    await store(uow_factory, order, other)

    async with uow_factory(readonly=True) as uow:
        assert await uow.orders.get(order.id) == order
        assert await uow.orders.get(other.id) == other
        assert await uow.orders.get("ord_nothing") is None
    stored = await _get(uow_factory, order.id)
    assert stored is not None
    assert [line.sku for line in stored.lines] == ["ZED-9", "ÄPFEL-1", "MUG-1", "BED-2"]
    assert stored.lines[3].line_total == Money(299_997, "USD")


async def test_get_many_returns_the_orders_that_exist(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    a, b, c = make.order(), make.order(("LAMP-1", 5000, 1)), make.order()
    await store(uow_factory, a, b, c)
    async with uow_factory(readonly=True) as uow:
        found = await uow.orders.get_many([c.id, "ord_missing", b.id, b.id])
        nothing = await uow.orders.get_many([])
    assert sorted(found, key=lambda o: o.id) == [b, c]
    assert nothing == []


async def test_an_order_left_without_commit_leaves_no_lines(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    order = make.order(("A", 1, 1), ("B", 2, 2))
    async with uow_factory() as uow:
        await uow.orders.add(order)
        # leaving without commit
    await store(uow_factory, order)  # the same id and lines go in cleanly
    assert await _get(uow_factory, order.id) == order


async def test_update_persists_status_amounts_deadline_and_version(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    order = make.order(("MUG-1", 1200, 2))
    await store(uow_factory, order)
    clock.advance(minutes=5)

    async with uow_factory() as uow:
        stored = await uow.orders.get(order.id)
        assert stored is not None
        assert stored.record_payment(1000, at=clock.now()) is False  # partial: no deadline any more
        await uow.orders.update(stored)
        assert stored.version == 2  # the saved object moves with the row
        await uow.commit()
    after_partial = await _get(uow_factory, order.id)
    assert after_partial is not None
    assert (after_partial.status, after_partial.amount_paid, after_partial.expires_at, after_partial.version) == (
        OrderStatus.PENDING_PAYMENT,
        1000,
        None,
        2,
    )

    async with uow_factory() as uow:
        stored = await uow.orders.get(order.id)
        assert stored is not None
        assert stored.record_payment(1400, at=clock.now()) is True
        stored.record_refund(400, at=clock.now())
        await uow.orders.update(stored)
        await uow.commit()

    assert await _get(uow_factory, order.id) == Order(
        id=order.id,
        customer_id=order.customer_id,
        status=OrderStatus.PARTIALLY_REFUNDED,
        lines=order.lines,
        subtotal=Money(2400, "USD"),
        total=Money(2400, "USD"),
        amount_paid=2400,
        amount_refunded=400,
        currency="USD",
        created_at=order.created_at,
        updated_at=clock.now(),
        expires_at=None,
        version=3,  # two transitions, one save
    )


async def test_an_update_from_a_stale_read_is_a_concurrent_update(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    order = make.order()
    await store(uow_factory, order)
    first, second = await _get(uow_factory, order.id), await _get(uow_factory, order.id)
    assert first is not None
    assert second is not None

    first.cancel(at=clock.now())
    async with uow_factory() as uow:
        await uow.orders.update(first)
        await uow.commit()
    second.record_payment(order.total.amount, at=clock.now())  # read at version 1; the row is at 2
    async with uow_factory() as uow:
        with pytest.raises(ConcurrentUpdate):
            await uow.orders.update(second)
        with pytest.raises(ConcurrentUpdate):
            await uow.orders.update(make.order())  # never added

    stored = await _get(uow_factory, order.id)
    assert stored is not None
    assert (stored.status, stored.amount_paid, stored.version) == (OrderStatus.CANCELLED, 0, 2)


# Lists.
async def test_lists_are_newest_first_and_paginated_by_the_last_id(uow_factory: UnitOfWorkFactory, make: Make) -> None:
    orders = [make.order() for _ in range(5)]
    await store(uow_factory, *orders)
    newest_first = orders[::-1]

    async with uow_factory(readonly=True) as uow:
        first = await uow.orders.list(PageRequest(limit=2), OrderFilter())
        second = await uow.orders.list(PageRequest(limit=2, after=first.next_after), OrderFilter())
        third = await uow.orders.list(PageRequest(limit=2, after=second.next_after), OrderFilter())
        everything = await uow.orders.list(PageRequest(limit=5), OrderFilter())

    assert (first.items, first.has_more) == (newest_first[0:2], True)
    assert (second.items, second.has_more) == (newest_first[2:4], True)
    assert third == Page(items=newest_first[4:5], next_after=None)
    assert everything == Page(items=newest_first, next_after=None)


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        (OrderFilter(), [5, 4, 3, 2, 1, 0]),
        (OrderFilter(customer_id="usr_a"), [4, 2, 0]),
        (OrderFilter(status=OrderStatus.PAID), [3, 2]),
        (OrderFilter(customer_id="usr_a", status=OrderStatus.PAID), [2]),
        (OrderFilter(customer_id="usr_a", status=OrderStatus.PENDING_PAYMENT), [4, 0]),
        (OrderFilter(customer_id="usr_b", status=OrderStatus.REFUNDED), []),
        (OrderFilter(customer_id="usr_nobody"), []),
    ],
)
async def test_lists_filter_by_customer_and_status(
    uow_factory: UnitOfWorkFactory, make: Make, f: OrderFilter, expected: list[int]
) -> None:
    orders = [
        make.order(customer_id="usr_a"),  # 0
        make.order(customer_id="usr_b"),  # 1
        make.order(customer_id="usr_a", status=OrderStatus.PAID, amount_paid=2400),  # 2
        make.order(customer_id="usr_b", status=OrderStatus.PAID, amount_paid=2400),  # 3
        make.order(customer_id="usr_a"),  # 4
        make.order(customer_id="usr_c", status=OrderStatus.CANCELLED),  # 5
    ]
    await store(uow_factory, *orders)

    assert await _ids(uow_factory, f) == [orders[n].id for n in expected]
    assert await _ids(uow_factory, f, limit=1) == [orders[n].id for n in expected]


# Expiry.
async def test_due_for_expiry_gives_unpaid_orders_past_their_deadline_earliest_first(
    uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock
) -> None:
    now = clock.now()
    late = make.order(expires_in=timedelta(minutes=-10))
    later = make.order(expires_in=timedelta(minutes=-20))  # made after, but due before
    exactly_now = make.order(expires_in=timedelta(0))
    not_yet = make.order(expires_in=timedelta(microseconds=1))
    no_deadline = make.order(expires_in=None)
    paid = make.order(expires_in=timedelta(minutes=-30), status=OrderStatus.PAID, amount_paid=2400)
    cancelled = make.order(expires_in=timedelta(minutes=-30), status=OrderStatus.CANCELLED)
    await store(uow_factory, late, later, exactly_now, not_yet, no_deadline, paid, cancelled)

    async with uow_factory(readonly=True) as uow:
        assert await uow.orders.due_for_expiry(now, 100) == [later.id, late.id, exactly_now.id]
        assert await uow.orders.due_for_expiry(now, 2) == [later.id, late.id]
        assert await uow.orders.due_for_expiry(now - timedelta(hours=1), 100) == []
        assert await uow.orders.due_for_expiry(now + timedelta(seconds=1), 100) == [
            later.id,
            late.id,
            exactly_now.id,
            not_yet.id,
        ]


async def test_an_expired_order_is_no_longer_due(uow_factory: UnitOfWorkFactory, make: Make, clock: FixedClock) -> None:
    order = make.order(expires_in=timedelta(minutes=-1))
    await store(uow_factory, order)
    async with uow_factory() as uow:
        stored = await uow.orders.get(order.id)
        assert stored is not None
        stored.expire(at=clock.now())
        await uow.orders.update(stored)
        assert await uow.orders.due_for_expiry(clock.now(), 10) == []  # the unit sees its own write
        await uow.commit()
    async with uow_factory(readonly=True) as uow:
        assert await uow.orders.due_for_expiry(clock.now(), 10) == []
