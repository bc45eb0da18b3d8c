"""What the order and payment use cases share: the paths that move stock and money.

- ``apply_signal``: every payment signal (the provider's answer, a webhook, a manual
  payment, a later poll) goes through ``Payment.apply``; only a signal that moved the
  payment has consequences, so each consequence happens once.
- ``reserve_refunds`` / ``execute_refunds``: a refund is a row saved *before* the provider
  is called (pending, counted against what can still be refunded: concurrent refunds
  never add up to more than was captured), its id is the provider's idempotency key, and
  the provider's answer settles it in a unit of work of its own.
- ``release_stock``: what cancelling and expiring give back.

Functions taking a unit of work run inside the caller's transaction; ``execute_refunds``
calls the provider and opens its own.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs

from core.domain import events
from core.domain.errors import DomainError, OrderNotFound, RefundExceedsCaptured, Unavailable
from core.domain.money import Money
from core.domain.orders import Order, OrderLine
from core.domain.payments import PROVIDER_MANUAL, Payment, PaymentStatus, Refund, RefundStatus
from core.domain.users import Actor
from core.ports.clock import Clock, IdGenerator
from core.ports.payments import PaymentGateway, ProviderRefund
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from core.services.audit import Auditor

#: The reason on refunds Tillbox makes by itself.
SURPLUS_REASON = "Paid after the order no longer needed it; returned automatically."
PROVIDER_REFUND_REASON = "Refunded at the payment provider."


def may_see(actor: Actor, order: Order) -> bool:
    """Staff see every order; a customer sees their own."""
    return actor.is_staff or (actor.user_id is not None and order.customer_id == actor.user_id)


async def get_visible_order(uow: UnitOfWork, actor: Actor, order_id: str) -> Order:
    """The order, if the actor may see it. Another customer's order is not found, not forbidden."""
    order = await uow.orders.get(order_id)
    if order is None or not may_see(actor, order):
        raise OrderNotFound(order_id)
    return order


async def release_stock(uow: UnitOfWork, lines: Sequence[OrderLine], at: datetime) -> None:
    """Give the lines' quantities back to their products. A product deleted since keeps
    nothing (the order's snapshot is the record); an inactive one gets its stock back."""
    quantities: dict[str, int] = collections.Counter()
    for line in lines:
        quantities[line.product_id] += line.quantity
    for product in await uow.products.get_many(list(quantities)):
        product.restock(quantities[product.id], at=at)
        await uow.products.update(product)


@attrs.frozen
class ReservedRefund:
    """A refund saved before the provider hears of it. ``payment_reference`` is None for a
    manual payment's refund, which is recorded at once and needs no call."""

    refund: Refund
    payment_reference: str | None


class Ledger:
    def __init__(self, uow: UnitOfWorkFactory, gateway: PaymentGateway, clock: Clock, ids: IdGenerator):
        self._uow = uow
        self._gateway = gateway
        self._clock = clock
        self._ids = ids
        self._auditor = Auditor(ids, clock)

    # Events and the audit log.
    async def emit(self, uow: UnitOfWork, type: str, obj: Order | Payment | Refund, at: datetime) -> None:
        event_id = self._ids.new("evt")
        if isinstance(obj, Order):
            event = events.order_event(event_id, type, obj, at)
        elif isinstance(obj, Payment):
            event = events.payment_event(event_id, type, obj, at)
        else:
            event = events.refund_event(event_id, type, obj, at)
        await uow.outbox.append(event)

    async def audit(
        self, uow: UnitOfWork, actor: Actor | None, action: str, order_id: str, details: dict[str, Any], at: datetime
    ) -> None:
        """Order, payment and refund entries all name the order, so one filter gives its history.
        ``actor`` None: Tillbox itself (a webhook, the expiry sweep)."""
        await self._auditor.record(uow, actor, action, "order", order_id, details, at=at)

    # Payments.
    async def apply_signal(
        self,
        uow: UnitOfWork,
        payment: Payment,
        status: PaymentStatus,
        *,
        at: datetime,
        provider_reference: str | None = None,
        client_secret: str | None = None,
        next_action: dict[str, Any] | None = None,
        failure_code: str | None = None,
    ) -> list[ReservedRefund]:
        """Apply one signal to a payment read in this unit of work, and if it moved the
        payment, what follows: a success adds the amount to the order (paid once it adds
        up) and reserves a refund of whatever the order did not need; events. Returns the
        refunds reserved, for ``execute_refunds`` after the commit."""
        before = attrs.evolve(payment)
        moved = payment.apply(
            status,
            at=at,
            provider_reference=provider_reference,
            client_secret=client_secret,
            next_action=next_action,
            failure_code=failure_code,
        )
        if payment != before:
            await uow.payments.update(payment)
        if not moved:
            return []
        if payment.status is PaymentStatus.FAILED:
            await self.emit(uow, events.PAYMENT_FAILED, payment, at)
        if payment.status is not PaymentStatus.SUCCEEDED:
            return []
        order = await uow.orders.get(payment.order_id)
        assert order is not None, "a payment's order is never deleted"
        was = order.status
        became_paid = order.record_payment(payment.amount.amount, at=at)
        surplus = order.surplus_of(payment.amount.amount, was=was)
        await uow.orders.update(order)
        await self.emit(uow, events.PAYMENT_SUCCEEDED, payment, at)
        if became_paid:
            await self.emit(uow, events.ORDER_PAID, order, at)
        if surplus == 0:
            return []
        await self.audit(
            uow,
            None,
            "payment.surplus",
            order.id,
            {"payment_id": payment.id, "amount": surplus, "currency": order.currency, "order_status": was.value},
            at,
        )
        return await self.reserve_refunds(uow, order, surplus, SURPLUS_REASON, None, at=at, payments=[payment])

    # Refunds.
    async def refundable(self, uow: UnitOfWork, order: Order) -> int:
        """What can still be refunded: captured, less every refund pending or succeeded."""
        return sum(left for _, left in await self._refundable_by_payment(uow, order, None))

    async def reserve_refunds(
        self,
        uow: UnitOfWork,
        order: Order,
        amount: int,
        reason: str,
        actor: Actor | None,
        *,
        at: datetime,
        payments: Sequence[Payment] | None = None,
    ) -> list[ReservedRefund]:
        """Save refunds of ``amount`` in all from the order's captured payments (or the given
        ones), the most recent first. Raises RefundExceedsCaptured, changing nothing, if
        that is more than can still be refunded. A manual payment's refund is recorded at
        once (nothing to call); a card payment's is pending until ``execute_refunds``."""
        left_by_payment = await self._refundable_by_payment(uow, order, payments)
        refundable = sum(left for _, left in left_by_payment)
        if amount > refundable:
            raise RefundExceedsCaptured(refundable)
        reserved: list[ReservedRefund] = []
        left = amount
        for payment, available in left_by_payment:
            take = min(left, available)
            if take <= 0:
                continue
            refund = Refund(
                id=self._ids.new("ref"),
                payment_id=payment.id,
                order_id=order.id,
                amount=Money(take, order.currency),
                reason=reason,
                status=RefundStatus.PENDING,
                created_at=at,
                updated_at=at,
            )
            manual = payment.provider == PROVIDER_MANUAL
            if manual:
                refund.status = RefundStatus.SUCCEEDED  # handed back by staff: nothing to call
            await uow.refunds.add(refund)
            if manual:
                await self._refunded(uow, order, refund, actor, at)
            reserved.append(ReservedRefund(refund, None if manual else payment.provider_reference))
            left -= take
            if left == 0:
                break
        return reserved

    async def _refundable_by_payment(
        self, uow: UnitOfWork, order: Order, payments: Sequence[Payment] | None
    ) -> list[tuple[Payment, int]]:
        """(payment, what can still be refunded of it) for the captured payments, most recent first."""
        if payments is None:
            payments = await uow.payments.list_for_order(order.id)
        committed: dict[str, int] = collections.Counter()
        for refund in await uow.refunds.list_for_order(order.id):
            if refund.counts:
                committed[refund.payment_id] += refund.amount.amount
        return [
            (p, p.amount.amount - committed[p.id])
            for p in sorted(payments, key=lambda p: p.id, reverse=True)
            if p.status is PaymentStatus.SUCCEEDED
        ]

    async def _refunded(self, uow: UnitOfWork, order: Order, refund: Refund, actor: Actor | None, at: datetime) -> None:
        """A refund succeeded: the order's books, its event and its audit entry."""
        order.record_refund(refund.amount.amount, at=at)
        await uow.orders.update(order)
        await self.emit(uow, events.REFUND_CREATED, refund, at)
        await self.audit(uow, actor, "refund.created", order.id, _refund_details(refund), at)

    async def settle_refund(
        self,
        uow: UnitOfWork,
        refund: Refund,
        succeeded: bool,
        actor: Actor | None,
        *,
        at: datetime,
        provider_reference: str | None = None,
        failure_code: str | None = None,
    ) -> bool:
        """Settle a refund read in this unit of work; False if it was settled already (the
        provider's answer and its webhook each try: the first one counts)."""
        before = attrs.evolve(refund)
        settled = refund.settle(succeeded, at=at, provider_reference=provider_reference, failure_code=failure_code)
        if refund != before:
            await uow.refunds.update(refund)
        if not settled:
            return False
        if succeeded:
            order = await uow.orders.get(refund.order_id)
            assert order is not None, "a refund's order is never deleted"
            await self._refunded(uow, order, refund, actor, at)
        else:
            await self.audit(uow, actor, "refund.failed", refund.order_id, _refund_details(refund), at)
        return True

    async def execute_refunds(
        self, reserved: Sequence[ReservedRefund], actor: Actor | None
    ) -> tuple[list[Refund], list[DomainError]]:
        """Ask the provider for each pending refund (outside any transaction, the refund's
        id as idempotency key), then settle them all in one unit of work. Returns every
        refund as it now stands, and the provider's errors. A refund the provider refused
        fails (its reservation is released); one it could not be asked about (Unavailable:
        it may have it) stays pending, for its webhook or a retry to settle."""
        calls = [r for r in reserved if r.payment_reference is not None]
        if not calls:
            return [r.refund for r in reserved], []
        outcomes: dict[str, ProviderRefund | DomainError] = {}
        for call in calls:
            assert call.payment_reference is not None
            try:
                outcomes[call.refund.id] = await self._gateway.refund(
                    payment_reference=call.payment_reference,
                    amount=call.refund.amount,
                    idempotency_key=call.refund.id,
                )
            except DomainError as exc:
                outcomes[call.refund.id] = exc
        at = self._clock.now()
        results: list[Refund] = []
        async with self._uow() as uow:
            for item in reserved:
                refund = await uow.refunds.get(item.refund.id)
                assert refund is not None
                outcome = outcomes.get(refund.id)
                if isinstance(outcome, ProviderRefund) and outcome.pending:
                    # Not done and not failed: the reservation keeps counting against what can
                    # be refunded (settling it as failed would let staff refund it twice).
                    if refund.provider_reference != outcome.reference:
                        refund.provider_reference = outcome.reference
                        await uow.refunds.update(refund)
                elif isinstance(outcome, ProviderRefund):
                    await self.settle_refund(
                        uow,
                        refund,
                        outcome.succeeded,
                        actor,
                        at=at,
                        provider_reference=outcome.reference,
                        failure_code=outcome.failure_code,
                    )
                elif outcome is not None and not isinstance(outcome, Unavailable):
                    await self.settle_refund(uow, refund, False, actor, at=at, failure_code=outcome.code)
                results.append(refund)
            await uow.commit()
        return results, [o for o in outcomes.values() if isinstance(o, DomainError)]

    async def reconcile_refunds(self, uow: UnitOfWork, payment: Payment, total_refunded: int, at: datetime) -> None:
        """The provider says ``total_refunded`` of this payment has been refunded so far: make
        our succeeded refunds add up to it. Pending refunds of ours are settled first
        (oldest first, each that fits in what is unaccounted for: the provider's event does
        not say which refunds it counts); what remains was refunded at the provider without
        us (its dashboard) and is recorded as such. Never counts a refund twice, never
        takes anything back."""
        refunds = await uow.refunds.list_for_payment(payment.id)
        unaccounted = total_refunded - sum(r.amount.amount for r in refunds if r.status is RefundStatus.SUCCEEDED)
        for refund in refunds:
            if unaccounted <= 0:
                return
            if refund.status is RefundStatus.PENDING and refund.amount.amount <= unaccounted:
                await self.settle_refund(uow, refund, True, None, at=at)
                unaccounted -= refund.amount.amount
        counted = sum(r.amount.amount for r in refunds if r.counts)
        amount = min(unaccounted, payment.amount.amount - counted)
        if amount <= 0:
            return
        refund = Refund(
            id=self._ids.new("ref"),
            payment_id=payment.id,
            order_id=payment.order_id,
            amount=Money(amount, payment.amount.currency),
            reason=PROVIDER_REFUND_REASON,
            status=RefundStatus.SUCCEEDED,
            created_at=at,
            updated_at=at,
        )
        await uow.refunds.add(refund)
        order = await uow.orders.get(payment.order_id)
        assert order is not None
        await self._refunded(uow, order, refund, None, at)


def _refund_details(refund: Refund) -> dict[str, Any]:
    return {
        "refund_id": refund.id,
        "payment_id": refund.payment_id,
        "amount": refund.amount.amount,
        "currency": refund.amount.currency,
        "reason": refund.reason,
        "failure_code": refund.failure_code,
    }
