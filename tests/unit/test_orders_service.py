"""Order use cases: place, read, list, cancel, fulfil, expire."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from unittest.mock import ANY

import pytest

from core.domain.audit import AuditEntry
from core.domain.catalog import MAX_STOCK, Product
from core.domain.errors import (
    AuthenticationRequired,
    DuplicateProduct,
    InsufficientStock,
    InvalidOrderTransition,
    NotAllowed,
    OrderNotFound,
    UnknownProduct,
    ValidationFailed,
)
from core.domain.events import DomainEvent, order_payload
from core.domain.money import Money
from core.domain.orders import Order, OrderLine, OrderStatus
from core.domain.pagination import PageRequest
from core.domain.payments import PaymentMethod, RefundStatus
from core.domain.users import Actor, Role
from core.services.catalog import AdjustStock, CatalogService, CreateProduct, UpdateProduct
from core.services.orders import (
    CancelOrder,
    FulfilOrder,
    ListOrders,
    OrderItem,
    OrderService,
    OrderSettings,
    PlaceOrder,
)
from core.services.payments import PaymentService, PayOrder
from tests.fakes import FakePaymentGateway, FixedClock, InMemoryDatabase, SequentialIds
from tests.unit.helpers import (
    START,
    actions,
    all_orders,
    all_refunds,
    audit,
    event_types,
    outbox,
    products,
    stored_actor,
)

DEADLINE = START + timedelta(minutes=30)


@pytest.fixture
async def mug(catalog: CatalogService, staff: Actor) -> Product:
    return await catalog.create_product(CreateProduct(actor=staff, sku="MUG-1", name="Blue mug", price=1200, stock=5))


@pytest.fixture
async def lamp(catalog: CatalogService, staff: Actor) -> Product:
    return await catalog.create_product(CreateProduct(actor=staff, sku="LAMP-1", name="Lamp", price=4999, stock=2))


def by_id(product: Product, quantity: int) -> OrderItem:
    return OrderItem(quantity=quantity, product_id=product.id)


def by_sku(sku: str, quantity: int) -> OrderItem:
    return OrderItem(quantity=quantity, sku=sku)


async def place(orders: OrderService, actor: Actor, *items: OrderItem) -> Order:
    return await orders.place_order(PlaceOrder(actor=actor, items=items))


def stock(db: InMemoryDatabase) -> dict[str, int]:
    return {p.sku: p.stock for p in products(db)}


# Placing.
async def test_placing_an_order_snapshots_the_products_and_reserves_their_stock(
    orders: OrderService, db: InMemoryDatabase, customer: Actor, mug: Product, lamp: Product
) -> None:
    order = await place(orders, customer, by_id(mug, 2), by_sku("LAMP-1", 1))

    assert order == Order(
        id=ANY,
        customer_id="usr_customer",
        status=OrderStatus.PENDING_PAYMENT,
        lines=[
            OrderLine(mug.id, "MUG-1", "Blue mug", Money(1200, "USD"), 2),
            OrderLine(lamp.id, "LAMP-1", "Lamp", Money(4999, "USD"), 1),
        ],
        subtotal=Money(7399, "USD"),
        total=Money(7399, "USD"),
        amount_paid=0,
        amount_refunded=0,
        currency="USD",
        created_at=START,
        updated_at=START,
        expires_at=DEADLINE,
        version=1,
    )
    assert all_orders(db) == [order]
    assert stock(db) == {"MUG-1": 3, "LAMP-1": 1}
    assert [p.version for p in products(db)] == [2, 2]  # rendered catalog copies see the change
    assert outbox(db) == [
        DomainEvent(ANY, "order.created", "order", order.id, START, order_payload(order)),
    ]


async def test_the_order_keeps_its_snapshot_when_the_catalog_changes(
    orders: OrderService, catalog: CatalogService, db: InMemoryDatabase, customer: Actor, staff: Actor, mug: Product
) -> None:
    order = await place(orders, customer, by_id(mug, 1))
    await catalog.update_product(UpdateProduct(actor=staff, product_id=mug.id, name="Red mug", price=9999))

    assert (await orders.get_order(customer, order.id)).lines == [
        OrderLine(mug.id, "MUG-1", "Blue mug", Money(1200, "USD"), 1)
    ]


async def test_the_expiry_is_configurable(
    db: InMemoryDatabase,
    gateway: FakePaymentGateway,
    clock: FixedClock,
    ids: SequentialIds,
    customer: Actor,
    mug: Product,
) -> None:
    service = OrderService(db, gateway, clock, ids, "USD", OrderSettings(expiry=timedelta(minutes=5)))
    order = await place(service, customer, by_id(mug, 1))
    assert order.expires_at == START + timedelta(minutes=5)


async def test_an_order_with_nothing_to_pay_is_paid_when_placed(
    orders: OrderService, catalog: CatalogService, db: InMemoryDatabase, customer: Actor, staff: Actor
) -> None:
    await catalog.create_product(CreateProduct(actor=staff, sku="FREE-1", name="Sticker", price=0, stock=9))
    order = await place(orders, customer, by_sku("FREE-1", 3))
    assert (order.status, order.total.amount) == (OrderStatus.PAID, 0)
    assert event_types(db) == ["order.created", "order.paid"]


async def test_every_short_line_is_named_and_nothing_changes(
    orders: OrderService, db: InMemoryDatabase, customer: Actor, mug: Product, lamp: Product, catalog: CatalogService
) -> None:
    await catalog.create_product(
        CreateProduct(
            actor=stored_actor(db, "usr_s", Role.STAFF, "10.0.0.9"), sku="PEN-1", name="Pen", price=100, stock=10
        )
    )
    before = repr(db.store)

    with pytest.raises(InsufficientStock) as caught:
        await place(orders, customer, by_id(mug, 6), by_sku("PEN-1", 10), by_sku("LAMP-1", 3))

    assert (caught.value.code, caught.value.details) == (
        "insufficient_stock",
        {
            "lines": [
                {"index": 0, "product_id": mug.id, "sku": "MUG-1", "requested": 6, "available": 5},
                {"index": 2, "product_id": lamp.id, "sku": "LAMP-1", "requested": 3, "available": 2},
            ]
        },
    )
    assert repr(db.store) == before


async def test_unknown_and_inactive_products_are_named_line_by_line(
    orders: OrderService, catalog: CatalogService, db: InMemoryDatabase, customer: Actor, staff: Actor, mug: Product
) -> None:
    hidden = await catalog.create_product(CreateProduct(actor=staff, sku="OLD-1", name="Old", price=5, active=False))
    before = repr(db.store)

    with pytest.raises(UnknownProduct) as caught:
        await place(
            orders,
            customer,
            by_id(mug, 1),
            OrderItem(quantity=1, product_id="prd_nothing"),
            by_sku("NOPE-1", 1),
            by_id(hidden, 1),
            by_sku("mug-1", 1),  # skus are exact
        )

    assert (caught.value.code, caught.value.details) == (
        "unknown_product",
        {
            "lines": [
                {"index": 1, "product_id": "prd_nothing"},
                {"index": 2, "sku": "NOPE-1"},
                {"index": 3, "product_id": hidden.id},
                {"index": 4, "sku": "mug-1"},
            ]
        },
    )
    assert repr(db.store) == before


async def test_a_product_named_twice_is_refused_even_once_by_id_and_once_by_sku(
    orders: OrderService, db: InMemoryDatabase, customer: Actor, mug: Product
) -> None:
    before = repr(db.store)
    with pytest.raises(DuplicateProduct) as caught:
        await place(orders, customer, by_id(mug, 1), by_sku("MUG-1", 1))
    assert caught.value.details == {"product_id": mug.id, "lines": [0, 1]}
    assert repr(db.store) == before


@pytest.mark.parametrize(
    ("items", "fields"),
    [
        ((), {"items": "an order has at least one line"}),
        (tuple(OrderItem(1, sku=f"S-{n}") for n in range(101)), {"items": "an order has at most 100 lines"}),
        ((OrderItem(0, sku="MUG-1"),), {"items[0].quantity": "must be an integer from 1 to 1000"}),
        (
            (OrderItem(1, sku="MUG-1"), OrderItem(-2, sku="X")),
            {"items[1].quantity": "must be an integer from 1 to 1000"},
        ),
        ((OrderItem(1001, sku="MUG-1"),), {"items[0].quantity": "must be an integer from 1 to 1000"}),
        ((OrderItem(2.0, sku="MUG-1"),), {"items[0].quantity": "must be an integer from 1 to 1000"}),  # type: ignore[arg-type]
        ((OrderItem("2", sku="MUG-1"),), {"items[0].quantity": "must be an integer from 1 to 1000"}),  # type: ignore[arg-type]
        ((OrderItem(1),), {"items[0]": "name the product by product_id or by sku (one of them)"}),
        (
            (OrderItem(1, product_id="prd_1", sku="MUG-1"),),
            {"items[0]": "name the product by product_id or by sku (one of them)"},
        ),
        ((OrderItem(1, sku=""),), {"items[0]": "name the product by product_id or by sku (one of them)"}),
    ],
)
async def test_bad_items_are_refused_before_anything_is_read(
    orders: OrderService,
    db: InMemoryDatabase,
    customer: Actor,
    mug: Product,
    items: tuple[OrderItem, ...],
    fields: dict[str, str],
) -> None:
    before = repr(db.store)
    with pytest.raises(ValidationFailed) as caught:
        await orders.place_order(PlaceOrder(actor=customer, items=items))
    assert caught.value.details == {"fields": fields}
    assert repr(db.store) == before


async def test_an_anonymous_caller_cannot_order(orders: OrderService, anonymous: Actor, mug: Product) -> None:
    with pytest.raises(AuthenticationRequired):
        await place(orders, anonymous, by_id(mug, 1))


async def test_fifty_concurrent_orders_for_the_last_ten_units_give_ten_orders(
    orders: OrderService, catalog: CatalogService, db: InMemoryDatabase, staff: Actor
) -> None:
    last = await catalog.create_product(CreateProduct(actor=staff, sku="LAST-1", name="Last", price=100, stock=10))
    customers = [stored_actor(db, f"usr_{n}", Role.CUSTOMER, "10.0.1.1") for n in range(50)]

    outcomes = await asyncio.gather(*(place(orders, c, by_id(last, 1)) for c in customers), return_exceptions=True)

    placed = [o for o in outcomes if isinstance(o, Order)]
    assert len(placed) == 10
    assert [type(o) for o in outcomes if not isinstance(o, Order)] == [InsufficientStock] * 40
    assert stock(db)["LAST-1"] == 0
    assert len(all_orders(db)) == 10
    assert products(db)[0].version == 11


# Reading.
async def test_a_customer_sees_their_own_orders_and_staff_see_all(
    orders: OrderService, customer: Actor, staff: Actor, anonymous: Actor, mug: Product
) -> None:
    order = await place(orders, customer, by_id(mug, 1))
    other = Actor("usr_other", Role.CUSTOMER)

    assert await orders.get_order(customer, order.id) == order
    assert await orders.get_order(staff, order.id) == order
    for outsider in (other, anonymous):
        with pytest.raises(OrderNotFound) as caught:
            await orders.get_order(outsider, order.id)
        assert (caught.value.code, caught.value.details) == ("order_not_found", {"order_id": order.id})
    with pytest.raises(OrderNotFound):
        await orders.get_order(staff, "ord_nothing")


async def test_lists_are_newest_first_per_customer_for_customers(
    orders: OrderService,
    db: InMemoryDatabase,
    customer: Actor,
    staff: Actor,
    anonymous: Actor,
    mug: Product,
    lamp: Product,
) -> None:
    other = stored_actor(db, "usr_other", Role.CUSTOMER, "10.0.1.2")
    first = await place(orders, customer, by_id(mug, 1))
    theirs = await place(orders, other, by_id(mug, 1))
    second = await place(orders, customer, by_id(lamp, 1))
    await orders.cancel_order(CancelOrder(actor=customer, order_id=first.id))

    mine = await orders.list_orders(ListOrders(actor=customer))
    assert [o.id for o in mine.items] == [second.id, first.id]
    # A customer cannot look at someone else's list by asking for it.
    assert [o.id for o in (await orders.list_orders(ListOrders(actor=customer, customer_id=other.user_id))).items] == [
        second.id,
        first.id,
    ]
    cancelled = await orders.list_orders(ListOrders(actor=customer, status=OrderStatus.CANCELLED))
    assert [(o.id, o.status) for o in cancelled.items] == [(first.id, OrderStatus.CANCELLED)]

    everyone = await orders.list_orders(ListOrders(actor=staff, page=PageRequest(limit=2)))
    assert ([o.id for o in everyone.items], everyone.has_more) == ([second.id, theirs.id], True)
    rest = await orders.list_orders(ListOrders(actor=staff, page=PageRequest(limit=2, after=everyone.next_after)))
    assert ([o.id for o in rest.items], rest.next_after) == ([first.id], None)
    one = await orders.list_orders(ListOrders(actor=staff, customer_id="usr_other"))
    assert [o.id for o in one.items] == [theirs.id]

    with pytest.raises(AuthenticationRequired):
        await orders.list_orders(ListOrders(actor=anonymous))


# Cancelling.
async def test_cancelling_an_unpaid_order_releases_its_stock(
    orders: OrderService, db: InMemoryDatabase, clock: FixedClock, customer: Actor, mug: Product, lamp: Product
) -> None:
    order = await place(orders, customer, by_id(mug, 2), by_id(lamp, 2))
    clock.advance(minutes=1)

    cancelled = await orders.cancel_order(CancelOrder(actor=customer, order_id=order.id, reason="Changed my mind"))

    assert (cancelled.status, cancelled.updated_at, cancelled.version) == (
        OrderStatus.CANCELLED,
        START + timedelta(minutes=1),
        2,
    )
    assert all_orders(db) == [cancelled]
    assert stock(db) == {"MUG-1": 5, "LAMP-1": 2}
    assert event_types(db) == ["order.created", "order.cancelled"]
    assert outbox(db)[-1].payload["status"] == "cancelled"
    assert audit(db)[-1] == AuditEntry(
        id=ANY,
        at=clock.now(),
        actor_id="usr_customer",
        action="order.cancelled",
        object_type="order",
        object_id=order.id,
        source_ip="10.0.0.4",
        details={"status": "pending_payment", "reason": "Changed my mind", "amount_paid": 0},
    )
    assert all_refunds(db) == []


async def test_a_deleted_product_gets_nothing_back_and_the_others_do(
    orders: OrderService,
    catalog: CatalogService,
    db: InMemoryDatabase,
    customer: Actor,
    staff: Actor,
    mug: Product,
    lamp: Product,
) -> None:
    from core.services.catalog import DeleteProduct

    order = await place(orders, customer, by_id(mug, 2), by_id(lamp, 1))
    await catalog.delete_product(DeleteProduct(actor=staff, product_id=lamp.id))

    await orders.cancel_order(CancelOrder(actor=staff, order_id=order.id))

    assert stock(db) == {"MUG-1": 5}


async def test_cancelling_a_card_paid_order_refunds_it_through_the_provider(
    orders: OrderService,
    payments: PaymentService,
    gateway: FakePaymentGateway,
    db: InMemoryDatabase,
    customer: Actor,
    staff: Actor,
    mug: Product,
) -> None:
    order = await place(orders, customer, by_id(mug, 2))
    payment = await payments.pay(
        PayOrder(actor=customer, order_id=order.id, method=PaymentMethod.CARD, payment_method="pm_card_visa")
    )

    cancelled = await orders.cancel_order(CancelOrder(actor=staff, order_id=order.id))

    assert (cancelled.status, cancelled.amount_paid, cancelled.amount_refunded) == (OrderStatus.CANCELLED, 2400, 2400)
    assert all_orders(db) == [cancelled]
    assert stock(db)["MUG-1"] == 5
    (refund,) = all_refunds(db)
    assert (refund.payment_id, refund.amount, refund.status, refund.reason) == (
        payment.id,
        Money(2400, "USD"),
        RefundStatus.SUCCEEDED,
        "Order cancelled.",
    )
    assert gateway.calls["refund"] == 1
    assert gateway.intents[payment.provider_reference or ""].refunded == 2400
    assert event_types(db) == [
        "order.created",
        "payment.succeeded",
        "order.paid",
        "order.cancelled",
        "refund.created",
    ]
    assert actions(db)[-2:] == ["order.cancelled", "refund.created"]


async def test_a_cancellation_stands_when_the_provider_cannot_refund_yet(
    orders: OrderService,
    payments: PaymentService,
    gateway: FakePaymentGateway,
    db: InMemoryDatabase,
    customer: Actor,
    staff: Actor,
    mug: Product,
) -> None:
    order = await place(orders, customer, by_id(mug, 2))
    await payments.pay(
        PayOrder(actor=customer, order_id=order.id, method=PaymentMethod.CARD, payment_method="pm_card_visa")
    )
    gateway.down = True

    cancelled = await orders.cancel_order(CancelOrder(actor=staff, order_id=order.id))

    assert (cancelled.status, cancelled.amount_paid, cancelled.amount_refunded) == (OrderStatus.CANCELLED, 2400, 0)
    (refund,) = all_refunds(db)
    assert refund.status is RefundStatus.PENDING  # reserved: nobody can refund it twice
    gateway.down = False
    (retried,) = await payments.retry_pending_refunds(staff, order.id)
    assert (retried.id, retried.status) == (refund.id, RefundStatus.SUCCEEDED)
    assert all_orders(db)[0].amount_refunded == 2400


async def test_cancelling_a_manually_paid_order_records_the_refund(
    orders: OrderService,
    payments: PaymentService,
    gateway: FakePaymentGateway,
    db: InMemoryDatabase,
    customer: Actor,
    staff: Actor,
    mug: Product,
) -> None:
    order = await place(orders, customer, by_id(mug, 2))
    await payments.pay(
        PayOrder(actor=staff, order_id=order.id, method=PaymentMethod.MANUAL, reference="Cash", amount=1000)
    )

    cancelled = await orders.cancel_order(CancelOrder(actor=staff, order_id=order.id, reason="Out of stock"))

    assert (cancelled.status, cancelled.amount_paid, cancelled.amount_refunded) == (OrderStatus.CANCELLED, 1000, 1000)
    assert all_orders(db) == [cancelled]
    assert [(r.amount.amount, r.status, r.reason) for r in all_refunds(db)] == [
        (1000, RefundStatus.SUCCEEDED, "Out of stock")
    ]
    assert gateway.calls["refund"] == 0


@pytest.mark.parametrize("status", ["fulfilled", "cancelled", "expired"])
async def test_an_order_past_payment_cannot_be_cancelled(
    orders: OrderService,
    payments: PaymentService,
    clock: FixedClock,
    db: InMemoryDatabase,
    customer: Actor,
    staff: Actor,
    mug: Product,
    status: str,
) -> None:
    order = await place(orders, customer, by_id(mug, 1))
    if status == "fulfilled":
        await payments.pay(PayOrder(actor=staff, order_id=order.id, method=PaymentMethod.MANUAL, reference="Cash"))
        await orders.fulfil_order(FulfilOrder(actor=staff, order_id=order.id))
    elif status == "cancelled":
        await orders.cancel_order(CancelOrder(actor=customer, order_id=order.id))
    else:
        clock.advance(minutes=31)
        await orders.expire_due()
    before = repr(db.store)

    with pytest.raises(InvalidOrderTransition) as caught:
        await orders.cancel_order(CancelOrder(actor=customer, order_id=order.id))

    assert (caught.value.code, caught.value.details) == ("invalid_order_state", {"status": status, "action": "cancel"})
    assert repr(db.store) == before


async def test_another_customers_order_cannot_be_cancelled(
    orders: OrderService, db: InMemoryDatabase, customer: Actor, mug: Product
) -> None:
    order = await place(orders, customer, by_id(mug, 1))
    other = stored_actor(db, "usr_other", Role.CUSTOMER, "10.0.1.2")
    before = repr(db.store)
    with pytest.raises(OrderNotFound):
        await orders.cancel_order(CancelOrder(actor=other, order_id=order.id))
    assert repr(db.store) == before


# Fulfilling.
async def test_staff_fulfil_a_paid_order(
    orders: OrderService,
    payments: PaymentService,
    db: InMemoryDatabase,
    clock: FixedClock,
    customer: Actor,
    staff: Actor,
    mug: Product,
) -> None:
    order = await place(orders, customer, by_id(mug, 1))
    with pytest.raises(InvalidOrderTransition) as caught:
        await orders.fulfil_order(FulfilOrder(actor=staff, order_id=order.id))
    assert caught.value.details == {"status": "pending_payment", "action": "fulfil"}
    await payments.pay(PayOrder(actor=staff, order_id=order.id, method=PaymentMethod.MANUAL, reference="Cash"))
    with pytest.raises(NotAllowed):
        await orders.fulfil_order(FulfilOrder(actor=customer, order_id=order.id))

    clock.advance(hours=2)
    fulfilled = await orders.fulfil_order(FulfilOrder(actor=staff, order_id=order.id))

    assert (fulfilled.status, fulfilled.updated_at) == (OrderStatus.FULFILLED, clock.now())
    assert all_orders(db) == [fulfilled]
    assert event_types(db)[-1] == "order.fulfilled"
    assert (audit(db)[-1].action, audit(db)[-1].actor_id, audit(db)[-1].object_id) == (
        "order.fulfilled",
        "usr_staff",
        order.id,
    )


# Expiry.
async def test_unpaid_orders_expire_after_their_deadline_and_give_back_their_stock(
    orders: OrderService,
    payments: PaymentService,
    db: InMemoryDatabase,
    clock: FixedClock,
    customer: Actor,
    staff: Actor,
    mug: Product,
    lamp: Product,
) -> None:
    first = await place(orders, customer, by_id(mug, 2), by_id(lamp, 1))
    clock.advance(minutes=10)
    second = await place(orders, customer, by_id(mug, 1))
    partly_paid = await place(orders, customer, by_id(mug, 1))
    await payments.pay(
        PayOrder(actor=staff, order_id=partly_paid.id, method=PaymentMethod.MANUAL, reference="Cash", amount=1)
    )
    paid = await place(orders, customer, by_id(lamp, 1))
    await payments.pay(PayOrder(actor=staff, order_id=paid.id, method=PaymentMethod.MANUAL, reference="Cash"))
    assert stock(db) == {"MUG-1": 1, "LAMP-1": 0}

    assert await orders.expire_due(DEADLINE - timedelta(microseconds=1)) == []
    assert await orders.expire_due(DEADLINE) == [first.id]
    assert stock(db) == {"MUG-1": 3, "LAMP-1": 1}
    clock.advance(hours=1)
    assert await orders.expire_due() == [second.id]
    assert await orders.expire_due() == []  # idempotent

    assert [o.status for o in all_orders(db)] == [
        OrderStatus.EXPIRED,
        OrderStatus.EXPIRED,
        OrderStatus.PENDING_PAYMENT,  # money was taken: staff decide
        OrderStatus.PAID,
    ]
    assert stock(db) == {"MUG-1": 4, "LAMP-1": 1}
    assert [e.aggregate_id for e in outbox(db) if e.type == "order.expired"] == [first.id, second.id]


async def test_expiry_takes_at_most_the_limit_earliest_deadline_first(
    orders: OrderService, db: InMemoryDatabase, clock: FixedClock, customer: Actor, mug: Product
) -> None:
    placed = []
    for _ in range(4):
        placed.append(await place(orders, customer, by_id(mug, 1)))
        clock.advance(minutes=1)
    clock.advance(hours=1)
    assert await orders.expire_due(limit=3) == [o.id for o in placed[:3]]
    assert await orders.expire_due(limit=3) == [placed[3].id]
    assert stock(db)["MUG-1"] == 5


async def test_sweeps_running_at_once_expire_each_order_once(
    orders: OrderService, db: InMemoryDatabase, clock: FixedClock, customer: Actor, mug: Product
) -> None:
    for _ in range(3):
        await place(orders, customer, by_id(mug, 1))
    clock.advance(hours=1)

    results = await asyncio.gather(*(orders.expire_due() for _ in range(5)))

    assert sorted(len(r) for r in results) == [0, 0, 0, 0, 3]
    assert stock(db)["MUG-1"] == 5
    assert event_types(db).count("order.expired") == 3


async def test_stock_topped_up_to_the_maximum_never_blocks_expiry_and_never_passes_it(
    catalog: CatalogService,
    orders: OrderService,
    clock: FixedClock,
    staff: Actor,
    customer: Actor,
    db: InMemoryDatabase,
) -> None:
    unlimited = await catalog.create_product(
        CreateProduct(actor=staff, sku="EBOOK", name="E-book", price=100, stock=MAX_STOCK)
    )
    mug = await catalog.create_product(CreateProduct(actor=staff, sku="MUG-X", name="Mug", price=500, stock=5))
    await orders.place_order(PlaceOrder(actor=customer, items=[OrderItem(quantity=1, product_id=unlimited.id)]))
    clock.advance(seconds=1)
    await orders.place_order(PlaceOrder(actor=customer, items=[OrderItem(quantity=5, product_id=mug.id)]))
    await catalog.adjust_stock(AdjustStock(actor=staff, product_id=unlimited.id, delta=1))  # topped up again
    clock.advance(minutes=31)

    expired = await orders.expire_due()

    assert len(expired) == 2
    assert {o.status for o in all_orders(db)} == {OrderStatus.EXPIRED}
    assert (await catalog.get_product(staff, mug.id)).stock == 5
    # The units came back, but stock stops at its ceiling: no path takes it past MAX_STOCK,
    # so every later delta is still judged against a stock within bounds.
    assert (await catalog.get_product(staff, unlimited.id)).stock == MAX_STOCK
    assert (await catalog.adjust_stock(AdjustStock(actor=staff, product_id=unlimited.id, delta=-1))).stock == (
        MAX_STOCK - 1
    )


# Who may cancel.
async def test_a_customer_cancels_an_unpaid_order_but_not_one_paid_or_being_paid(
    orders: OrderService,
    payments: PaymentService,
    gateway: FakePaymentGateway,
    db: InMemoryDatabase,
    customer: Actor,
    staff: Actor,
    mug: Product,
) -> None:
    unpaid = await place(orders, customer, by_id(mug, 1))
    assert (await orders.cancel_order(CancelOrder(actor=customer, order_id=unpaid.id))).status is OrderStatus.CANCELLED

    in_cash = await place(orders, customer, by_id(mug, 1))
    await payments.pay(
        PayOrder(actor=staff, order_id=in_cash.id, method=PaymentMethod.MANUAL, reference="till 3", amount=100)
    )
    by_card = await place(orders, customer, by_id(mug, 1))
    gateway.hold()  # the provider has the charge; its answer has not come back
    paying = asyncio.ensure_future(
        payments.pay(
            PayOrder(actor=customer, order_id=by_card.id, method=PaymentMethod.CARD, payment_method="pm_card_visa")
        )
    )
    for _ in range(1000):
        if any(p.order_id == by_card.id for p in db.store.payments.values()):
            break
        await asyncio.sleep(0)
    before = repr(db.store)
    for order in (in_cash, by_card):
        with pytest.raises(NotAllowed) as caught:
            await orders.cancel_order(CancelOrder(actor=customer, order_id=order.id))
        assert caught.value.code == "cancel_needs_staff"
    assert repr(db.store) == before
    gateway.release()
    await paying


async def test_a_store_may_let_customers_cancel_what_they_paid_by_card(
    db: InMemoryDatabase,
    gateway: FakePaymentGateway,
    clock: FixedClock,
    ids: SequentialIds,
    payments: PaymentService,
    customer: Actor,
    staff: Actor,
    mug: Product,
) -> None:
    lenient = OrderService(db, gateway, clock, ids, "USD", OrderSettings(customers_cancel_paid_card_orders=True))
    by_card = await place(lenient, customer, by_id(mug, 1))
    await payments.pay(
        PayOrder(actor=customer, order_id=by_card.id, method=PaymentMethod.CARD, payment_method="pm_card_visa")
    )
    cancelled = await lenient.cancel_order(CancelOrder(actor=customer, order_id=by_card.id))
    assert (cancelled.status, cancelled.amount_refunded) == (OrderStatus.CANCELLED, 1200)

    in_cash = await place(lenient, customer, by_id(mug, 1))
    await payments.pay(PayOrder(actor=staff, order_id=in_cash.id, method=PaymentMethod.MANUAL, reference="cash"))
    with pytest.raises(NotAllowed):  # a cash refund is staff's to hand over
        await lenient.cancel_order(CancelOrder(actor=customer, order_id=in_cash.id))
