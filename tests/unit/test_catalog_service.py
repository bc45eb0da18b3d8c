"""Catalog use cases: create, read, update, deactivate, delete, adjust stock."""

from __future__ import annotations

from datetime import datetime, timedelta
from unittest.mock import ANY

import pytest

from core.domain.audit import AuditEntry
from core.domain.catalog import MAX_STOCK, Product
from core.domain.errors import (
    AuthenticationRequired,
    InsufficientStock,
    NotAllowed,
    ProductNotFound,
    SkuTaken,
    ValidationFailed,
    VersionMismatch,
)
from core.domain.money import Money
from core.domain.users import Actor
from core.services.catalog import AdjustStock, CatalogService, CreateProduct, DeleteProduct, UpdateProduct
from tests.fakes import FixedClock, InMemoryDatabase
from tests.unit.helpers import START, audit, products

SKU_FORM = "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
STORE_CURRENCY = "must be USD, the store's currency"

LATER = START + timedelta(minutes=10)


@pytest.fixture
async def mug(catalog: CatalogService, staff: Actor) -> Product:
    return await catalog.create_product(
        CreateProduct(actor=staff, sku="MUG-1", name="Blue mug", price=1200, description="Stoneware.", stock=5)
    )


def _entry(actor: Actor, action: str, product_id: str, details: dict[str, object], at: datetime = START) -> AuditEntry:
    return AuditEntry(
        id=ANY,
        at=at,
        actor_id=actor.user_id,
        action=action,
        object_type="product",
        object_id=product_id,
        source_ip=actor.source_ip,
        details=details,
    )


# Create.
async def test_create_product_stores_it_and_audits(catalog: CatalogService, db: InMemoryDatabase, staff: Actor) -> None:
    product = await catalog.create_product(
        CreateProduct(actor=staff, sku="MUG-1", name="  Blue mug ", price=1200, description="Stoneware.", stock=5)
    )

    expected = Product(
        id=product.id,
        sku="MUG-1",
        name="Blue mug",
        description="Stoneware.",
        price=Money(1200, "USD"),
        stock=5,
        active=True,
        created_at=START,
        updated_at=START,
        version=1,
    )
    assert product == expected
    assert product.id.startswith("prd_")
    assert products(db) == [expected]
    assert audit(db) == [_entry(staff, "product.created", product.id, {"sku": "MUG-1", "price": 1200, "stock": 5})]


async def test_create_product_defaults(catalog: CatalogService, staff: Actor) -> None:
    product = await catalog.create_product(CreateProduct(actor=staff, sku="PEN", name="Pen", price=0))

    assert (product.description, product.stock, product.active, product.price) == ("", 0, True, Money(0, "USD"))


async def test_create_accepts_the_store_currency_named_explicitly(catalog: CatalogService, staff: Actor) -> None:
    product = await catalog.create_product(CreateProduct(actor=staff, sku="PEN", name="Pen", price=150, currency="USD"))

    assert product.price == Money(150, "USD")


async def test_customers_cannot_create_products(
    catalog: CatalogService, db: InMemoryDatabase, customer: Actor, anonymous: Actor
) -> None:
    with pytest.raises(NotAllowed) as caught:
        await catalog.create_product(CreateProduct(actor=customer, sku="MUG-1", name="Mug", price=100))
    assert caught.value.code == "forbidden"
    with pytest.raises(AuthenticationRequired):
        await catalog.create_product(CreateProduct(actor=anonymous, sku="MUG-1", name="Mug", price=100))
    assert db.store.products == {}
    assert db.store.audit == {}


@pytest.mark.parametrize(
    ("fields", "problems"),
    [
        ({"sku": "bad sku"}, {"sku": SKU_FORM}),
        ({"sku": ""}, {"sku": SKU_FORM}),
        ({"name": "   "}, {"name": "must have 1 to 200 characters, not only spaces"}),
        ({"name": "n" * 201}, {"name": "must have 1 to 200 characters, not only spaces"}),
        ({"description": "d" * 10_001}, {"description": "must have at most 10000 characters"}),
        ({"price": -1}, {"price": "must be from 0 to 1000000000000000"}),
        ({"price": 12.5}, {"price": "must be an integer number of minor units"}),
        ({"price": True}, {"price": "must be an integer number of minor units"}),
        ({"price": "1200"}, {"price": "must be an integer number of minor units"}),
        ({"currency": "EUR"}, {"currency": STORE_CURRENCY}),
        ({"currency": "usd"}, {"currency": STORE_CURRENCY}),
        ({"currency": ""}, {"currency": STORE_CURRENCY}),  # given, so it must be the store's
        ({"stock": -1}, {"stock": "must be an integer from 0 to 1000000000"}),
        ({"stock": MAX_STOCK + 1}, {"stock": "must be an integer from 0 to 1000000000"}),
        ({"stock": 2.0}, {"stock": "must be an integer from 0 to 1000000000"}),
    ],
)
async def test_create_refuses_invalid_fields_and_writes_nothing(
    catalog: CatalogService,
    db: InMemoryDatabase,
    staff: Actor,
    fields: dict[str, object],
    problems: dict[str, str],
) -> None:
    command = {"actor": staff, "sku": "MUG-1", "name": "Mug", "price": 1200, **fields}

    with pytest.raises(ValidationFailed) as caught:
        await catalog.create_product(CreateProduct(**command))  # type: ignore[arg-type]

    assert (caught.value.code, caught.value.details) == ("validation_failed", {"fields": problems})
    assert db.store.products == {}
    assert db.store.audit == {}


async def test_duplicate_sku_is_refused(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor, mug: Product
) -> None:
    with pytest.raises(SkuTaken) as caught:
        await catalog.create_product(CreateProduct(actor=staff, sku="MUG-1", name="Other mug", price=900))

    assert (caught.value.code, caught.value.details) == ("sku_taken", {"sku": "MUG-1"})
    assert products(db) == [mug]
    assert [e.action for e in audit(db)] == ["product.created"]


# Read.
async def test_everyone_reads_an_active_product(
    catalog: CatalogService, mug: Product, staff: Actor, customer: Actor, anonymous: Actor
) -> None:
    for actor in (staff, customer, anonymous):
        assert await catalog.get_product(actor, mug.id) == mug


async def test_only_staff_read_an_inactive_product(
    catalog: CatalogService, mug: Product, staff: Actor, admin_actor: Actor, customer: Actor, anonymous: Actor
) -> None:
    hidden = await catalog.deactivate_product(staff, mug.id)

    for actor in (staff, admin_actor):
        assert await catalog.get_product(actor, mug.id) == hidden
    for actor in (customer, anonymous):
        with pytest.raises(ProductNotFound) as caught:
            await catalog.get_product(actor, mug.id)
        assert (caught.value.code, caught.value.details) == ("product_not_found", {"product": mug.id})


async def test_reading_an_unknown_product(catalog: CatalogService, staff: Actor) -> None:
    with pytest.raises(ProductNotFound) as caught:
        await catalog.get_product(staff, "prd_missing")

    assert caught.value.details == {"product": "prd_missing"}


# Update.
async def test_update_changes_fields_bumps_version_and_audits_the_price(
    catalog: CatalogService, db: InMemoryDatabase, clock: FixedClock, staff: Actor, mug: Product
) -> None:
    clock.advance(minutes=10)

    updated = await catalog.update_product(
        UpdateProduct(
            actor=staff,
            product_id=mug.id,
            expected_version=1,
            name=" Big blue mug ",
            description="Bigger.",
            price=1500,
            currency="USD",
        )
    )

    assert (updated.name, updated.description, updated.price, updated.version, updated.updated_at) == (
        "Big blue mug",
        "Bigger.",
        Money(1500, "USD"),
        2,
        LATER,
    )
    assert (updated.sku, updated.stock, updated.active, updated.created_at) == ("MUG-1", 5, True, START)
    assert products(db) == [updated]
    assert audit(db)[1:] == [_entry(staff, "product.price_changed", mug.id, {"before": 1200, "after": 1500}, LATER)]


async def test_update_without_price_change_writes_no_price_entry(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor, mug: Product
) -> None:
    updated = await catalog.update_product(UpdateProduct(actor=staff, product_id=mug.id, name="Mug", price=1200))

    assert (updated.name, updated.version) == ("Mug", 2)
    assert [e.action for e in audit(db)] == ["product.created"]


async def test_an_update_that_changes_nothing_keeps_the_version(
    catalog: CatalogService, db: InMemoryDatabase, clock: FixedClock, staff: Actor, mug: Product
) -> None:
    clock.advance(minutes=10)

    updated = await catalog.update_product(
        UpdateProduct(
            actor=staff,
            product_id=mug.id,
            sku="MUG-1",
            name="Blue mug",
            description="Stoneware.",
            price=1200,
            active=True,
        )
    )
    empty = await catalog.update_product(UpdateProduct(actor=staff, product_id=mug.id, expected_version=1))

    assert updated == empty == mug
    assert products(db) == [mug]
    assert [e.action for e in audit(db)] == ["product.created"]


async def test_update_with_a_stale_version_is_refused(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor, mug: Product
) -> None:
    await catalog.update_product(UpdateProduct(actor=staff, product_id=mug.id, expected_version=1, name="Mug v2"))

    with pytest.raises(VersionMismatch) as caught:
        await catalog.update_product(UpdateProduct(actor=staff, product_id=mug.id, expected_version=1, price=1))

    assert (caught.value.code, caught.value.details) == ("version_mismatch", {"current_version": 2})
    assert (products(db)[0].price, products(db)[0].version) == (Money(1200, "USD"), 2)


async def test_sku_change(catalog: CatalogService, db: InMemoryDatabase, staff: Actor, mug: Product) -> None:
    updated = await catalog.update_product(UpdateProduct(actor=staff, product_id=mug.id, sku="MUG-2"))

    assert (updated.sku, updated.version) == ("MUG-2", 2)
    # The old sku is free again.
    pen = await catalog.create_product(CreateProduct(actor=staff, sku="MUG-1", name="Pen", price=100))
    assert pen.sku == "MUG-1"


async def test_sku_change_to_an_existing_sku_is_refused(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor, mug: Product
) -> None:
    pen = await catalog.create_product(CreateProduct(actor=staff, sku="PEN-1", name="Pen", price=100))

    with pytest.raises(SkuTaken) as caught:
        await catalog.update_product(UpdateProduct(actor=staff, product_id=pen.id, sku="MUG-1", name="Renamed"))

    assert caught.value.details == {"sku": "MUG-1"}
    assert products(db) == [mug, pen]


@pytest.mark.parametrize(
    ("fields", "problems"),
    [
        ({"price": -5}, {"price": "must be from 0 to 1000000000000000"}),
        ({"price": 9.99}, {"price": "must be an integer number of minor units"}),
        ({"price": 100, "currency": "EUR"}, {"currency": STORE_CURRENCY}),
        ({"currency": "EUR"}, {"currency": STORE_CURRENCY}),
        ({"currency": "eur"}, {"currency": STORE_CURRENCY}),
        ({"currency": ""}, {"currency": STORE_CURRENCY}),
        ({"price": 100, "currency": ""}, {"currency": STORE_CURRENCY}),
        ({"sku": "no spaces"}, {"sku": SKU_FORM}),
        ({"name": ""}, {"name": "must have 1 to 200 characters, not only spaces"}),
        ({"description": "d" * 10_001}, {"description": "must have at most 10000 characters"}),
    ],
)
async def test_update_refuses_invalid_fields_and_writes_nothing(
    catalog: CatalogService,
    db: InMemoryDatabase,
    staff: Actor,
    mug: Product,
    fields: dict[str, object],
    problems: dict[str, str],
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await catalog.update_product(UpdateProduct(actor=staff, product_id=mug.id, **fields))  # type: ignore[arg-type]

    assert caught.value.details == {"fields": problems}
    assert products(db) == [mug]


async def test_update_of_an_unknown_product(catalog: CatalogService, staff: Actor) -> None:
    with pytest.raises(ProductNotFound):
        await catalog.update_product(UpdateProduct(actor=staff, product_id="prd_missing", name="X"))


async def test_customers_cannot_update(
    catalog: CatalogService, db: InMemoryDatabase, customer: Actor, mug: Product
) -> None:
    with pytest.raises(NotAllowed):
        await catalog.update_product(UpdateProduct(actor=customer, product_id=mug.id, price=1))
    with pytest.raises(NotAllowed):
        await catalog.deactivate_product(customer, mug.id)
    assert products(db) == [mug]


async def test_deactivate_and_activate(
    catalog: CatalogService, db: InMemoryDatabase, clock: FixedClock, staff: Actor, mug: Product
) -> None:
    clock.advance(minutes=10)

    hidden = await catalog.deactivate_product(staff, mug.id)
    again = await catalog.deactivate_product(staff, mug.id)
    shown = await catalog.update_product(UpdateProduct(actor=staff, product_id=mug.id, active=True))

    assert (hidden.active, hidden.version, hidden.updated_at) == (False, 2, LATER)
    assert (again.active, again.version) == (False, 2)
    assert (shown.active, shown.version) == (True, 3)
    assert audit(db)[1:] == [
        _entry(staff, "product.deactivated", mug.id, {}, LATER),
        _entry(staff, "product.activated", mug.id, {}, LATER),
    ]


# Delete.
async def test_delete_product(catalog: CatalogService, db: InMemoryDatabase, staff: Actor, mug: Product) -> None:
    await catalog.delete_product(DeleteProduct(actor=staff, product_id=mug.id, expected_version=1))

    assert db.store.products == {}
    assert audit(db)[-1] == _entry(staff, "product.deleted", mug.id, {"sku": "MUG-1"})
    with pytest.raises(ProductNotFound):
        await catalog.get_product(staff, mug.id)
    with pytest.raises(ProductNotFound):
        await catalog.delete_product(DeleteProduct(actor=staff, product_id=mug.id))


async def test_delete_refusals(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor, customer: Actor, mug: Product
) -> None:
    with pytest.raises(NotAllowed):
        await catalog.delete_product(DeleteProduct(actor=customer, product_id=mug.id))
    with pytest.raises(VersionMismatch) as caught:
        await catalog.delete_product(DeleteProduct(actor=staff, product_id=mug.id, expected_version=7))
    assert caught.value.details == {"current_version": 1}
    assert products(db) == [mug]
    assert len(audit(db)) == 1


# Stock.
async def test_adjust_stock_up_and_down_audited_with_reason(
    catalog: CatalogService, db: InMemoryDatabase, clock: FixedClock, staff: Actor, mug: Product
) -> None:
    clock.advance(minutes=10)

    up = await catalog.adjust_stock(AdjustStock(actor=staff, product_id=mug.id, delta=7, reason="delivery"))
    down = await catalog.adjust_stock(AdjustStock(actor=staff, product_id=mug.id, delta=-12, expected_version=2))

    assert (up.stock, up.version) == (12, 2)
    assert (down.stock, down.version, down.updated_at) == (0, 3, LATER)
    assert products(db) == [down]
    assert audit(db)[1:] == [
        _entry(
            staff, "product.stock_adjusted", mug.id, {"before": 5, "after": 12, "delta": 7, "reason": "delivery"}, LATER
        ),
        _entry(
            staff, "product.stock_adjusted", mug.id, {"before": 12, "after": 0, "delta": -12, "reason": None}, LATER
        ),
    ]


async def test_stock_never_goes_below_zero(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor, mug: Product
) -> None:
    with pytest.raises(InsufficientStock) as caught:
        await catalog.adjust_stock(AdjustStock(actor=staff, product_id=mug.id, delta=-6, reason="breakage"))

    assert caught.value.code == "insufficient_stock"
    assert caught.value.details == {"lines": [{"product_id": mug.id, "sku": "MUG-1", "requested": 6, "available": 5}]}
    assert products(db) == [mug]
    assert len(audit(db)) == 1


@pytest.mark.parametrize("delta", [0, True, 1.0, "3"])
async def test_delta_must_be_a_non_zero_integer(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor, mug: Product, delta: object
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await catalog.adjust_stock(AdjustStock(actor=staff, product_id=mug.id, delta=delta))  # type: ignore[arg-type]

    assert caught.value.details == {"fields": {"delta": "must be a non-zero integer"}}
    assert products(db) == [mug]


async def test_stock_above_the_maximum_is_refused(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor, mug: Product
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await catalog.adjust_stock(AdjustStock(actor=staff, product_id=mug.id, delta=MAX_STOCK))

    assert caught.value.details == {"fields": {"delta": "would take the stock above 1000000000"}}
    assert products(db) == [mug]


async def test_adjust_stock_refusals(
    catalog: CatalogService, db: InMemoryDatabase, staff: Actor, customer: Actor, mug: Product
) -> None:
    with pytest.raises(NotAllowed):
        await catalog.adjust_stock(AdjustStock(actor=customer, product_id=mug.id, delta=1))
    with pytest.raises(VersionMismatch):
        await catalog.adjust_stock(AdjustStock(actor=staff, product_id=mug.id, delta=1, expected_version=2))
    with pytest.raises(ProductNotFound):
        await catalog.adjust_stock(AdjustStock(actor=staff, product_id="prd_missing", delta=1))
    assert products(db) == [mug]
    assert len(audit(db)) == 1
