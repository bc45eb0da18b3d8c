"""Orders on PostgreSQL with two instances: the races of test_sqlite_orders.py, where each
instance has its own pool and PostgreSQL's row locks, not one writer, order the units."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from adapters.ids import UlidIds
from adapters.postgres import PostgresDatabase
from core.domain.errors import InsufficientStock
from core.services.orders import OrderItem, OrderService, PlaceOrder
from tests.fakes import FakePaymentGateway, FixedClock
from tests.integration.test_sqlite_orders import T0, HeldUnits, add_accounts, add_product, customer
from tests.postgres import emptied_stores

pytestmark = pytest.mark.postgres


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
async def instances(postgres_url: str, clock: FixedClock) -> AsyncIterator[tuple[PostgresDatabase, PostgresDatabase]]:
    async with emptied_stores(postgres_url, clock, 2, pool_max=10) as (first, second):
        yield first, second


@pytest.fixture(autouse=True)
async def accounts(instances: tuple[PostgresDatabase, PostgresDatabase]) -> None:
    await add_accounts(instances[0])


async def _count(db: PostgresDatabase, sql: str, *args: object) -> object:
    return await db.fetchval(sql, *args)


async def test_fifty_orders_over_two_instances_for_the_last_ten_units(
    instances: tuple[PostgresDatabase, PostgresDatabase], clock: FixedClock
) -> None:
    gateway = FakePaymentGateway(clock)
    last = await add_product(instances[0], 1, stock=10)
    services = [OrderService(db, gateway, clock, UlidIds(), "USD") for db in instances]

    async def place(n: int) -> object:
        items = [OrderItem(1, product_id=last.id)]
        return await services[n % 2].place_order(PlaceOrder(customer(n), items))

    outcomes = await asyncio.gather(*(place(n) for n in range(50)), return_exceptions=True)

    assert sum(not isinstance(o, BaseException) for o in outcomes) == 10
    assert [type(o) for o in outcomes if isinstance(o, BaseException)] == [InsufficientStock] * 40
    assert await _count(instances[0], "SELECT stock FROM products WHERE id = $1", last.id) == 0
    assert await _count(instances[1], "SELECT count(*) FROM orders") == 10


async def test_two_instances_sweeping_expire_each_order_once(
    instances: tuple[PostgresDatabase, PostgresDatabase], clock: FixedClock
) -> None:
    gateway = FakePaymentGateway(clock)
    db, other_db = instances
    orders = OrderService(db, gateway, clock, UlidIds(), "USD")
    shared = await add_product(db, 0, stock=100)
    own = [await add_product(db, n, stock=5) for n in range(1, 21)]
    by_deadline = []
    for n, product in enumerate(own):
        items = [OrderItem(3, product_id=product.id), OrderItem(1, product_id=shared.id)]
        by_deadline.append((await orders.place_order(PlaceOrder(customer(n), items))).id)
        clock.advance(seconds=1)
    second = HeldUnits(other_db)
    first = HeldUnits(db, release=second.began)
    one = OrderService(first, gateway, clock, UlidIds(), "USD")
    two = OrderService(second, gateway, clock, UlidIds(), "USD")
    later = T0 + timedelta(hours=1)

    # The second sweep reads every order due, while the first holds its batch uncommitted:
    # it waits for the first's row locks, then finds those orders expired and leaves them.
    sweeping = asyncio.create_task(one.expire_due(later, limit=12))
    async with asyncio.timeout(30):
        await first.holding.wait()
    by_first, by_second = await asyncio.gather(sweeping, two.expire_due(later, limit=100))

    assert by_first == by_deadline[:12]
    assert by_second == by_deadline[12:]
    assert await _count(db, "SELECT stock FROM products WHERE id = $1", shared.id) == 100
    assert [await _count(db, "SELECT stock FROM products WHERE id = $1", p.id) for p in own] == [5] * 20
    assert await _count(db, "SELECT count(*) FROM orders WHERE status = 'expired'") == 20
    rows = await db.fetch(
        "SELECT aggregate_id, count(*) FROM outbox WHERE type = 'order.expired' GROUP BY aggregate_id"
    )
    assert {row[0]: row[1] for row in rows} == {order_id: 1 for order_id in by_deadline}
