"""Orders and payments on a real SQLite file: the use cases under concurrency with group
commit, two instances (processes) on one file, and the schema's own defences."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.ids import UlidIds
from adapters.sqlite import SqliteDatabase
from adapters.sqlite.connection import connect
from core.domain.catalog import Product
from core.domain.errors import InsufficientStock, RefundExceedsCaptured
from core.domain.money import Money
from core.domain.orders import Order, OrderStatus
from core.domain.payments import PaymentMethod, PaymentStatus, RefundStatus
from core.domain.users import Actor, Role, User, UserStatus
from core.ports.unit_of_work import UnitOfWorkFactory
from core.services.orders import OrderItem, OrderService, PlaceOrder
from core.services.payments import PaymentService, PayOrder, RefundPayment
from tests.fakes import FakePaymentGateway, FixedClock, SequentialIds

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CLOCK = FixedClock(T0)
STAFF = Actor("usr_staff", Role.STAFF)


@pytest.fixture
def path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "tillbox.db"


@pytest.fixture
async def db(path: pathlib.Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(path, clock=CLOCK)
    await database.open()
    yield database
    await database.close()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def gateway(clock: FixedClock) -> FakePaymentGateway:
    return FakePaymentGateway(clock)


@pytest.fixture
def ids() -> SequentialIds:
    return SequentialIds()


@pytest.fixture
def orders(db: SqliteDatabase, gateway: FakePaymentGateway, clock: FixedClock, ids: SequentialIds) -> OrderService:
    return OrderService(db, gateway, clock, ids, "USD")


@pytest.fixture
def payments(db: SqliteDatabase, gateway: FakePaymentGateway, clock: FixedClock, ids: SequentialIds) -> PaymentService:
    return PaymentService(db, gateway, clock, ids)


async def add_product(db: UnitOfWorkFactory, n: int, *, stock: int, price: int = 1000) -> Product:
    product = Product(
        id=f"prd_{n:06d}",
        sku=f"SKU-{n}",
        name=f"Thing {n}",
        description="",
        price=Money(price, "USD"),
        stock=stock,
        active=True,
        created_at=T0,
        updated_at=T0,
    )
    async with db() as uow:
        await uow.products.add(product)
        await uow.commit()
    return product


def customer(n: int) -> Actor:
    return Actor(f"usr_{n:04d}", Role.CUSTOMER)


@pytest.fixture(autouse=True)
async def accounts(db: SqliteDatabase) -> None:
    await add_accounts(db)


async def add_accounts(db: UnitOfWorkFactory) -> None:
    """The accounts of STAFF and of customer(0) to customer(99): use cases check them."""
    async with db() as uow:
        for actor in [STAFF, *(customer(n) for n in range(100))]:
            assert actor.user_id is not None
            email = f"{actor.user_id}@example.com"
            await uow.users.add(
                User(
                    id=actor.user_id,
                    email=email,
                    email_skeleton=email,
                    password_hash="fake$",
                    role=actor.role,
                    status=UserStatus.ACTIVE,
                    created_at=T0,
                    updated_at=T0,
                )
            )
        await uow.commit()


async def test_fifty_concurrent_orders_for_the_last_ten_units(db: SqliteDatabase, orders: OrderService) -> None:
    last = await add_product(db, 1, stock=10)
    plenty = await add_product(db, 2, stock=1000)

    outcomes = await asyncio.gather(
        *(
            orders.place_order(
                PlaceOrder(customer(n), [OrderItem(2, product_id=plenty.id), OrderItem(1, product_id=last.id)])
            )
            for n in range(50)
        ),
        return_exceptions=True,
    )

    placed = [o for o in outcomes if isinstance(o, Order)]
    refused = [o for o in outcomes if not isinstance(o, Order)]
    assert len(placed) == 10
    assert {type(o) for o in refused} == {InsufficientStock}
    assert len(refused) == 40
    assert db.read_scalar("SELECT stock FROM products WHERE id = ?", (last.id,)) == 0
    assert db.read_scalar("SELECT stock FROM products WHERE id = ?", (plenty.id,)) == 1000 - 20  # nothing half-done
    assert db.read_scalar("SELECT count(*) FROM orders") == 10
    assert db.read_scalar("SELECT count(*) FROM order_lines") == 20
    assert db.read_scalar("SELECT count(*) FROM outbox WHERE type = 'order.created'") == 10
    assert db.stats.largest_batch > 1  # they shared commits


async def test_a_paid_order_round_trips_and_concurrent_refunds_stay_within_the_capture(
    db: SqliteDatabase, orders: OrderService, payments: PaymentService, gateway: FakePaymentGateway
) -> None:
    mug = await add_product(db, 1, stock=5, price=500)
    order = await orders.place_order(PlaceOrder(customer(1), [OrderItem(2, product_id=mug.id)]))
    payment = await payments.pay(PayOrder(customer(1), order.id, PaymentMethod.CARD, payment_method="pm_card_visa"))
    assert payment.status is PaymentStatus.SUCCEEDED
    payload, header = gateway.sent[0]
    event = gateway.parse_event(payload, header)
    assert event is not None
    assert await payments.handle_provider_event(event) is True
    assert await payments.handle_provider_event(event) is False

    outcomes = await asyncio.gather(
        *(payments.refund(RefundPayment(STAFF, order.id, reason="Chipped", amount=100)) for _ in range(20)),
        return_exceptions=True,
    )

    assert sum(isinstance(o, list) for o in outcomes) == 10
    assert [type(o) for o in outcomes if not isinstance(o, list)] == [RefundExceedsCaptured] * 10
    stored = await orders.get_order(STAFF, order.id)
    assert (stored.status, stored.amount_paid, stored.amount_refunded) == (OrderStatus.REFUNDED, 1000, 1000)
    assert db.read_scalar("SELECT sum(amount) FROM refunds WHERE status = 'succeeded'") == 1000
    assert gateway.intents[payment.provider_reference or ""].refunded == 1000
    refunds = await payments.list_refunds(STAFF, order.id)
    assert {r.status for r in refunds} == {RefundStatus.SUCCEEDED}


class HeldUnits:
    """A unit-of-work factory in front of ``inner`` that says when a write unit begins
    (``began``) and, if given ``release``, holds that unit's commit, its transaction open,
    until ``release`` is set (``holding`` says it is held)."""

    def __init__(self, inner: UnitOfWorkFactory, release: asyncio.Event | None = None):
        self.inner = inner
        self.release = release
        self.began = asyncio.Event()
        self.holding = asyncio.Event()

    def __call__(self, *, readonly: bool = False) -> Any:
        return self.inner(readonly=True) if readonly else _HeldUnit(self, self.inner())

    def change_counter(self) -> int:
        return self.inner.change_counter()


class _HeldUnit:
    def __init__(self, held: HeldUnits, inner: Any):
        self._held = held
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> _HeldUnit:
        self._held.began.set()
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._inner.__aexit__(*exc)

    async def commit(self) -> None:
        if self._held.release is not None:
            self._held.holding.set()
            await self._held.release.wait()
        await self._inner.commit()


async def test_two_instances_sweeping_one_file_expire_each_order_once(
    path: pathlib.Path, db: SqliteDatabase, orders: OrderService, gateway: FakePaymentGateway, clock: FixedClock
) -> None:
    # Each order holds 3 of its own product and 1 of a shared one: a release given twice shows.
    shared = await add_product(db, 0, stock=100)
    own = [await add_product(db, n, stock=5) for n in range(1, 21)]
    by_deadline = []  # a second apart, so that which sweep takes which order is exact
    for n, product in enumerate(own):
        items = [OrderItem(3, product_id=product.id), OrderItem(1, product_id=shared.id)]
        by_deadline.append((await orders.place_order(PlaceOrder(customer(n), items))).id)
        clock.advance(seconds=1)
    # Two processes: each its own database instance (connections, write lock) and its own ids.
    other_db = SqliteDatabase(path, busy_timeout_ms=60_000, clock=clock)  # it waits for the first one's lock
    await other_db.open()
    try:
        second = HeldUnits(other_db)
        first = HeldUnits(db, release=second.began)
        one = OrderService(first, gateway, clock, UlidIds(), "USD")
        two = OrderService(second, gateway, clock, UlidIds(), "USD")
        later = T0 + timedelta(hours=1)

        # The race: the second sweep starts, and finds orders due, while the first one has
        # taken its batch of them and not yet committed; then the first commits.
        sweeping = asyncio.create_task(one.expire_due(later, limit=12))
        async with asyncio.timeout(30):
            await first.holding.wait()
        by_first, by_second = await asyncio.gather(sweeping, two.expire_due(later, limit=100))
    finally:
        await other_db.close()

    assert by_first == by_deadline[:12]  # its batch, oldest first
    assert by_second == by_deadline[12:]  # the rest, and none of the first's
    assert db.read_scalar("SELECT stock FROM products WHERE id = ?", (shared.id,)) == 100
    assert [db.read_scalar("SELECT stock FROM products WHERE id = ?", (p.id,)) for p in own] == [5] * 20
    assert db.read_scalar("SELECT count(*) FROM orders WHERE status = 'expired'") == 20
    events = db.reader_connection().execute(
        "SELECT aggregate_id, count(*) FROM outbox WHERE type = 'order.expired' GROUP BY aggregate_id"
    )
    assert dict(events.fetchall()) == {order_id: 1 for order_id in by_deadline}


# The schema's own defences, behind the domain's.
async def test_the_schema_refuses_refunds_beyond_what_was_captured(
    db: SqliteDatabase, orders: OrderService, payments: PaymentService, path: pathlib.Path
) -> None:
    mug = await add_product(db, 1, stock=5, price=500)
    order = await orders.place_order(PlaceOrder(customer(1), [OrderItem(2, product_id=mug.id)]))
    payment = await payments.pay(PayOrder(STAFF, order.id, PaymentMethod.MANUAL, reference="Cash"))
    await payments.refund(RefundPayment(STAFF, order.id, reason="Partly", amount=500))

    raw = connect(path, busy_timeout_ms=1000)
    try:
        insert = (
            "INSERT INTO refunds (id, payment_id, order_id, amount, currency, reason, status, created_at,"
            " updated_at, version) VALUES (?, ?, ?, ?, 'USD', 'x', ?, 't', 't', 1)"
        )
        with pytest.raises(sqlite3.IntegrityError, match="refunds exceed what the payment captured"):
            raw.execute(insert, ("ref_x1", payment.id, order.id, 501, "pending"))
        raw.execute(insert, ("ref_x2", payment.id, order.id, 501, "failed"))  # a failed refund took nothing
        raw.execute(insert, ("ref_x3", payment.id, order.id, 500, "succeeded"))
        with pytest.raises(sqlite3.IntegrityError, match="refunds exceed what the payment captured"):
            raw.execute(insert, ("ref_x4", payment.id, order.id, 1, "succeeded"))
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            raw.execute("UPDATE orders SET amount_refunded = amount_paid + 1")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            raw.execute("UPDATE orders SET status = 'lost'")
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE constraint failed"):
            raw.execute(
                "INSERT INTO order_lines (order_id, line_no, product_id, sku, name, unit_price, quantity)"
                " VALUES (?, 1, ?, 'SKU-1', 'Thing', 500, 1)",
                (order.id, mug.id),
            )
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            raw.execute(
                "INSERT INTO order_lines (order_id, line_no, product_id, sku, name, unit_price, quantity)"
                " VALUES (?, 1, 'prd_other', 'SKU-9', 'Thing', 500, 1001)",
                (order.id,),
            )
    finally:
        raw.close()


async def test_deleting_a_product_keeps_the_orders_that_sold_it(
    db: SqliteDatabase, orders: OrderService, path: pathlib.Path
) -> None:
    mug = await add_product(db, 1, stock=5)
    order = await orders.place_order(PlaceOrder(customer(1), [OrderItem(2, product_id=mug.id)]))
    async with db() as uow:
        assert await uow.products.delete(mug.id) is True
        await uow.commit()

    stored = await orders.get_order(STAFF, order.id)
    assert [(line.product_id, line.sku, line.quantity) for line in stored.lines] == [(mug.id, "SKU-1", 2)]
