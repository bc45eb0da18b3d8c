"""The console's orders: the list (newest first, by status, customer or id) and one order's
screen, whose actions go through the API's services, ask first, are audited with source
`console` and the signed-in user, and say every refusal while the store stays as it was."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from core.domain.orders import Order, OrderStatus
from core.domain.payments import PaymentMethod, PaymentStatus, RefundStatus
from core.domain.users import Actor, Role
from core.ports.repositories import AuditFilter
from core.services.audit import ListAuditEntries
from core.services.catalog import CreateProduct
from core.services.orders import OrderItem, PlaceOrder
from core.services.payments import PayOrder, RefundPayment
from entrypoints.console.app import AdminConsole
from entrypoints.console.screens.common import Confirm, Form
from entrypoints.console.screens.orders import OrderQuery, OrderScreen, OrdersScreen, parse_filter
from tests.console.conftest import Shop, on_every_store, running, signed_in, wait_for

pytestmark = on_every_store

CUSTOMER = "customer@example.com"
SKUS = itertools.count(1)


# The shop's orders, made through the services as the API would make them.
async def place(shop: Shop, quantity: int = 2, email: str = CUSTOMER, price: int = 500) -> Order:
    """An order of ``quantity`` of a new product at ``price`` (a new sku each time)."""
    product = await shop.services.catalog.create_product(
        CreateProduct(actor=Actor.operator(), sku=f"MUG-{next(SKUS)}", name=f"Mug {quantity}", price=price, stock=100)
    )
    customer = Actor(user_id=shop.users[email], role=Role.CUSTOMER)
    return await shop.services.orders.place_order(
        PlaceOrder(actor=customer, items=[OrderItem(quantity=quantity, product_id=product.id)])
    )


async def pay(shop: Shop, order: Order, amount: int | None = None) -> None:
    await shop.services.payments.pay(
        PayOrder(
            actor=Actor.operator(), order_id=order.id, method=PaymentMethod.MANUAL, reference="till 1", amount=amount
        )
    )


async def stored(shop: Shop, order: Order) -> Order:
    return await shop.services.orders.get_order(Actor.operator(), order.id)


async def audited(shop: Shop, order: Order) -> list[tuple[str, str | None, str | None]]:
    page = await shop.services.audit.list_entries(
        ListAuditEntries(actor=Actor.operator(), filter=AuditFilter(object_id=order.id))
    )
    return [(entry.action, entry.actor_id, entry.source_ip) for entry in page.items]


# Driving the console.
def told(app: AdminConsole) -> list[str]:
    return [notification.message for notification in app._notifications]


async def open_orders(pilot: Pilot[Any], email: str = "staff@example.com") -> OrdersScreen:
    app = await signed_in(pilot, email)
    await pilot.press("o")
    await wait_for(pilot, lambda: isinstance(app.screen, OrdersScreen) and app.screen.loads > 0, "the orders")
    assert isinstance(app.screen, OrdersScreen)
    return app.screen


async def filter_by(pilot: Pilot[Any], screen: OrdersScreen, text: str) -> None:
    loads = screen.loads
    await pilot.press("slash")
    screen.query_one("#filter", Input).value = text
    await pilot.press("enter")
    await wait_for(pilot, lambda: screen.loads > loads, f"the orders filtered by {text!r}")


def listed(screen: OrdersScreen) -> list[str]:
    return [order.id for order in screen.items]


async def open_order(pilot: Pilot[Any], order: Order, email: str = "staff@example.com") -> OrderScreen:
    return await open_listed(pilot, await open_orders(pilot, email), order)


async def open_listed(pilot: Pilot[Any], screen: OrdersScreen, order: Order) -> OrderScreen:
    screen.query_one(DataTable).move_cursor(row=listed(screen).index(order.id))
    await pilot.press("enter")
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, OrderScreen) and app.screen.loads > 0, "the order's screen")
    assert isinstance(app.screen, OrderScreen)
    return app.screen


def detail(screen: OrderScreen) -> str:
    return str(screen.query_one("#detail", Static).render())


async def fill(pilot: Pilot[Any], **values: str) -> None:
    """Fill the form on screen and submit it (Enter in its last field)."""
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, Form), "the form")
    inputs = list(app.screen.query(Input))
    for name, value in values.items():
        app.screen.query_one(f"#field-{name}", Input).value = value
    inputs[-1].focus()
    await pilot.press("enter")


async def answer(pilot: Pilot[Any], key: str) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
    await pilot.press(key)


async def act(pilot: Pilot[Any], screen: OrderScreen, key: str, *, form: dict[str, str] | None = None) -> None:
    """Press an action's key, fill its form, say yes, and wait until it is over."""
    done = screen.actions_done
    await pilot.press(key)
    if form is not None:
        await fill(pilot, **form)
    await answer(pilot, "y")
    await wait_for(pilot, lambda: screen.actions_done > done, "the action to finish")


# The filter's words.
def test_the_filter_reads_statuses_customers_and_order_ids(console_store: str) -> None:
    assert parse_filter("") == OrderQuery()
    assert parse_filter("paid") == OrderQuery(status=OrderStatus.PAID)
    assert parse_filter("STATUS:Pending_Payment") == OrderQuery(status=OrderStatus.PENDING_PAYMENT)
    assert parse_filter("customer:usr_1 refunded") == OrderQuery(customer_id="usr_1", status=OrderStatus.REFUNDED)
    assert parse_filter("customer:Ann@Example.com") == OrderQuery(customer_email="Ann@Example.com")
    assert parse_filter("ord_01ABC") == OrderQuery(order_id="ord_01ABC")
    assert parse_filter("pending") == OrderQuery(status=OrderStatus.PENDING_PAYMENT)  # as the list shows them
    assert parse_filter("status:part_refunded") == OrderQuery(status=OrderStatus.PARTIALLY_REFUNDED)
    for bad, said in [
        ("shipped", "is not understood"),
        ("status:shipped", "the statuses are"),
        ("customer:ann", "account id (usr_...) or email"),
        ("paid fulfilled", "only one status"),
        ("ord_1 paid", "stands alone"),
        ("id:123", "begins with ord_"),
    ]:
        with pytest.raises(ValueError, match=re.escape(said)):
            parse_filter(bad)


# The list.
async def test_the_list_shows_orders_newest_first_with_their_money(shop: Shop) -> None:
    first = await place(shop, quantity=1)
    second = await place(shop, quantity=3)
    await pay(shop, second)
    async with running(shop.console()) as pilot:
        screen = await open_orders(pilot)
        assert listed(screen) == [second.id, first.id]
        table = screen.query_one(DataTable)
        row = [str(cell) for cell in table.get_row(second.id)]
        assert row[:6] == [f"…{second.id[-6:]}", "paid", f"…{shop.users[CUSTOMER][-6:]}", "15.00", "15.00", "0.00"]
        assert str(screen.query_one(".title", Static).render()) == "Orders, newest first (amounts in USD)"

        # Live: an order placed now shows without a key pressed.
        third = await place(shop, quantity=1)
        await wait_for(pilot, lambda: listed(screen)[:1] == [third.id], "the new order")


async def test_the_list_filters_by_status_and_by_customer(shop: Shop) -> None:
    await shop.create_user("other@example.com", "customer")
    unpaid = await place(shop)
    paid = await place(shop)
    await pay(shop, paid)
    others = await place(shop, email="other@example.com")
    async with running(shop.console()) as pilot:
        screen = await open_orders(pilot, "admin@example.com")
        assert listed(screen) == [others.id, paid.id, unpaid.id]
        await filter_by(pilot, screen, "paid")
        assert listed(screen) == [paid.id]
        await filter_by(pilot, screen, "status:pending_payment")
        assert listed(screen) == [others.id, unpaid.id]
        await filter_by(pilot, screen, f"customer:{shop.users[CUSTOMER]}")
        assert listed(screen) == [paid.id, unpaid.id]
        await filter_by(pilot, screen, "customer:Other@Example.com pending")  # an admin looks emails up
        assert listed(screen) == [others.id]
        await filter_by(pilot, screen, "")
        assert listed(screen) == [others.id, paid.id, unpaid.id]


async def test_an_order_id_in_the_filter_shows_only_it_and_opens_it(shop: Shop) -> None:
    wanted = await place(shop)
    await place(shop)
    async with running(shop.console()) as pilot:
        screen = await open_orders(pilot)
        await filter_by(pilot, screen, wanted.id)
        assert listed(screen) == [wanted.id]
        app = pilot.app
        await wait_for(pilot, lambda: isinstance(app.screen, OrderScreen) and app.screen.loads > 0, "the order")
        assert isinstance(app.screen, OrderScreen) and app.screen.order_id == wanted.id
        await pilot.press("q")
        assert app.screen is screen

        await filter_by(pilot, screen, "ord_NOSUCHORDER")
        assert listed(screen) == []
        assert "No order with id 'ord_NOSUCHORDER'." in told(app)


async def test_bad_filter_text_is_said_and_the_list_stays_as_it_was(shop: Shop) -> None:
    order = await place(shop)
    async with running(shop.console()) as pilot:
        screen = await open_orders(pilot)
        await pilot.press("slash")
        screen.query_one("#filter", Input).value = "status:shipped"
        await pilot.press("enter")
        app = pilot.app
        assert isinstance(app, AdminConsole)
        await wait_for(pilot, lambda: any("the statuses are" in said for said in told(app)), "the filter's problem")
        assert listed(screen) == [order.id]


async def test_staff_cannot_look_customers_up_by_email_and_are_told(shop: Shop) -> None:
    await place(shop)
    async with running(shop.console()) as pilot:
        screen = await open_orders(pilot)
        await filter_by(pilot, screen, f"customer:{CUSTOMER}")
        assert listed(screen) == []
        app = pilot.app
        assert isinstance(app, AdminConsole)
        assert "Only admins can do this." in told(app)


# One order.
async def test_the_order_shows_its_lines_payments_and_refunds(shop: Shop) -> None:
    order = await place(shop, quantity=2, price=1250)
    await pay(shop, order, 1000)
    await pay(shop, order)  # the rest: 15.00
    await shop.services.payments.refund(
        RefundPayment(actor=Actor.operator(), order_id=order.id, reason="Chipped rim", amount=250)
    )
    async with running(shop.console()) as pilot:
        screen = await open_order(pilot, order)
        text = detail(screen)
        line = order.lines[0]
        assert f"{line.sku[:14]:<14} {'Mug 2':<22}    2       12.50 USD       25.00 USD" in text
        assert "Total 25.00 USD   paid 25.00 USD   refunded 2.50 USD   due 0.00 USD" in text
        assert [(p.amount.amount, p.status) for p in screen.payments] == [
            (1000, PaymentStatus.SUCCEEDED),
            (1500, PaymentStatus.SUCCEEDED),
        ]
        for payment in screen.payments:
            assert f"{payment.id}  manual succeeded" in text
        (refund,) = screen.refunds
        assert f"{refund.id}  succeeded  2.50 USD" in text and "reason Chipped rim" in text
        assert "Status partially_refunded" in text

        # Live: what changes in the store shows without a key pressed.
        await shop.services.payments.refund(
            RefundPayment(actor=Actor.operator(), order_id=order.id, reason="Lost", amount=100)
        )
        await wait_for(pilot, lambda: "refunded 3.50 USD" in detail(screen), "the new refund")
        assert len(screen.refunds) == 2


async def test_staff_see_that_the_audit_trail_is_for_admins_and_admins_see_it(shop: Shop) -> None:
    order = await place(shop)
    await pay(shop, order)
    async with running(shop.console()) as pilot:
        screen = await open_order(pilot, order)
        assert "audit trail: admins only" in detail(screen)
        assert screen.audit_entries == []
    async with running(shop.console()) as pilot:
        screen = await open_order(pilot, order, "admin@example.com")
        assert "audit trail: admins only" not in detail(screen)
        assert [e.action for e in screen.audit_entries] == ["payment.recorded_manually"]
        assert "payment.recorded_manually  operator cli" in detail(screen)


# Actions, each through the services, asked first, and audited as the signed-in user.
async def test_fulfil_a_paid_order(shop: Shop) -> None:
    order = await place(shop)
    await pay(shop, order)
    async with running(shop.console()) as pilot:
        screen = await open_order(pilot, order)
        await act(pilot, screen, "f")
        await wait_for(pilot, lambda: "Status fulfilled" in detail(screen), "the fulfilled order")
    assert (await stored(shop, order)).status is OrderStatus.FULFILLED
    assert ("order.fulfilled", shop.users["staff@example.com"], "console") in await audited(shop, order)


async def test_cancel_a_paid_order_with_a_reason_hands_back_what_was_paid(shop: Shop) -> None:
    order = await place(shop)
    await pay(shop, order)
    async with running(shop.console()) as pilot:
        screen = await open_order(pilot, order, "admin@example.com")
        await act(pilot, screen, "C", form={"reason": "Customer changed their mind"})
        await wait_for(pilot, lambda: "Status cancelled" in detail(screen), "the cancelled order")
    cancelled = await stored(shop, order)
    assert (cancelled.status, cancelled.amount_refunded) == (OrderStatus.CANCELLED, 1000)
    (refund,) = await shop.services.payments.list_refunds(Actor.operator(), order.id)
    assert (refund.amount.amount, refund.reason, refund.status) == (
        1000,
        "Customer changed their mind",
        RefundStatus.SUCCEEDED,
    )
    admin = shop.users["admin@example.com"]
    entries = await audited(shop, order)
    assert ("order.cancelled", admin, "console") in entries
    assert ("refund.created", admin, "console") in entries


async def test_a_cancel_declined_at_the_confirmation_changes_nothing(shop: Shop) -> None:
    order = await place(shop)
    await pay(shop, order)
    before, audit_before = await stored(shop, order), await audited(shop, order)
    async with running(shop.console()) as pilot:
        screen = await open_order(pilot, order)
        done = screen.actions_done
        await pilot.press("C")
        await fill(pilot, reason="Oops")
        await answer(pilot, "n")
        await wait_for(pilot, lambda: screen.actions_done > done, "the action to end")
        assert pilot.app.screen is screen
    assert await stored(shop, order) == before
    assert before.status is OrderStatus.PAID
    assert await shop.services.payments.list_refunds(Actor.operator(), order.id) == []
    assert await audited(shop, order) == audit_before


async def test_record_a_manual_payment_in_major_units(shop: Shop) -> None:
    order = await place(shop)  # 10.00 USD
    async with running(shop.console()) as pilot:
        screen = await open_order(pilot, order)
        await act(pilot, screen, "m", form={"amount": "4.5", "reference": "cash, till 2"})
        await wait_for(pilot, lambda: "due 5.50 USD" in detail(screen), "the part paid")
        await act(pilot, screen, "m", form={"reference": "card terminal"})  # the amount: what is still due
        await wait_for(pilot, lambda: "Status paid" in detail(screen), "the paid order")
    paid = await stored(shop, order)
    assert (paid.status, paid.amount_paid) == (OrderStatus.PAID, 1000)
    payments = await shop.services.payments.list_payments(Actor.operator(), order.id)
    assert [(p.method, p.amount.amount, p.reference) for p in payments] == [
        (PaymentMethod.MANUAL, 450, "cash, till 2"),
        (PaymentMethod.MANUAL, 550, "card terminal"),
    ]
    staff = shop.users["staff@example.com"]
    assert [e for e in await audited(shop, order) if e[0] == "payment.recorded_manually"] == [
        ("payment.recorded_manually", staff, "console")
    ] * 2


async def test_a_partial_refund_then_the_rest_by_default(shop: Shop) -> None:
    order = await place(shop)
    await pay(shop, order)
    async with running(shop.console()) as pilot:
        screen = await open_order(pilot, order)
        await act(pilot, screen, "R", form={"amount": "3.00", "reason": "Chipped"})
        await wait_for(pilot, lambda: "refunded 3.00 USD" in detail(screen), "the partial refund")
        assert (await stored(shop, order)).status is OrderStatus.PARTIALLY_REFUNDED

        done = screen.actions_done
        await pilot.press("x")
        app = pilot.app
        await wait_for(pilot, lambda: isinstance(app.screen, Form), "the refund form")
        assert app.screen.query_one("#field-amount", Input).value == "7.00 USD"  # what remains refundable
        await fill(pilot, reason="Lost in the post")
        await answer(pilot, "y")
        await wait_for(pilot, lambda: screen.actions_done > done, "the refund to finish")
        await wait_for(pilot, lambda: "Status refunded" in detail(screen), "the refunded order")
    refunded = await stored(shop, order)
    assert (refunded.status, refunded.amount_refunded) == (OrderStatus.REFUNDED, 1000)
    refunds = await shop.services.payments.list_refunds(Actor.operator(), order.id)
    assert [(r.amount.amount, r.reason) for r in refunds] == [(300, "Chipped"), (700, "Lost in the post")]
    staff = shop.users["staff@example.com"]
    assert [e for e in await audited(shop, order) if e[0] == "refund.created"] == [
        ("refund.created", staff, "console")
    ] * 2


# Refusals: said in words, and the store as it was.
async def test_a_refund_above_what_remains_is_refused_in_major_units(shop: Shop) -> None:
    order = await place(shop)
    await pay(shop, order)
    async with running(shop.console()) as pilot:
        screen = await open_order(pilot, order)
        await act(pilot, screen, "x", form={"amount": "10.01", "reason": "Too much"})
        app = pilot.app
        assert isinstance(app, AdminConsole)
        assert "At most 10.00 USD can still be refunded." in told(app)
    unchanged = await stored(shop, order)
    assert (unchanged.status, unchanged.amount_refunded) == (OrderStatus.PAID, 0)
    assert await shop.services.payments.list_refunds(Actor.operator(), order.id) == []


async def test_an_amount_that_is_not_one_is_said_before_anything_is_asked(shop: Shop) -> None:
    order = await place(shop)
    async with running(shop.console()) as pilot:
        screen = await open_order(pilot, order)
        done = screen.actions_done
        await pilot.press("m")
        await fill(pilot, amount="ten", reference="cash")
        await wait_for(pilot, lambda: screen.actions_done > done, "the action to end")
        app = pilot.app
        assert isinstance(app, AdminConsole)
        assert "Amount: not an amount: type it as 12.50 (USD)" in told(app)
    assert await shop.services.payments.list_payments(Actor.operator(), order.id) == []


async def test_fulfilling_an_unpaid_order_is_refused(shop: Shop) -> None:
    order = await place(shop)
    async with running(shop.console()) as pilot:
        screen = await open_order(pilot, order)
        await act(pilot, screen, "f")
        app = pilot.app
        assert isinstance(app, AdminConsole)
        assert "An order that is pending_payment cannot be fulfilled." in told(app)
        assert "Status pending_payment" in detail(screen)
    assert (await stored(shop, order)).status is OrderStatus.PENDING_PAYMENT
    assert await audited(shop, order) == []


async def test_nothing_due_or_left_to_refund_is_said_without_a_form(shop: Shop) -> None:
    unpaid = await place(shop)
    paid = await place(shop)
    await pay(shop, paid)
    async with running(shop.console()) as pilot:
        app = pilot.app
        assert isinstance(app, AdminConsole)
        screen = await open_order(pilot, unpaid)
        done = screen.actions_done
        await pilot.press("x")
        await wait_for(pilot, lambda: screen.actions_done > done, "the refusal")
        assert "Nothing is left to refund on this order." in told(app)
        await pilot.press("q")
        assert isinstance(app.screen, OrdersScreen)
        screen = await open_listed(pilot, app.screen, paid)
        done = screen.actions_done
        await pilot.press("m")
        await wait_for(pilot, lambda: screen.actions_done > done, "the refusal")
        assert "Nothing is due on this order." in told(app)
        assert app.screen is screen
    assert len(await shop.services.payments.list_payments(Actor.operator(), paid.id)) == 1
    assert await shop.services.payments.list_refunds(Actor.operator(), unpaid.id) == []
