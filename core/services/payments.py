"""Payments and refunds: card payments through the PaymentGateway, manual payments staff
record, refunds, and the provider's notifications.

Every payment signal goes through one state machine (``Payment.apply``, via
``Ledger.apply_signal``), so the provider's answer and its webhooks, in any order and any
number of times, change an order exactly once. Calls to the provider happen outside any
transaction, with an idempotency key (our payment's or refund's id) saved before the call.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from core.domain.errors import (
    Invalid,
    InvalidOrderTransition,
    PaymentFailed,
    PaymentNotFound,
    PaymentProviderUnavailable,
    RefundExceedsCaptured,
    RefundFailed,
    Unavailable,
    ValidationFailed,
)
from core.domain.money import Money
from core.domain.orders import Order
from core.domain.payments import (
    PROVIDER_MANUAL,
    PROVIDER_STRIPE,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    RefundStatus,
    check_reason,
    check_reference,
)
from core.domain.users import Actor
from core.ports.clock import Clock, IdGenerator
from core.ports.payments import PaymentGateway, ProviderEvent, ProviderEventKind
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from core.services.access import as_staff, for_reading, signed_in
from core.services.ledger import Ledger, ReservedRefund, get_visible_order, may_see
from core.services.orders import expire_orders

MAX_PAYMENT_METHOD_LENGTH = 255


@attrs.frozen
class PayOrder:
    actor: Actor
    order_id: str
    method: PaymentMethod
    payment_method: str | None = None  # card: the provider's payment method, e.g. "pm_card_visa"
    reference: str | None = None  # manual: the receipt or transfer reference (required)
    amount: int | None = None  # manual: minor units, default the balance due; card: always the balance due


@attrs.frozen
class RefundPayment:
    actor: Actor
    order_id: str
    reason: str
    amount: int | None = None  # minor units; default: all that can still be refunded


#: Refunds are sent again only while the provider's idempotency key still holds (Stripe: 24 h).
RESEND_WINDOW = timedelta(hours=23)


class PaymentService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        gateway: PaymentGateway,
        clock: Clock,
        ids: IdGenerator,
        provider: str = PROVIDER_STRIPE,
    ):
        self._uow = uow
        self._gateway = gateway
        self._clock = clock
        self._ids = ids
        self._provider = provider
        self._ledger = Ledger(uow, gateway, clock, ids)

    # Paying.
    async def pay(self, cmd: PayOrder) -> Payment:
        """Pay an order awaiting payment.

        Card (the order's customer or staff): for the balance due. The payment is saved
        (processing) before the provider is called with its id as idempotency key, and the
        answer is applied in a second unit of work. Declined: the payment is failed and
        PaymentFailed (402, the decline code in details) is raised after that is saved.
        Requires action: the payment comes back with its client secret and next action.
        Provider unreachable: Unavailable is raised and the payment stays processing (the
        provider may have it: its webhook, or paying again, settles it); paying again while
        a card payment is still processing retries that payment with its own idempotency
        key, so the customer is never charged twice for one attempt.

        Manual (staff): ``amount`` (default the balance due, never more) is recorded as
        succeeded at once, with its reference; partial payments add up until the order is
        paid. Audited.

        A payment on an order that is not awaiting one is InvalidOrderTransition (409)."""
        if cmd.method is PaymentMethod.MANUAL:
            return await self._record_manual(attrs.evolve(cmd, actor=await as_staff(self._uow, cmd.actor)))
        if cmd.method is not PaymentMethod.CARD:
            raise ValidationFailed({"method": "must be card or manual"})
        return await self._pay_by_card(attrs.evolve(cmd, actor=await signed_in(self._uow, cmd.actor)))

    async def _pay_by_card(self, cmd: PayOrder) -> Payment:
        payment_method = cmd.payment_method
        if not isinstance(payment_method, str) or not 1 <= len(payment_method) <= MAX_PAYMENT_METHOD_LENGTH:
            raise ValidationFailed({"payment_method": "a card payment needs the provider's payment method"})
        if cmd.amount is not None:
            raise ValidationFailed({"amount": "a card payment is for the balance due; only manual payments take one"})
        if not self._gateway.available:
            # Whose order and in what state first: a 404 or 409 says more than "not configured".
            async with self._uow() as uow:  # may expire an order past its deadline (and commit)
                await self._payable_order(uow, cmd.actor, cmd.order_id)
            raise PaymentProviderUnavailable("Card payments are not configured on this store.", retry_after=None)
        now = self._clock.now()
        retry = True
        async with self._uow() as uow:
            order = await self._payable_order(uow, cmd.actor, cmd.order_id)
            payment = _unresolved_card_payment(await uow.payments.list_for_order(order.id))
            if payment is None:
                retry = False
                payment = Payment(
                    id=self._ids.new("pay"),
                    order_id=order.id,
                    method=PaymentMethod.CARD,
                    provider=self._provider,
                    status=PaymentStatus.PROCESSING,
                    amount=Money(order.balance_due, order.currency),
                    created_at=now,
                    updated_at=now,
                    payment_method=payment_method,
                )
                await uow.payments.add(payment)
                await uow.commit()
        assert payment.payment_method is not None
        try:
            answer = await self._gateway.create_card_payment(
                amount=payment.amount,
                payment_method=payment.payment_method,
                idempotency_key=payment.id,
                metadata={"tillbox_payment_id": payment.id, "tillbox_order_id": payment.order_id},
            )
        except Unavailable:
            raise
        except Invalid as exc:
            if not retry:
                # The provider refused the request itself (an unknown payment method, ...):
                # nothing was charged, and the payment must not stay processing.
                await self._apply(payment.id, PaymentStatus.FAILED, failure_code=exc.code)
            raise
        payment, surplus = await self._apply(
            payment.id,
            PaymentStatus(answer.status.value),
            provider_reference=answer.reference,
            client_secret=answer.client_secret,
            next_action=answer.next_action,
            failure_code=answer.failure_code,
        )
        await self._ledger.execute_refunds(surplus, None)
        if payment.status is PaymentStatus.FAILED:
            raise PaymentFailed(
                "The card payment failed.",
                details={"payment_id": payment.id, "decline_code": payment.failure_code},
            )
        return payment

    async def _apply(
        self,
        payment_id: str,
        status: PaymentStatus,
        *,
        provider_reference: str | None = None,
        client_secret: str | None = None,
        next_action: dict[str, object] | None = None,
        failure_code: str | None = None,
    ) -> tuple[Payment, list[ReservedRefund]]:
        async with self._uow() as uow:
            payment = await uow.payments.get(payment_id)
            assert payment is not None
            surplus = await self._ledger.apply_signal(
                uow,
                payment,
                status,
                at=self._clock.now(),
                provider_reference=provider_reference,
                client_secret=client_secret,
                next_action=next_action,
                failure_code=failure_code,
            )
            await uow.commit()
        return payment, surplus

    async def _record_manual(self, cmd: PayOrder) -> Payment:
        reference = check_reference(cmd.reference)
        if cmd.payment_method is not None:
            raise ValidationFailed({"payment_method": "only card payments take a payment method"})
        if cmd.amount is not None and (type(cmd.amount) is not int or cmd.amount < 1):
            raise ValidationFailed({"amount": "must be a positive integer number of minor units"})
        now = self._clock.now()
        async with self._uow() as uow:
            order = await self._payable_order(uow, cmd.actor, cmd.order_id, cmd.amount)
            amount = order.balance_due if cmd.amount is None else cmd.amount
            payment = Payment(
                id=self._ids.new("pay"),
                order_id=order.id,
                method=PaymentMethod.MANUAL,
                provider=PROVIDER_MANUAL,
                status=PaymentStatus.PROCESSING,
                amount=Money(amount, order.currency),
                created_at=now,
                updated_at=now,
                reference=reference,
            )
            await uow.payments.add(payment)
            # The same state machine as the provider's signals; a manual payment never
            # exceeds the balance due, so it leaves no surplus to refund.
            await self._ledger.apply_signal(uow, payment, PaymentStatus.SUCCEEDED, at=now)
            await self._ledger.audit(
                uow,
                cmd.actor,
                "payment.recorded_manually",
                order.id,
                {"payment_id": payment.id, "amount": amount, "currency": order.currency, "reference": reference},
                now,
            )
            await uow.commit()
        return payment

    async def _payable_order(self, uow: UnitOfWork, actor: Actor, order_id: str, amount: int | None = None) -> Order:
        """The order, if the actor may pay it: awaiting payment and not past its deadline.
        One past its deadline that the sweep has not reached yet is expired here and now."""
        order = await get_visible_order(uow, actor, order_id)
        now = self._clock.now()
        if order.is_due_for_expiry(now):
            await expire_orders(uow, self._ledger, [order], now)
            await uow.commit()
            raise InvalidOrderTransition(order.status.value, "pay")
        order.check_payable(amount)
        return order

    # Refunds.
    async def refund(self, cmd: RefundPayment) -> list[Refund]:
        """Refund part or all of what an order's payments captured (staff and admins).

        ``amount`` (default: all that can still be refunded) comes from the most recent
        captured payments first, one refund per payment it touches (almost always one).
        The refunds are reserved (pending, counted against what remains refundable) in a
        first unit of work, so concurrent refunds never add up to more than was captured
        (RefundExceedsCaptured, 422, says how much can still be); card refunds then go to
        the provider (idempotency key: the refund's id) and are settled in a second unit
        of work; manual payments' refunds are recorded at once. Raises RefundFailed (402)
        if the provider refused one (its reservation is released). One the provider could
        not be reached about, or has not finished, comes back pending: it keeps its
        reservation, and the provider's webhook or ``resend_unsent_refunds`` (the server's
        housekeeping) settles it."""
        cmd = attrs.evolve(cmd, actor=await as_staff(self._uow, cmd.actor))
        reason = check_reason(cmd.reason)
        if cmd.amount is not None and (type(cmd.amount) is not int or cmd.amount < 1):
            raise ValidationFailed({"amount": "must be a positive integer number of minor units"})
        now = self._clock.now()
        async with self._uow() as uow:
            order = await get_visible_order(uow, cmd.actor, cmd.order_id)
            order.check_refundable()
            amount = cmd.amount if cmd.amount is not None else await self._ledger.refundable(uow, order)
            if amount == 0:
                raise RefundExceedsCaptured(0)
            reserved = await self._ledger.reserve_refunds(uow, order, amount, reason, cmd.actor, at=now)
            await uow.commit()
        refunds, _ = await self._ledger.execute_refunds(reserved, cmd.actor)
        failed = [r for r in refunds if r.status is RefundStatus.FAILED]
        if failed:
            raise RefundFailed(
                "The payment provider did not refund.",
                details={
                    "refund_ids": [r.id for r in failed],
                    "failure_code": failed[0].failure_code,
                },
            )
        return refunds

    async def retry_pending_refunds(self, actor: Actor, order_id: str) -> list[Refund]:
        """Send the order's pending card refunds to the provider again (staff), each with its
        own idempotency key, so one the provider already made is not made twice; for refunds
        left pending because the provider could not be reached. Returns them as they now
        stand; Unavailable if the provider still cannot be reached."""
        actor = await as_staff(self._uow, actor)
        async with self._uow(readonly=True) as uow:
            order = await get_visible_order(uow, actor, order_id)
            payments = {p.id: p for p in await uow.payments.list_for_order(order.id)}
            pending = [
                ReservedRefund(r, payments[r.payment_id].provider_reference)
                for r in await uow.refunds.list_for_order(order.id)
                # Only those the provider never acknowledged: one it holds (its "pending") is
                # settled by its webhook, and asking again after its key's lifetime could
                # make a second refund.
                if r.status is RefundStatus.PENDING and r.provider_reference is None
            ]
        refunds, errors = await self._ledger.execute_refunds(pending, actor)
        unavailable = [e for e in errors if isinstance(e, Unavailable)]
        if unavailable:
            raise unavailable[0]
        return refunds

    async def resend_unsent_refunds(self, *, settled_after: timedelta = timedelta(minutes=1)) -> int:
        """For the server's housekeeping: card refunds reserved but never acknowledged by the
        provider (it was unreachable, or the process stopped between reserving and asking)
        are sent again, with their own ids as idempotency keys, once they are a minute old
        and while they are younger than the provider's idempotency window (a day, less an
        hour's margin): older ones are left for staff to look into (resending them could
        make a second refund). Returns how many were sent; stops at the first Unavailable."""
        now = self._clock.now()
        async with self._uow(readonly=True) as uow:
            unsent = await uow.refunds.list_unsent(now - RESEND_WINDOW, now - settled_after, limit=100)
        sent = 0
        operator = Actor.operator()
        for order_id in dict.fromkeys(r.order_id for r in unsent):
            claimed = await self._claim_unsent_refunds(order_id, now, settled_after)
            refunds, errors = await self._ledger.execute_refunds(claimed, operator)
            if any(isinstance(e, Unavailable) for e in errors):
                break  # the provider is still away: the next round tries again
            sent += len(refunds)
        return sent

    async def _claim_unsent_refunds(
        self, order_id: str, now: datetime, settled_after: timedelta
    ) -> list[ReservedRefund]:
        """The order's unsent card refunds that no one has tried within ``settled_after``,
        touched (updated_at: now) in one write unit: of several servers sweeping at once, one
        claims each refund and sends it; the others find it touched and leave it."""
        async with self._uow() as uow:
            payments = {p.id: p for p in await uow.payments.list_for_order(order_id)}
            claimed = []
            for refund in await uow.refunds.list_for_order(order_id):
                reference = payments[refund.payment_id].provider_reference
                if (
                    refund.status is RefundStatus.PENDING
                    and refund.provider_reference is None
                    and reference is not None
                    and refund.updated_at <= now - settled_after
                ):
                    refund.updated_at = now  # the claim: tried now
                    await uow.refunds.update(refund)
                    claimed.append(ReservedRefund(refund, reference))
            await uow.commit()
        return claimed

    # The provider's notifications.
    async def handle_provider_event(self, event: ProviderEvent) -> bool:
        """Apply a verified notification once: False if this event id was seen before
        (nothing happens), True otherwise. Payment events go through the same state
        machine as the provider's answers; a refund event makes our refunds of the payment
        add up to the provider's total (see Ledger.reconcile_refunds). Events about
        payments we do not know are recorded and ignored."""
        now = self._clock.now()
        surplus: list[ReservedRefund] = []
        async with self._uow() as uow:
            if not await uow.provider_events.record(self._provider, event.id, now):
                return False
            payment = await self._payment_of(uow, event)
            if payment is not None:
                if event.kind is ProviderEventKind.PAYMENT_SUCCEEDED:
                    surplus = await self._ledger.apply_signal(
                        uow, payment, PaymentStatus.SUCCEEDED, at=now, provider_reference=event.payment_reference
                    )
                elif event.kind is ProviderEventKind.PAYMENT_FAILED:
                    await self._ledger.apply_signal(
                        uow,
                        payment,
                        PaymentStatus.FAILED,
                        at=now,
                        provider_reference=event.payment_reference,
                        failure_code=event.failure_code,
                    )
                elif event.kind is ProviderEventKind.REFUNDED and event.amount is not None:
                    await self._ledger.reconcile_refunds(uow, payment, event.amount.amount, now)
            await uow.commit()
        await self._ledger.execute_refunds(surplus, None)
        return True

    async def _payment_of(self, uow: UnitOfWork, event: ProviderEvent) -> Payment | None:
        payment = await uow.payments.get_by_provider_reference(event.payment_reference)
        if payment is not None:
            return payment
        # The webhook may come before the answer that told us the provider's reference:
        # our payment id travels in the metadata.
        payment_id = event.metadata.get("tillbox_payment_id")
        if payment_id is None:
            return None
        payment = await uow.payments.get(payment_id)
        if payment is None or payment.provider != self._provider or payment.provider_reference is not None:
            return None
        return payment

    # Reading.
    async def list_payments(self, actor: Actor, order_id: str) -> list[Payment]:
        """The order's payments, oldest first (the order's customer or staff)."""
        actor = await for_reading(self._uow, actor)
        async with self._uow(readonly=True) as uow:
            order = await get_visible_order(uow, actor, order_id)
            return await uow.payments.list_for_order(order.id)

    async def list_refunds(self, actor: Actor, order_id: str) -> list[Refund]:
        """The order's refunds, oldest first (the order's customer or staff)."""
        actor = await for_reading(self._uow, actor)
        async with self._uow(readonly=True) as uow:
            order = await get_visible_order(uow, actor, order_id)
            return await uow.refunds.list_for_order(order.id)

    async def refundable(self, actor: Actor, order_id: str) -> int:
        """What can still be refunded of the order, in minor units (staff): captured, less
        every refund pending or succeeded; what ``refund`` takes when no amount is given."""
        actor = await as_staff(self._uow, actor)
        async with self._uow(readonly=True) as uow:
            order = await get_visible_order(uow, actor, order_id)
            return await self._ledger.refundable(uow, order)

    async def get_payment(self, actor: Actor, payment_id: str) -> Payment:
        actor = await for_reading(self._uow, actor)
        async with self._uow(readonly=True) as uow:
            payment = await uow.payments.get(payment_id)
            order = None if payment is None else await uow.orders.get(payment.order_id)
        if payment is None or order is None or not may_see(actor, order):
            raise PaymentNotFound(payment_id)
        return payment


def _unresolved_card_payment(payments: list[Payment]) -> Payment | None:
    """The latest card payment still processing: the provider's answer to it never came."""
    return next(
        (p for p in reversed(payments) if p.method is PaymentMethod.CARD and p.status is PaymentStatus.PROCESSING), None
    )
