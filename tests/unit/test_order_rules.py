"""The order entity: placing, the state machine of PRODUCT.md, and its money."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.domain.errors import (
    AmountExceedsBalance,
    DuplicateProduct,
    Invalid,
    InvalidOrderTransition,
    RefundExceedsCaptured,
    ValidationFailed,
)
from core.domain.money import Money
from core.domain.orders import MAX_LINES, Order, OrderLine, OrderStatus
from tests.unit.helpers import START

LATER = START + timedelta(minutes=5)
DEADLINE = START + timedelta(minutes=30)


def line(n: int = 1, price: int = 1200, quantity: int = 2, currency: str = "USD") -> OrderLine:
    return OrderLine(f"prd_{n}", f"SKU-{n}", f"Thing {n}", Money(price, currency), quantity)


def place(*lines: OrderLine) -> Order:
    return Order.place(
        id="ord_1",
        customer_id="usr_1",
        lines=list(lines or (line(),)),
        currency="USD",
        at=START,
        expires_at=DEADLINE,
    )


def order_in(status: OrderStatus, *, paid: int = 0, refunded: int = 0) -> Order:
    order = place(line(1, 1000, 1))
    order.status = status
    order.amount_paid = paid
    order.amount_refunded = refunded
    return order


# Placing.
def test_a_placed_order_snapshots_its_lines_and_adds_them_up() -> None:
    order = place(line(1, 1200, 2), line(2, 350, 3))

    assert order == Order(
        id="ord_1",
        customer_id="usr_1",
        status=OrderStatus.PENDING_PAYMENT,
        lines=[line(1, 1200, 2), line(2, 350, 3)],
        subtotal=Money(3450, "USD"),
        total=Money(3450, "USD"),
        amount_paid=0,
        amount_refunded=0,
        currency="USD",
        created_at=START,
        updated_at=START,
        expires_at=DEADLINE,
        version=1,
    )
    assert [ln.line_total for ln in order.lines] == [Money(2400, "USD"), Money(1050, "USD")]
    assert order.balance_due == 3450


def test_an_order_with_nothing_to_pay_is_paid_at_once() -> None:
    order = place(line(1, 0, 3))
    assert (order.status, order.total, order.balance_due) == (OrderStatus.PAID, Money(0, "USD"), 0)


@pytest.mark.parametrize(
    ("lines", "fields"),
    [
        ([], {"items": "an order has at least one line"}),
        ([line(n, 1, 1) for n in range(MAX_LINES + 1)], {"items": "an order has at most 100 lines"}),
        ([line(1), line(2, quantity=0)], {"items[1].quantity": "must be an integer from 1 to 1000"}),
        ([line(1, quantity=-1)], {"items[0].quantity": "must be an integer from 1 to 1000"}),
        ([line(1, quantity=1001)], {"items[0].quantity": "must be an integer from 1 to 1000"}),
        ([line(1, quantity=True)], {"items[0].quantity": "must be an integer from 1 to 1000"}),  # type: ignore[arg-type]
    ],
)
def test_bad_lines_are_refused(lines: list[OrderLine], fields: dict[str, str]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        Order.place(id="ord_1", customer_id="usr_1", lines=lines, currency="USD", at=START, expires_at=DEADLINE)
    assert caught.value.details == {"fields": fields}


def test_the_limits_themselves_are_accepted() -> None:
    order = place(*(line(n, 1, 1000 if n == 0 else 1) for n in range(MAX_LINES)))
    assert (len(order.lines), order.total) == (100, Money(1099, "USD"))


def test_a_product_on_two_lines_is_refused() -> None:
    with pytest.raises(DuplicateProduct) as caught:
        place(line(1), line(2), line(1, quantity=5))
    assert (caught.value.code, caught.value.details) == ("duplicate_product", {"product_id": "prd_1", "lines": [0, 2]})


def test_a_line_in_another_currency_is_refused() -> None:
    with pytest.raises(Invalid) as caught:
        place(line(1), line(2, currency="EUR"))
    assert caught.value.code == "currency_mismatch"


# Payments add up.
def test_partial_payments_add_up_until_the_order_is_paid() -> None:
    order = place(line(1, 1000, 1))

    assert order.record_payment(300, at=LATER) is False
    assert (order.status, order.amount_paid, order.balance_due, order.expires_at) == (
        OrderStatus.PENDING_PAYMENT,
        300,
        700,
        None,  # money was taken: it no longer expires on its own
    )
    assert order.record_payment(700, at=LATER) is True
    assert (order.status, order.amount_paid, order.balance_due, order.updated_at) == (OrderStatus.PAID, 1000, 0, LATER)
    assert order.version == 1  # the repository moves it when it saves


def test_overpayment_is_refused_before_it_is_taken() -> None:
    order = place(line(1, 1000, 1))
    order.record_payment(400, at=LATER)
    order.check_payable(600)
    with pytest.raises(AmountExceedsBalance) as caught:
        order.check_payable(601)
    assert (caught.value.code, caught.value.details) == ("amount_exceeds_balance", {"remaining": 600})


@pytest.mark.parametrize(
    "status", [s for s in OrderStatus if s is not OrderStatus.PENDING_PAYMENT], ids=lambda s: s.value
)
def test_only_an_order_awaiting_payment_takes_one(status: OrderStatus) -> None:
    with pytest.raises(InvalidOrderTransition) as caught:
        order_in(status).check_payable(1)
    assert (caught.value.code, caught.value.details) == (
        "invalid_order_state",
        {"status": status.value, "action": "pay"},
    )


def test_money_captured_for_a_closed_order_is_recorded_as_surplus() -> None:
    cancelled = order_in(OrderStatus.CANCELLED)
    assert cancelled.record_payment(1000, at=LATER) is False
    assert (cancelled.status, cancelled.amount_paid) == (OrderStatus.CANCELLED, 1000)
    assert cancelled.surplus_of(1000, was=OrderStatus.CANCELLED) == 1000

    twice = order_in(OrderStatus.PENDING_PAYMENT, paid=600)
    assert twice.record_payment(1000, at=LATER) is True
    assert twice.surplus_of(1000, was=OrderStatus.PENDING_PAYMENT) == 600

    exact = order_in(OrderStatus.PENDING_PAYMENT)
    exact.record_payment(1000, at=LATER)
    assert exact.surplus_of(1000, was=OrderStatus.PENDING_PAYMENT) == 0


@pytest.mark.parametrize("amount", [0, -5, True, 1.5])
def test_a_payment_is_a_positive_integer(amount: object) -> None:
    with pytest.raises(Invalid):
        place().record_payment(amount, at=LATER)  # type: ignore[arg-type]


# The state machine.
ALLOWED = {
    # A partly refunded order still ships (one damaged item refunded, the rest sent).
    "fulfil": {OrderStatus.PAID: OrderStatus.FULFILLED, OrderStatus.PARTIALLY_REFUNDED: OrderStatus.FULFILLED},
    "cancel": {OrderStatus.PENDING_PAYMENT: OrderStatus.CANCELLED, OrderStatus.PAID: OrderStatus.CANCELLED},
}


@pytest.mark.parametrize("action", list(ALLOWED))
@pytest.mark.parametrize("status", list(OrderStatus), ids=lambda s: s.value)
def test_fulfil_and_cancel_follow_the_state_machine(action: str, status: OrderStatus) -> None:
    order = order_in(status)
    to = ALLOWED[action].get(status)
    if to is None:
        with pytest.raises(InvalidOrderTransition) as caught:
            getattr(order, action)(at=LATER)
        assert caught.value.details == {"status": status.value, "action": action}
        assert (order.status, order.updated_at) == (status, START)
    else:
        getattr(order, action)(at=LATER)
        assert (order.status, order.updated_at) == (to, LATER)


def test_an_order_expires_only_unpaid_and_past_its_deadline() -> None:
    order = place()
    with pytest.raises(InvalidOrderTransition):
        order.expire(at=DEADLINE - timedelta(microseconds=1))
    assert order.is_due_for_expiry(DEADLINE)
    order.expire(at=DEADLINE)
    assert order.status is OrderStatus.EXPIRED
    assert not order.is_due_for_expiry(DEADLINE)

    partly_paid = place()
    partly_paid.record_payment(1, at=LATER)
    assert not partly_paid.is_due_for_expiry(DEADLINE + timedelta(days=1))
    for status in (OrderStatus.PAID, OrderStatus.CANCELLED):
        with pytest.raises(InvalidOrderTransition) as caught:
            order_in(status).expire(at=DEADLINE + timedelta(days=1))
        assert caught.value.details == {"status": status.value, "action": "expire"}


# Refunds.
@pytest.mark.parametrize(
    ("status", "paid", "refunded", "amount", "after"),
    [
        (OrderStatus.PAID, 1000, 0, 300, OrderStatus.PARTIALLY_REFUNDED),
        (OrderStatus.PAID, 1000, 0, 1000, OrderStatus.REFUNDED),
        (OrderStatus.FULFILLED, 1000, 0, 1, OrderStatus.PARTIALLY_REFUNDED),
        (OrderStatus.FULFILLED, 1000, 0, 1000, OrderStatus.REFUNDED),
        (OrderStatus.PARTIALLY_REFUNDED, 1000, 300, 700, OrderStatus.REFUNDED),
        (OrderStatus.PARTIALLY_REFUNDED, 1000, 300, 100, OrderStatus.PARTIALLY_REFUNDED),
        (OrderStatus.PAID, 2000, 0, 1000, OrderStatus.PAID),  # a surplus going back: still paid in full
        (OrderStatus.PAID, 2000, 0, 1001, OrderStatus.PARTIALLY_REFUNDED),
        (OrderStatus.CANCELLED, 1000, 0, 1000, OrderStatus.CANCELLED),  # closed orders stay closed
        (OrderStatus.EXPIRED, 1000, 0, 400, OrderStatus.EXPIRED),
    ],
)
def test_refunds_move_a_paid_order_towards_refunded(
    status: OrderStatus, paid: int, refunded: int, amount: int, after: OrderStatus
) -> None:
    order = order_in(status, paid=paid, refunded=refunded)
    order.check_refundable()
    order.record_refund(amount, at=LATER)
    assert (order.status, order.amount_refunded, order.updated_at) == (after, refunded + amount, LATER)


def test_a_refund_never_exceeds_what_was_captured() -> None:
    order = order_in(OrderStatus.PARTIALLY_REFUNDED, paid=1000, refunded=300)
    with pytest.raises(RefundExceedsCaptured) as caught:
        order.record_refund(701, at=LATER)
    assert (caught.value.code, caught.value.details) == ("refund_exceeds_captured", {"refundable": 700})
    assert order.amount_refunded == 300


def test_an_order_awaiting_payment_is_cancelled_not_refunded() -> None:
    with pytest.raises(InvalidOrderTransition) as caught:
        order_in(OrderStatus.PENDING_PAYMENT).check_refundable()
    assert caught.value.details == {"status": "pending_payment", "action": "refund"}
    assert caught.value.message == "An order that is pending_payment cannot be refunded."
    order_in(OrderStatus.REFUNDED).check_refundable()  # what can still be refunded decides: nothing
