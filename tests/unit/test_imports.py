"""Imports: many products, or many orders of the past, in one unit of work each."""

from __future__ import annotations

from datetime import timedelta
from unittest.mock import ANY

import pytest

from core.domain.audit import AuditEntry
from core.domain.catalog import Product
from core.domain.errors import NotAllowed, UnknownProduct, ValidationFailed
from core.domain.money import MAX_AMOUNT, Money
from core.domain.orders import OrderStatus
from core.domain.pagination import PageRequest
from core.domain.payments import PaymentMethod, PaymentStatus, RefundStatus
from core.domain.users import Actor
from core.services.catalog import (
    MAX_IMPORT,
    CatalogService,
    CreateProduct,
    ImportProducts,
    ListProducts,
    NewProduct,
    ProductsImported,
)
from core.services.orders import ImportOrders, OrderItem, OrderService, PastOrder
from tests.fakes import InMemoryDatabase
from tests.unit.helpers import START, all_orders, all_payments, all_refunds, audit, outbox, products

LAST_YEAR = START - timedelta(days=365)


# Products.
async def test_an_import_adds_the_new_products_skips_the_known_skus_and_audits_once(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor
) -> None:
    await catalog.create_product(CreateProduct(actor=staff, sku="MUG-1", name="Blue mug", price=1200))
    imported = await catalog.import_products(
        ImportProducts(
            actor=staff,
            products=[
                NewProduct(sku="LAMP-1", name=" Desk lamp ", price=4999, description="Brass.", stock=3),
                NewProduct(sku="MUG-1", name="Another mug", price=1),
                NewProduct(sku="TEA-1", name="Tea towel", price=850, active=False),
                NewProduct(sku="LAMP-1", name="Lamp again", price=2),
            ],
        )
    )

    assert imported == ProductsImported(created=2, skipped=("MUG-1", "LAMP-1"))
    lamp, tea = products(db)[1:]
    assert lamp == Product(
        id=lamp.id,
        sku="LAMP-1",
        name="Desk lamp",
        description="Brass.",
        price=Money(4999, "USD"),
        stock=3,
        active=True,
        created_at=START,
        updated_at=START,
    )
    assert (tea.sku, tea.active, tea.stock) == ("TEA-1", False, 0)
    assert audit(db)[-1] == AuditEntry(
        id=ANY,
        at=START,
        actor_id=staff.user_id,
        action="product.imported",
        object_type="product",
        object_id=None,
        source_ip=staff.source_ip,
        details={"created": 2, "first_sku": "LAMP-1", "last_sku": "TEA-1"},
    )
    assert [e.action for e in audit(db)] == ["product.created", "product.imported"]


async def test_an_import_of_nothing_new_writes_nothing(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor
) -> None:
    await catalog.create_product(CreateProduct(actor=staff, sku="MUG-1", name="Blue mug", price=1200))
    again = ImportProducts(actor=staff, products=[NewProduct(sku="MUG-1", name="Blue mug", price=1200)])
    assert await catalog.import_products(again) == ProductsImported(created=0, skipped=("MUG-1",))
    assert [e.action for e in audit(db)] == ["product.created"]


async def test_one_bad_product_refuses_the_import_and_names_it(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor
) -> None:
    items = [NewProduct(sku="LAMP-1", name="Lamp", price=1), NewProduct(sku="MUG-1", name="Mug", price=-5)]
    with pytest.raises(ValidationFailed) as caught:
        await catalog.import_products(ImportProducts(actor=staff, products=items))
    assert caught.value.details == {"fields": {"products[1].price": f"must be from 0 to {MAX_AMOUNT}"}}
    assert products(db) == []


async def test_imports_are_for_staff_and_bounded(
    catalog: CatalogService, db: InMemoryDatabase, customer: Actor, staff: Actor
) -> None:
    with pytest.raises(NotAllowed):
        await catalog.import_products(ImportProducts(actor=customer, products=[NewProduct("A", "A", 1)]))
    too_many = [NewProduct(f"P-{n}", "P", 1) for n in range(MAX_IMPORT + 1)]
    with pytest.raises(ValidationFailed) as caught:
        await catalog.import_products(ImportProducts(actor=staff, products=too_many))
    assert caught.value.details == {"fields": {"products": f"at most {MAX_IMPORT} per import"}}
    assert products(db) == []


# Orders.
async def _ids(catalog: CatalogService, staff: Actor) -> dict[str, str]:
    page = await catalog.list_products(ListProducts(actor=staff, page=PageRequest(limit=10)))
    return {p.sku: p.id for p in page.items}


async def test_past_orders_come_to_their_status_with_their_payments_and_refunds(
    catalog: CatalogService, orders: OrderService, db: InMemoryDatabase, staff: Actor, customer: Actor
) -> None:
    await catalog.import_products(
        ImportProducts(
            actor=staff,
            products=[
                NewProduct(sku="MUG-1", name="Blue mug", price=1200, stock=5),
                NewProduct("LAMP-1", "Lamp", 4999),
            ],
        )
    )
    ids = await _ids(catalog, staff)
    customer_id = customer.user_id
    assert customer_id is not None

    def past(status: OrderStatus, refunded: int = 0) -> PastOrder:
        items = (OrderItem(product_id=ids["MUG-1"], quantity=2), OrderItem(sku="LAMP-1", quantity=1))
        return PastOrder(customer_id=customer_id, items=items, status=status, placed_at=LAST_YEAR, refunded=refunded)

    statuses = [
        OrderStatus.FULFILLED,
        OrderStatus.PAID,
        OrderStatus.CANCELLED,
        OrderStatus.EXPIRED,
        OrderStatus.REFUNDED,
        OrderStatus.PARTIALLY_REFUNDED,
    ]
    placed = await orders.import_orders(
        ImportOrders(
            actor=staff, orders=[past(s, 1200 if s is OrderStatus.PARTIALLY_REFUNDED else 0) for s in statuses]
        )
    )

    assert all_orders(db) == placed
    assert [o.status for o in placed] == statuses
    assert [(o.total.amount, o.amount_paid, o.amount_refunded) for o in placed] == [
        (7399, 7399, 0),
        (7399, 7399, 0),
        (7399, 0, 0),
        (7399, 0, 0),
        (7399, 7399, 7399),
        (7399, 7399, 1200),
    ]
    assert [(line.sku, line.name, line.quantity) for line in placed[0].lines] == [
        ("MUG-1", "Blue mug", 2),
        ("LAMP-1", "Lamp", 1),
    ]
    assert {o.created_at for o in placed} == {LAST_YEAR}
    assert placed[3].updated_at == LAST_YEAR + timedelta(minutes=30)  # expired when its time was up
    paid = [o.id for o in placed if o.amount_paid]
    assert [(p.order_id, p.method, p.status, p.amount.amount, p.reference) for p in all_payments(db)] == [
        (order_id, PaymentMethod.MANUAL, PaymentStatus.SUCCEEDED, 7399, "imported") for order_id in paid
    ]
    assert [(r.order_id, r.status, r.amount.amount) for r in all_refunds(db)] == [
        (placed[4].id, RefundStatus.SUCCEEDED, 7399),
        (placed[5].id, RefundStatus.SUCCEEDED, 1200),
    ]
    # Stock is what the orders left: untouched. Nothing for webhooks; one audit entry.
    assert [p.stock for p in products(db)] == [5, 0]
    assert outbox(db) == []
    assert [(e.action, e.details) for e in audit(db)][-1] == (
        "order.imported",
        {"cancelled": 1, "expired": 1, "fulfilled": 1, "paid": 1, "partially_refunded": 1, "refunded": 1},
    )


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"status": OrderStatus.PENDING_PAYMENT}, "orders[1].status", "must be one of"),
        ({"placed_at": START + timedelta(seconds=1)}, "orders[1].placed_at", "must not be in the future"),
        (
            {"status": OrderStatus.EXPIRED, "placed_at": START - timedelta(minutes=29)},
            "orders[1].placed_at",
            "is too recent for the order to have expired",
        ),
        ({"customer_id": "usr_nobody"}, "orders[1].customer_id", "is not an account of this store"),
        ({"status": OrderStatus.PARTIALLY_REFUNDED, "refunded": 1200}, "orders[1].refunded", "must be more than 0"),
        ({"items": ()}, "orders[1].items", "an order has at least one line"),
    ],
)
async def test_one_bad_past_order_refuses_the_import_and_names_it(
    catalog: CatalogService,
    orders: OrderService,
    db: InMemoryDatabase,
    staff: Actor,
    customer: Actor,
    change: dict[str, object],
    field: str,
    problem: str,
) -> None:
    await catalog.import_products(ImportProducts(actor=staff, products=[NewProduct("MUG-1", "Blue mug", 1200)]))
    assert customer.user_id is not None
    good = PastOrder(customer_id=customer.user_id, items=(OrderItem(sku="MUG-1", quantity=1),), placed_at=LAST_YEAR)
    bad = PastOrder(**{**{k: getattr(good, k) for k in ("customer_id", "items", "status", "placed_at")}, **change})  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed) as caught:
        await orders.import_orders(ImportOrders(actor=staff, orders=[good, bad]))
    [(name, text)] = caught.value.details["fields"].items()
    assert (name, text.startswith(problem)) == (field, True)
    assert all_orders(db) == []


async def test_a_past_order_of_an_unknown_or_inactive_product_names_its_lines(
    catalog: CatalogService, orders: OrderService, db: InMemoryDatabase, staff: Actor, customer: Actor
) -> None:
    items = [NewProduct("MUG-1", "Blue mug", 1200), NewProduct("OLD-1", "Retired", 100, active=False)]
    await catalog.import_products(ImportProducts(actor=staff, products=items))
    assert customer.user_id is not None
    lines = (
        OrderItem(sku="MUG-1", quantity=1),
        OrderItem(sku="OLD-1", quantity=1),
        OrderItem(product_id="prd_x", quantity=1),
    )
    with pytest.raises(UnknownProduct) as caught:
        await orders.import_orders(
            ImportOrders(
                actor=staff, orders=[PastOrder(customer_id=customer.user_id, items=lines, placed_at=LAST_YEAR)]
            )
        )
    assert caught.value.details == {
        "lines": [{"order": 0, "index": 1, "sku": "OLD-1"}, {"order": 0, "index": 2, "product_id": "prd_x"}]
    }
    assert all_orders(db) == []


async def test_order_imports_are_for_staff(orders: OrderService, customer: Actor) -> None:
    assert customer.user_id is not None
    mine = PastOrder(customer_id=customer.user_id, items=(OrderItem(sku="MUG-1", quantity=1),), placed_at=LAST_YEAR)
    with pytest.raises(NotAllowed):
        await orders.import_orders(ImportOrders(actor=customer, orders=[mine]))
