"""Orders: what a customer bought (snapshots of the products), what it costs, and where it
stands in the state machine of PRODUCT.md:

    pending_payment ──pay──▶ paid ──fulfil──▶ fulfilled
          │                   │                  │
       cancel/expire        refund (full or partial, possibly several)
          ▼                   ▼                  ▼
     cancelled/expired   partially_refunded ──▶ refunded

A paid order may also be cancelled (whoever cancels it refunds what was paid).

Money on an order is two running totals in minor units of its currency: ``amount_paid``
(every amount captured for it) and ``amount_refunded`` (every refund that succeeded);
refunds never exceed captures.
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from core.domain.errors import (
    AmountExceedsBalance,
    DuplicateProduct,
    Invalid,
    InvalidOrderTransition,
    RefundExceedsCaptured,
    ValidationFailed,
)
from core.domain.money import Money

MAX_LINES = 100
MAX_QUANTITY = 1000


class OrderStatus(enum.StrEnum):
    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


#: Where a refund may be asked for: every order past awaiting payment. How much can still
#: be refunded decides the rest (nothing, for an order wholly refunded; something, for one
#: cancelled or expired with money still on it: a cancellation whose refund failed, a
#: payment that arrived after the order was closed). An order awaiting payment is cancelled,
#: not refunded.
_REFUNDABLE = frozenset(set(OrderStatus) - {OrderStatus.PENDING_PAYMENT})
#: Statuses in which a refund moves the order towards refunded (a closed order stays closed).
_REFUND_MOVES = frozenset({OrderStatus.PAID, OrderStatus.FULFILLED, OrderStatus.PARTIALLY_REFUNDED})


def check_line_count(count: int) -> None:
    if count == 0:
        raise ValidationFailed({"items": "an order has at least one line"})
    if count > MAX_LINES:
        raise ValidationFailed({"items": f"an order has at most {MAX_LINES} lines"})


def check_quantity(index: int, quantity: int) -> None:
    if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
        raise ValidationFailed({f"items[{index}].quantity": f"must be an integer from 1 to {MAX_QUANTITY}"})


@attrs.frozen
class OrderLine:
    """A product as it was when ordered: later changes to the catalog do not touch it."""

    product_id: str
    sku: str
    name: str
    unit_price: Money
    quantity: int

    @property
    def line_total(self) -> Money:
        return self.unit_price * self.quantity


@attrs.define
class Order:
    id: str
    customer_id: str
    status: OrderStatus
    lines: list[OrderLine]
    subtotal: Money
    total: Money  # the subtotal: no tax or shipping yet
    amount_paid: int
    amount_refunded: int
    currency: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None  # None: never expires (a partial payment was taken)
    version: int = 1  # as read; the repository moves it when it saves

    @classmethod
    def place(
        cls,
        *,
        id: str,
        customer_id: str,
        lines: list[OrderLine],
        currency: str,
        at: datetime,
        expires_at: datetime,
    ) -> Order:
        """A new order awaiting payment. One with nothing to pay (every price 0) is paid at once."""
        check_line_count(len(lines))
        seen: dict[str, int] = {}
        subtotal = Money.zero(currency)
        for index, line in enumerate(lines):
            check_quantity(index, line.quantity)
            if line.product_id in seen:
                raise DuplicateProduct(line.product_id, [seen[line.product_id], index])
            seen[line.product_id] = index
            subtotal += line.line_total  # refuses a line in another currency
        status = OrderStatus.PAID if subtotal.amount == 0 else OrderStatus.PENDING_PAYMENT
        return cls(
            id=id,
            customer_id=customer_id,
            status=status,
            lines=list(lines),
            subtotal=subtotal,
            total=subtotal,
            amount_paid=0,
            amount_refunded=0,
            currency=currency,
            created_at=at,
            updated_at=at,
            expires_at=expires_at,
        )

    # What it owes and what can go back.
    @property
    def balance_due(self) -> int:
        """What is still to pay before the order is paid (0 once it is not awaiting payment)."""
        if self.status is not OrderStatus.PENDING_PAYMENT:
            return 0
        return max(self.total.amount - self.amount_paid, 0)

    def is_due_for_expiry(self, now: datetime) -> bool:
        return self.status is OrderStatus.PENDING_PAYMENT and self.expires_at is not None and self.expires_at <= now

    # Transitions.
    def _move(self, action: str, allowed: frozenset[OrderStatus], to: OrderStatus, at: datetime) -> None:
        if self.status not in allowed:
            raise InvalidOrderTransition(self.status.value, action)
        self.status = to
        self._touch(at)

    def _touch(self, at: datetime) -> None:
        # The version is the one the order was read at; the repository moves it when it saves.
        self.updated_at = at

    def check_payable(self, amount: int | None = None) -> None:
        """Refuse a payment unless the order awaits one, and ``amount`` (if given) fits in
        what it still owes: overpayment is refused."""
        if self.status is not OrderStatus.PENDING_PAYMENT:
            raise InvalidOrderTransition(self.status.value, "pay")
        if amount is not None and amount > self.balance_due:
            raise AmountExceedsBalance(self.balance_due)

    def record_payment(self, amount: int, *, at: datetime) -> bool:
        """Money was captured for this order; True if that made it paid.

        Captured money is a fact, so it is always recorded, even on an order that no longer
        awaits it (a card payment that succeeded after the order was paid, cancelled or
        expired): ``surplus`` then says how much must go back. An order awaiting payment
        becomes paid once the payments add up to its total; a partial payment stops it from
        expiring (money was taken: staff decide, and cancelling refunds it)."""
        if type(amount) is not int or amount <= 0:
            raise Invalid("A payment is a positive amount.", code="invalid_amount")
        self.amount_paid += amount
        became_paid = False
        if self.status is OrderStatus.PENDING_PAYMENT:
            if self.amount_paid >= self.total.amount:
                self.status = OrderStatus.PAID
                became_paid = True
            else:
                self.expires_at = None
        self._touch(at)
        return became_paid

    def surplus_of(self, amount: int, *, was: OrderStatus) -> int:
        """How much of a payment of ``amount`` just recorded (the order was ``was`` before)
        the order did not need: all of it if the order was not awaiting payment."""
        if was is not OrderStatus.PENDING_PAYMENT:
            return amount
        return max(self.amount_paid - self.total.amount, 0)

    def fulfil(self, *, at: datetime) -> None:
        """A paid order ships; so does one partly refunded (one damaged item refunded, the
        rest sent). amount_refunded keeps the refund visible."""
        self._move("fulfil", frozenset({OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED}), OrderStatus.FULFILLED, at)

    def cancel(self, *, at: datetime) -> None:
        """Awaiting payment or paid (not yet fulfilled). The caller releases the stock and
        refunds what was paid."""
        self._move("cancel", frozenset({OrderStatus.PENDING_PAYMENT, OrderStatus.PAID}), OrderStatus.CANCELLED, at)

    def expire(self, *, at: datetime) -> None:
        """Unpaid past its deadline. The caller releases the stock."""
        if not self.is_due_for_expiry(at):
            raise InvalidOrderTransition(self.status.value, "expire")
        self.status = OrderStatus.EXPIRED
        self._touch(at)

    def check_refundable(self) -> None:
        if self.status not in _REFUNDABLE:
            raise InvalidOrderTransition(self.status.value, "refund")

    def record_refund(self, amount: int, *, at: datetime) -> None:
        """A refund succeeded. A paid or fulfilled order becomes refunded when nothing paid
        is left on it, partially refunded when less than its total is; a refund that only
        gives back a surplus leaves it as it was. Closed orders (cancelled, expired) stay closed."""
        if type(amount) is not int or amount <= 0:
            raise Invalid("A refund is a positive amount.", code="invalid_amount")
        if self.amount_refunded + amount > self.amount_paid:
            raise RefundExceedsCaptured(self.amount_paid - self.amount_refunded)
        self.amount_refunded += amount
        if self.status in _REFUND_MOVES:
            kept = self.amount_paid - self.amount_refunded
            if kept == 0:
                self.status = OrderStatus.REFUNDED
            elif kept < self.total.amount:
                self.status = OrderStatus.PARTIALLY_REFUNDED
        self._touch(at)
