"""ReportService.shop_figures: which orders count for today and for the week, how many low
products are named, who may read the figures, and that the read says it may be slow."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from core.domain.errors import NotAllowed, TokenInvalid
from core.domain.money import Money
from core.domain.orders import OrderStatus
from core.domain.users import Actor, Role, UserStatus
from core.ports.repositories import OrderSummary
from core.services.reports import ReadShopFigures, ReportService
from tests.contract.builders import Make, store
from tests.fakes import FixedClock, InMemoryDatabase, SequentialIds
from tests.unit.helpers import stored_actor

STAFF = Actor(user_id="usr_staff", role=Role.STAFF, source_ip="console")


@pytest.fixture(autouse=True)
def accounts(db: InMemoryDatabase) -> None:
    stored_actor(db, "usr_staff", Role.STAFF, "console")
    stored_actor(db, "usr_customer", Role.CUSTOMER, "10.0.0.4")


@pytest.fixture
def reports(db: InMemoryDatabase, clock: FixedClock) -> ReportService:
    return ReportService(db, clock, "USD")


async def test_today_is_the_utc_day_and_the_week_the_last_seven_days(
    db: InMemoryDatabase, clock: FixedClock, ids: SequentialIds, reports: ReportService
) -> None:
    make = Make(ids, clock)
    clock.current = clock.current.replace(day=10, hour=0)  # midnight, 10 January
    eight_days_ago = attrs.evolve(make.order(("OLD-1", 100, 1)), created_at=clock.current - timedelta(days=8))
    yesterday = attrs.evolve(make.order(("YDAY-1", 200, 1)), created_at=clock.current - timedelta(seconds=1))
    at_midnight = make.order(("MID-1", 400, 1))
    euros = attrs.evolve(make.order(("EUR-1", 800, 1)), currency="EUR", total=Money(800, "EUR"))
    clock.advance(hours=15)
    paid = make.order(("PAID-1", 1600, 1), status=OrderStatus.PAID, amount_paid=1600, expires_in=None)
    await store(db, eight_days_ago, yesterday, at_midnight, euros, paid)

    figures = await reports.shop_figures(ReadShopFigures(actor=STAFF))

    assert figures.at == clock.now() and figures.currency == "USD"
    assert figures.today == OrderSummary(orders=2, total=400 + 1600)
    assert figures.last_7_days == OrderSummary(orders=3, total=200 + 400 + 1600)
    assert (figures.awaiting_payment, figures.awaiting_fulfilment, figures.pending_refunds) == (4, 1, 0)


async def test_a_few_low_products_are_named_and_more_are_said(
    db: InMemoryDatabase, clock: FixedClock, ids: SequentialIds, reports: ReportService
) -> None:
    make = Make(ids, clock)
    await store(db, *(make.product(f"LOW-{n}", stock=n) for n in range(4)), make.product("OK-1", stock=9))

    three = await reports.shop_figures(ReadShopFigures(actor=STAFF, low_stock_named=3))
    assert [p.sku for p in three.low_stock] == ["LOW-0", "LOW-1", "LOW-2"] and three.more_low_stock
    four = await reports.shop_figures(ReadShopFigures(actor=STAFF, low_stock_named=4))
    assert len(four.low_stock) == 4 and not four.more_low_stock
    strict = await reports.shop_figures(ReadShopFigures(actor=STAFF, low_stock_threshold=1))
    assert [p.sku for p in strict.low_stock] == ["LOW-0", "LOW-1"] and strict.low_stock_threshold == 1


async def test_the_figures_are_for_staff_as_the_store_knows_them_and_read_as_slow(
    db: InMemoryDatabase, reports: ReportService
) -> None:
    before = db.slow_units
    await reports.shop_figures(ReadShopFigures(actor=STAFF))
    assert db.slow_units == before + 1
    with pytest.raises(NotAllowed):
        await reports.shop_figures(ReadShopFigures(actor=Actor(user_id="usr_customer", role=Role.CUSTOMER)))
    db.store.users["usr_staff"].status = UserStatus.DISABLED
    with pytest.raises(TokenInvalid):
        await reports.shop_figures(ReadShopFigures(actor=STAFF))
