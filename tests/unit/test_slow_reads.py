"""Which reads the services say may be slow (UnitOfWorkFactory's ``slow=True``): a store
runs those off the event loop with a larger budget, so the policy is the services', and
the hot path (the plain catalog, a customer's own orders) must never be among them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from core.domain.orders import OrderStatus
from core.domain.users import Actor, Role
from core.ports.repositories import AuditFilter, UserFilter
from core.services.audit import AuditService, ListAuditEntries
from core.services.auth import AuthService, ListUsers
from core.services.catalog import CatalogService, ListProducts
from core.services.orders import ListOrders, OrderService
from tests.fakes import InMemoryDatabase
from tests.unit.helpers import stored_actor

ADMIN = Actor(user_id="usr_admin", role=Role.ADMIN, source_ip="10.0.0.3")
CUSTOMER = Actor(user_id="usr_customer", role=Role.CUSTOMER, source_ip="10.0.0.4")


@pytest.fixture(autouse=True)
def accounts(db: InMemoryDatabase) -> None:
    """The accounts behind ADMIN and CUSTOMER: use cases check them."""
    stored_actor(db, "usr_admin", Role.ADMIN, "10.0.0.3")
    stored_actor(db, "usr_customer", Role.CUSTOMER, "10.0.0.4")


async def _slow(db: InMemoryDatabase, read: Callable[[], Awaitable[Any]]) -> bool:
    before = db.slow_units
    await read()
    return db.slow_units > before


@pytest.mark.parametrize(
    ("command", "slow"),
    [
        (ListProducts(actor=CUSTOMER), False),
        (ListProducts(actor=ADMIN, active=False), False),
        (ListProducts(actor=CUSTOMER, text="lamp"), True),
        (ListProducts(actor=CUSTOMER, price_min=100), True),
        (ListProducts(actor=CUSTOMER, price_max=100), True),
    ],
)
async def test_a_search_or_a_price_range_may_be_slow_the_plain_catalog_is_not(
    db: InMemoryDatabase, catalog: CatalogService, command: ListProducts, slow: bool
) -> None:
    assert await _slow(db, lambda: catalog.list_products(command)) is slow
    assert await _slow(db, lambda: catalog.list_product_versions(command)) is slow


async def test_the_audit_log_may_be_slow(db: InMemoryDatabase) -> None:
    audit = AuditService(db)
    assert await _slow(db, lambda: audit.list_entries(ListAuditEntries(actor=ADMIN, filter=AuditFilter())))


async def test_filtered_admin_lists_may_be_slow(db: InMemoryDatabase, auth: AuthService, orders: OrderService) -> None:
    assert not await _slow(db, lambda: auth.list_users(ListUsers(actor=ADMIN)))
    assert await _slow(db, lambda: auth.list_users(ListUsers(actor=ADMIN, filter=UserFilter(role=Role.STAFF))))
    assert not await _slow(db, lambda: orders.list_orders(ListOrders(actor=ADMIN)))
    assert await _slow(db, lambda: orders.list_orders(ListOrders(actor=ADMIN, status=OrderStatus.PAID)))
    assert await _slow(db, lambda: orders.list_orders(ListOrders(actor=ADMIN, customer_id="usr_customer")))
    # A customer's own orders are few, filtered or not: the hot path stays where it is.
    assert not await _slow(db, lambda: orders.list_orders(ListOrders(actor=CUSTOMER)))
    assert not await _slow(db, lambda: orders.list_orders(ListOrders(actor=CUSTOMER, status=OrderStatus.PAID)))
