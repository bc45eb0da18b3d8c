"""`d`, the dashboard: the shop's figures as the store holds them after orders are placed,
paid, refunded and cancelled through the services, following the store as it changes (at
most once a second), and the health of the store, the payment provider and the disk."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from textual.widgets import Static

from adapters.sqlite.migrations import LATEST_VERSION
from core.domain.errors import NotAllowed
from core.domain.money import Money
from core.domain.orders import Order
from core.domain.payments import PaymentMethod, Refund, RefundStatus
from core.domain.users import Actor, Role
from core.ports.repositories import OrderSummary
from core.services.catalog import CreateProduct
from core.services.orders import CancelOrder, OrderItem, PlaceOrder
from core.services.payments import PayOrder, RefundPayment
from core.services.reports import ReadShopFigures
from entrypoints.console.app import AdminConsole
from entrypoints.console.screens.dashboard import DashboardScreen
from tests.console.conftest import Shop, on_every_store, running, signed_in, wait_for

pytestmark = on_every_store

OPERATOR = Actor.operator()


def customer(shop: Shop) -> Actor:
    return Actor(user_id=shop.users["customer@example.com"], role=Role.CUSTOMER)


async def place(shop: Shop, sku: str, quantity: int) -> Order:
    return await shop.services.orders.place_order(
        PlaceOrder(actor=customer(shop), items=[OrderItem(quantity=quantity, sku=sku)])
    )


async def pay(shop: Shop, order: Order) -> None:
    await shop.services.payments.pay(
        PayOrder(actor=OPERATOR, order_id=order.id, method=PaymentMethod.MANUAL, reference="Till receipt 7")
    )


async def a_day_of_trade(shop: Shop) -> dict[str, Order]:
    """Orders of every kind: waiting, paid (with a refund still pending), refunded, cancelled."""
    catalog = shop.services.catalog
    await catalog.create_product(CreateProduct(actor=OPERATOR, sku="LAMP-1", name="Brass lamp", price=2500, stock=10))
    await catalog.create_product(CreateProduct(actor=OPERATOR, sku="MUG-1", name="Blue mug", price=1200, stock=3))
    await catalog.create_product(CreateProduct(actor=OPERATOR, sku="OLD-1", name="Old thing", price=100, active=False))
    waiting = await place(shop, "LAMP-1", 2)
    paid = await place(shop, "MUG-1", 1)
    await pay(shop, paid)
    refunded = await place(shop, "LAMP-1", 1)
    await pay(shop, refunded)
    await shop.services.payments.refund(RefundPayment(actor=OPERATOR, order_id=refunded.id, reason="Broken"))
    cancelled = await place(shop, "LAMP-1", 1)
    await shop.services.orders.cancel_order(CancelOrder(actor=OPERATOR, order_id=cancelled.id))
    # A card refund the provider has not answered yet: what the server's refunds leave while
    # Stripe is away (the test store has no Stripe, so it is written as the ledger writes it).
    (payment,) = await shop.services.payments.list_payments(OPERATOR, paid.id)
    now = datetime.now(UTC)
    async with shop.services.store() as uow:
        await uow.refunds.add(
            Refund("ref_pending", payment.id, paid.id, Money(200, "USD"), "Chipped", RefundStatus.PENDING, now, now)
        )
        await uow.commit()
    return {"waiting": waiting, "paid": paid, "refunded": refunded, "cancelled": cancelled}


def dashboard(app: AdminConsole) -> DashboardScreen:
    screen = app.screen
    assert isinstance(screen, DashboardScreen)
    return screen


def text(app: AdminConsole, widget: str) -> str:
    return str(app.screen.query_one(widget, Static).render())


async def test_the_figures_are_what_the_store_holds(shop: Shop) -> None:
    orders = await a_day_of_trade(shop)
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "staff@example.com")
        await wait_for(pilot, lambda: app.current_mode == "dashboard" and dashboard(app).figures, "the figures")
        figures = dashboard(app).figures
        assert figures is not None
        # Waiting (2 lamps), paid (a mug) and refunded (a lamp) orders stand; the cancelled does not.
        assert figures.last_7_days == OrderSummary(orders=3, total=5000 + 1200 + 2500)
        # Today is the UTC day of the read: the orders just placed, unless midnight came between.
        midnight = figures.at.replace(hour=0, minute=0, second=0, microsecond=0)
        standing = [orders[name] for name in ("waiting", "paid", "refunded")]
        today = [order.total.amount for order in standing if order.created_at >= midnight]
        assert figures.today == OrderSummary(orders=len(today), total=sum(today))
        assert (figures.awaiting_payment, figures.awaiting_fulfilment, figures.pending_refunds) == (1, 1, 1)
        assert [(p.sku, p.stock) for p in figures.low_stock] == [("MUG-1", 2)]  # lamps: 10 - 3 = 7
        shown = text(app, "#figures")
        assert "last 7 days       3 orders           87.00 USD" in shown
        assert "waiting for payment:     1   paid, to fulfil:     1" in shown
        assert "refunds pending at the provider: 1" in shown
        assert "Low stock (at most 5): Blue mug (2)" in shown
        health = text(app, "#health")
        assert f"store:    ok (schema version {LATEST_VERSION})" in health
        assert "payments: no Stripe key configured" in health
        assert "MiB free" in health


async def test_the_figures_follow_the_store(shop: Shop) -> None:
    await a_day_of_trade(shop)
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "admin@example.com")
        await wait_for(pilot, lambda: app.current_mode == "dashboard" and dashboard(app).figures, "the figures")
        await place(shop, "MUG-1", 2)  # the last two mugs

        def updated() -> bool:
            figures = dashboard(app).figures
            return figures is not None and figures.last_7_days.orders == 4

        await wait_for(pilot, updated, "the new order in the figures")
        figures = dashboard(app).figures
        assert figures is not None
        assert figures.last_7_days == OrderSummary(orders=4, total=8700 + 2400)
        assert figures.awaiting_payment == 2
        assert [(p.sku, p.stock) for p in figures.low_stock] == [("MUG-1", 0)]
        assert "Blue mug (0)" in text(app, "#figures")


async def test_a_burst_of_changes_reads_the_figures_at_most_once_a_second(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "staff@example.com")
        await wait_for(pilot, lambda: app.current_mode == "dashboard" and dashboard(app).reads >= 1, "the first read")
        screen = dashboard(app)
        before = screen.reads
        for _ in range(20):  # twenty changes in one turn of the loop
            screen.refresh_figures()
        # One read at once (if the last was a second ago) or a second after the last, and one
        # at most a second later for the changes meanwhile: never twenty.
        await wait_for(pilot, lambda: screen.reads > before and screen._later is None, "the reads")
        await wait_for(pilot, lambda: not screen._reading and screen._later is None, "the reads to end")
        assert 1 <= screen.reads - before <= 2


async def test_a_customer_cannot_read_the_figures(shop: Shop) -> None:
    with pytest.raises(NotAllowed):
        await shop.services.reports.shop_figures(ReadShopFigures(actor=customer(shop)))


async def test_the_figures_are_read_again_when_the_dashboard_is_shown_again(shop: Shop) -> None:
    await a_day_of_trade(shop)
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "admin@example.com")
        await wait_for(pilot, lambda: app.current_mode == "dashboard" and dashboard(app).figures, "the figures")
        screen = dashboard(app)
        await pilot.press("a")  # away: the store's changes go to the audit log's screen
        await wait_for(pilot, lambda: app.current_mode == "audit", "the audit log")
        await place(shop, "LAMP-1", 1)
        await pilot.press("d")
        await wait_for(
            pilot, lambda: screen.figures is not None and screen.figures.last_7_days.orders == 4, "the new order"
        )
        assert app.screen is screen
