"""Orders: place (reserving stock), read and list, cancel (releasing stock and refunding what
was paid), fulfil, and expire the unpaid ones."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from core.domain import events
from core.domain.catalog import Product
from core.domain.errors import (
    AuthenticationRequired,
    InsufficientStock,
    NotAllowed,
    UnknownProduct,
    ValidationFailed,
)
from core.domain.money import Money
from core.domain.orders import Order, OrderLine, OrderStatus, check_line_count, check_quantity
from core.domain.pagination import Page, PageRequest
from core.domain.payments import PROVIDER_MANUAL, Payment, PaymentMethod, PaymentStatus, Refund, RefundStatus
from core.domain.users import Actor
from core.ports.clock import Clock, IdGenerator
from core.ports.payments import PaymentGateway
from core.ports.repositories import OrderFilter
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from core.services.access import as_staff, for_reading, signed_in
from core.services.ledger import Ledger, ReservedRefund, get_visible_order, release_stock

CANCEL_REFUND_REASON = "Order cancelled."
#: The most orders one import records: one unit of work (see catalog.MAX_IMPORT).
MAX_IMPORT = 10_000
#: What an imported order may have come to. One awaiting payment would hold stock and
#: expire: such an order is placed, not imported.
IMPORTABLE = frozenset(OrderStatus) - {OrderStatus.PENDING_PAYMENT}
IMPORT_REFERENCE = "imported"
IMPORT_REFUND_REASON = "Refunded before the import."
_MAY_BE_CAPTURED = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.PROCESSING, PaymentStatus.REQUIRES_ACTION})


@attrs.frozen
class OrderSettings:
    expiry: timedelta = timedelta(minutes=30)  # how long an unpaid order keeps its stock
    # Whether a customer may cancel an order already paid, when every payment of it is a
    # card payment the provider can refund (otherwise paid orders are cancelled by staff).
    customers_cancel_paid_card_orders: bool = False


@attrs.frozen
class OrderItem:
    """One line as the client asks for it: a product by id or by sku (exactly one)."""

    quantity: int
    product_id: str | None = None
    sku: str | None = None


def _items(items: Iterable[OrderItem]) -> tuple[OrderItem, ...]:
    return tuple(items)


@attrs.frozen
class PlaceOrder:
    actor: Actor
    items: tuple[OrderItem, ...] = attrs.field(converter=_items)


@attrs.frozen
class PastOrder:
    """An order as it happened: who placed it, when, what, and what it came to.
    ``refunded``: for a partially refunded order, how much of its total went back."""

    customer_id: str
    items: tuple[OrderItem, ...] = attrs.field(converter=_items)
    status: OrderStatus = OrderStatus.FULFILLED
    placed_at: datetime | None = None  # None: now
    refunded: int = 0


def _past_orders(orders: Iterable[PastOrder]) -> tuple[PastOrder, ...]:
    return tuple(orders)


@attrs.frozen
class ImportOrders:
    actor: Actor
    orders: tuple[PastOrder, ...] = attrs.field(converter=_past_orders)


@attrs.frozen
class ListOrders:
    actor: Actor
    page: PageRequest = attrs.field(factory=PageRequest)
    status: OrderStatus | None = None
    customer_id: str | None = None  # staff only; a customer always lists their own


@attrs.frozen
class CancelOrder:
    actor: Actor
    order_id: str
    reason: str | None = None


@attrs.frozen
class FulfilOrder:
    actor: Actor
    order_id: str


async def expire_orders(uow: UnitOfWork, ledger: Ledger, orders: Sequence[Order], now: datetime) -> None:
    """Expire orders past their deadline in the caller's unit of work: their stock goes back."""
    for order in orders:
        order.expire(at=now)
        await uow.orders.update(order)
        await ledger.emit(uow, events.ORDER_EXPIRED, order, now)
    await release_stock(uow, [line for order in orders for line in order.lines], now)


class OrderService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        gateway: PaymentGateway,
        clock: Clock,
        ids: IdGenerator,
        currency: str,
        settings: OrderSettings | None = None,
    ):
        self._uow = uow
        self._clock = clock
        self._ids = ids
        self._currency = currency
        self._settings = settings or OrderSettings()
        self._ledger = Ledger(uow, gateway, clock, ids)

    async def place_order(self, cmd: PlaceOrder) -> Order:
        """Place an order for the signed-in actor, reserving stock for every line in one unit
        of work: either every line is reserved or nothing changes.

        Lines name active products by id or sku (UnknownProduct, 422, lists every line that
        does not); each product at most once (DuplicateProduct); 1 to 100 lines of 1 to
        1000 units. If any line is short, InsufficientStock (409) lists every short line
        (index, product_id, sku, requested, available). The order keeps the sku, name and
        price of each product as they are now, and expires unpaid after the configured time."""
        _check_items(cmd.items)
        actor = await signed_in(self._uow, cmd.actor)
        customer_id = actor.user_id
        if customer_id is None:  # the operator places no orders: orders belong to a customer
            raise NotAllowed("Orders are placed by a signed-in user.", code="forbidden")
        now = self._clock.now()
        async with self._uow() as uow:
            products = await self._products_for(uow, cmd.items)
            order = Order.place(
                id=self._ids.new("ord"),
                customer_id=customer_id,
                lines=[
                    OrderLine(p.id, p.sku, p.name, p.price, item.quantity)
                    for p, item in zip(products, cmd.items, strict=True)
                ],
                currency=self._currency,
                at=now,
                expires_at=now + self._settings.expiry,
            )
            short = [
                {"index": i, "product_id": p.id, "sku": p.sku, "requested": item.quantity, "available": p.stock}
                for i, (p, item) in enumerate(zip(products, cmd.items, strict=True))
                if p.stock < item.quantity
            ]
            if short:
                raise InsufficientStock(short)
            for product, item in zip(products, cmd.items, strict=True):
                # A version-checked update: writes are serialized, and a stale read could
                # never oversell anyway (it would be a ConcurrentUpdate, not a lost update).
                product.adjust_stock(-item.quantity, at=now)
                await uow.products.update(product)
            await uow.orders.add(order)
            await self._ledger.emit(uow, events.ORDER_CREATED, order, now)
            if order.status is OrderStatus.PAID:  # nothing to pay
                await self._ledger.emit(uow, events.ORDER_PAID, order, now)
            await uow.commit()
        return order

    async def import_orders(self, cmd: ImportOrders) -> list[Order]:
        """Record orders of the past in one unit of work: a demo history, or the orders of a
        shop moving from another system. Staff only; at most MAX_IMPORT at a time.

        Each order is checked as ``place_order`` checks it (its customer must be an account
        of the store; UnknownProduct names the lines without an active product) and
        snapshots its products as they are now. It then goes the way its status says, through
        the same rules as a live order, each step stamped at ``placed_at``: a paid, fulfilled
        or refunded order has a manual payment of its total (reference ``imported``), a
        refunded one a refund of all of it, a partially refunded one a refund of ``refunded``
        (more than 0, less than the total); an expired one expired when its time was up,
        which must be past. No order may await payment (IMPORTABLE). Stock stays as it is:
        the catalog's stock is what those orders left. Nothing goes to the outbox (webhooks
        would announce history as news); the audit log gets one entry for the import
        (``order.imported``: how many of each status). ValidationFailed names the first bad
        order (``orders[3].status``) and nothing is recorded."""
        actor = await as_staff(self._uow, cmd.actor)
        if len(cmd.orders) > MAX_IMPORT:
            raise ValidationFailed({"orders": f"at most {MAX_IMPORT} per import"})
        now = self._clock.now()
        for index, past in enumerate(cmd.orders):
            _check_past(index, past, now, self._settings.expiry)
        # Thousands of products and a few accounts by id: a read that may take long on a
        # large store (a cold cache), with the budget of slow reads.
        async with self._uow(readonly=True, slow=True) as uow:
            ids = {item.product_id for past in cmd.orders for item in past.items if item.product_id is not None}
            skus = {item.sku for past in cmd.orders for item in past.items if item.sku is not None}
            by_id = {p.id: p for p in await uow.products.get_many(sorted(ids))} if ids else {}
            by_sku = {p.sku: p for p in await uow.products.get_many_by_sku(sorted(skus))} if skus else {}
            customers = {past.customer_id for past in cmd.orders}
            known = {user.id for user in [await uow.users.get(c) for c in sorted(customers)] if user is not None}
        orders: list[Order] = []
        payments: list[Payment] = []
        refunds: list[Refund] = []
        for index, past in enumerate(cmd.orders):
            if past.customer_id not in known:
                raise ValidationFailed({f"orders[{index}].customer_id": "is not an account of this store"})
            products = _lines_of(index, past.items, by_id, by_sku)
            at = now if past.placed_at is None else past.placed_at
            order = Order.place(
                id=self._ids.new("ord"),
                customer_id=past.customer_id,
                lines=[
                    OrderLine(p.id, p.sku, p.name, p.price, item.quantity)
                    for p, item in zip(products, past.items, strict=True)
                ],
                currency=self._currency,
                at=at,
                expires_at=at + self._settings.expiry,
            )
            self._replay(index, past, order, at, payments, refunds)
            orders.append(order)
        async with self._uow() as uow:
            await uow.orders.add_many(orders)
            await uow.payments.add_many(payments)
            await uow.refunds.add_many(refunds)
            if orders:
                by_status = collections.Counter(order.status.value for order in orders)
                await self._ledger.audit(
                    uow, actor, "order.imported", orders[0].id, dict(sorted(by_status.items())), now
                )
                await uow.commit()
        return orders

    def _replay(
        self, index: int, past: PastOrder, order: Order, at: datetime, payments: list[Payment], refunds: list[Refund]
    ) -> None:
        """Take a newly placed order the way ``past`` went, recording its payment and refund."""
        status = past.status
        if status is OrderStatus.EXPIRED:
            assert order.expires_at is not None
            order.expire(at=order.expires_at)
            return
        if status is OrderStatus.CANCELLED:
            order.cancel(at=at)
            return
        total = order.total.amount
        if total > 0:
            payment = Payment(
                id=self._ids.new("pay"),
                order_id=order.id,
                method=PaymentMethod.MANUAL,
                provider=PROVIDER_MANUAL,
                status=PaymentStatus.SUCCEEDED,
                amount=order.total,
                created_at=at,
                updated_at=at,
                reference=IMPORT_REFERENCE,
            )
            payments.append(payment)
            order.record_payment(total, at=at)
        if status is OrderStatus.FULFILLED:
            order.fulfil(at=at)
        elif status in (OrderStatus.REFUNDED, OrderStatus.PARTIALLY_REFUNDED):
            amount = total if status is OrderStatus.REFUNDED else past.refunded
            if total == 0 or (status is OrderStatus.PARTIALLY_REFUNDED and not 0 < amount < total):
                raise ValidationFailed(
                    {f"orders[{index}].refunded": f"must be more than 0 and less than the total, {total}"}
                )
            refunds.append(
                Refund(
                    id=self._ids.new("ref"),
                    payment_id=payments[-1].id,
                    order_id=order.id,
                    amount=Money(amount, order.currency),
                    reason=IMPORT_REFUND_REASON,
                    status=RefundStatus.SUCCEEDED,
                    created_at=at,
                    updated_at=at,
                )
            )
            order.record_refund(amount, at=at)

    async def _products_for(self, uow: UnitOfWork, items: Sequence[OrderItem]) -> list[Product]:
        """The product of each item, in order; UnknownProduct names every line without one."""
        ids = [item.product_id for item in items if item.product_id is not None]
        skus = [item.sku for item in items if item.sku is not None]
        # Skus are looked up first, and then every product is read in one get_many: a store
        # that locks what a write unit reads locks them in one batch, in one order, so that
        # two orders naming the same products by id and by sku cannot deadlock.
        sku_ids = {p.sku: p.id for p in await uow.products.get_many_by_sku(skus)} if skus else {}
        wanted = list(dict.fromkeys([*ids, *sku_ids.values()]))
        by_id = {p.id: p for p in await uow.products.get_many(wanted)} if wanted else {}
        by_sku = {sku: by_id[product_id] for sku, product_id in sku_ids.items() if product_id in by_id}
        found: list[Product] = []
        unknown: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            product = by_id.get(item.product_id) if item.product_id is not None else by_sku.get(item.sku or "")
            if product is None or not product.active:
                ref = {"product_id": item.product_id} if item.product_id is not None else {"sku": item.sku}
                unknown.append({"index": index, **ref})
            else:
                found.append(product)  # a product on two lines is refused by Order.place
        if unknown:
            raise UnknownProduct(unknown)
        return found

    async def get_order(self, actor: Actor, order_id: str) -> Order:
        """An order its customer or staff may see; anyone else gets OrderNotFound."""
        actor = await for_reading(self._uow, actor)
        async with self._uow(readonly=True) as uow:
            return await get_visible_order(uow, actor, order_id)

    async def list_orders(self, cmd: ListOrders) -> Page[Order]:
        """Newest first. A customer lists their own orders; staff list everyone's, or one
        customer's with ``customer_id``. Optionally only those of one status."""
        actor = await for_reading(self._uow, cmd.actor)
        if actor.is_staff:
            customer_id = cmd.customer_id
        elif actor.user_id is None:
            raise AuthenticationRequired()
        else:
            customer_id = actor.user_id
        order_filter = OrderFilter(customer_id=customer_id, status=cmd.status)
        # Staff filtering everyone's orders may read many for one page; a customer's own
        # orders are few.
        slow = actor.is_staff and order_filter != OrderFilter()
        async with self._uow(readonly=True, slow=slow) as uow:
            return await uow.orders.list(cmd.page, order_filter)

    async def cancel_order(self, cmd: CancelOrder) -> Order:
        """Cancel an order awaiting payment or paid (not yet fulfilled).

        Staff cancel any such order. Its customer cancels one nothing was paid for yet; an
        order already (partly) paid is cancelled by staff, who hand back what was paid,
        unless the store lets customers cancel orders paid only by card (the provider
        refunds those: ``customers_cancel_paid_card_orders``). Otherwise NotAllowed
        (``cancel_needs_staff``), and nothing changes.

        In one unit of work the order is cancelled, its stock released and refunds of
        everything captured are reserved (manual payments' refunds recorded at once);
        then card refunds go to the provider and are settled. The order stays cancelled
        whatever the provider says: a refund that fails or cannot be sent shows on the
        order (amount_refunded below amount_paid), in its refunds and in the audit log,
        and staff can refund it again. Returns the order as it stands after all that."""
        actor = await signed_in(self._uow, cmd.actor)
        now = self._clock.now()
        async with self._uow() as uow:
            order = await get_visible_order(uow, actor, cmd.order_id)
            was = order.status
            order.cancel(at=now)  # the state machine first: "fulfilled cannot be cancelled" says more
            if not actor.is_staff:
                self._check_customer_may_cancel(order, await uow.payments.list_for_order(order.id))
            await uow.orders.update(order)
            await release_stock(uow, order.lines, now)
            await self._ledger.emit(uow, events.ORDER_CANCELLED, order, now)
            await self._ledger.audit(
                uow,
                actor,
                "order.cancelled",
                order.id,
                {"status": was.value, "reason": cmd.reason, "amount_paid": order.amount_paid},
                now,
            )
            refundable = await self._ledger.refundable(uow, order)
            reserved: list[ReservedRefund] = []
            if refundable:
                reason = cmd.reason.strip() if cmd.reason and cmd.reason.strip() else CANCEL_REFUND_REASON
                reserved = await self._ledger.reserve_refunds(uow, order, refundable, reason, actor, at=now)
            await uow.commit()
        if any(r.payment_reference is not None for r in reserved):
            await self._ledger.execute_refunds(reserved, actor)
            async with self._uow(readonly=True) as uow:
                reread = await uow.orders.get(order.id)
            assert reread is not None
            return reread
        return order

    def _check_customer_may_cancel(self, order: Order, payments: Sequence[Payment]) -> None:
        # A card payment still being processed (or waiting for 3-D Secure) may yet succeed:
        # it counts as paid here, or a customer could cancel while their card is charged.
        paid = [p for p in payments if p.status in _MAY_BE_CAPTURED]
        if not paid:
            return  # nothing was paid: the customer's own decision
        by_card_only = all(p.provider != PROVIDER_MANUAL for p in paid)
        if self._settings.customers_cancel_paid_card_orders and by_card_only:
            return
        raise NotAllowed(
            "This order has been paid; the shop cancels it and hands back what was paid.",
            code="cancel_needs_staff",
            details={"order_id": order.id, "status": order.status.value},
        )

    async def fulfil_order(self, cmd: FulfilOrder) -> Order:
        """Mark a paid order fulfilled (staff)."""
        actor = await as_staff(self._uow, cmd.actor)
        now = self._clock.now()
        async with self._uow() as uow:
            order = await get_visible_order(uow, actor, cmd.order_id)
            order.fulfil(at=now)
            await uow.orders.update(order)
            await self._ledger.emit(uow, events.ORDER_FULFILLED, order, now)
            await self._ledger.audit(uow, actor, "order.fulfilled", order.id, {}, now)
            await uow.commit()
        return order

    async def expire_due(self, now: datetime | None = None, limit: int = 100) -> list[str]:
        """Expire up to ``limit`` unpaid orders past their deadline, releasing their stock;
        returns their ids. For the server's periodic task: idempotent, and safe to run in
        several processes at once (each order is expired by exactly one unit of work; the
        others no longer find it due)."""
        now = self._clock.now() if now is None else now
        async with self._uow(readonly=True) as uow:  # the common case, nothing due, takes no write lock
            if not await uow.orders.due_for_expiry(now, 1):
                return []
        async with self._uow() as uow:
            due = await uow.orders.due_for_expiry(now, limit)
            by_id = {o.id: o for o in await uow.orders.get_many(due)}
            # Read again as this unit holds them: another server (one that read them due at
            # the same time, and held them first) may have expired or had them paid meanwhile.
            still_due = [by_id[order_id] for order_id in due if by_id[order_id].is_due_for_expiry(now)]
            await expire_orders(uow, self._ledger, still_due, now)
            await uow.commit()
        return [order.id for order in still_due]


def _check_past(index: int, past: PastOrder, now: datetime, expiry: timedelta) -> None:
    try:
        _check_items(past.items)
    except ValidationFailed as exc:
        fields = exc.details["fields"]
        raise ValidationFailed({f"orders[{index}].{name}": problem for name, problem in fields.items()}) from None
    if past.status not in IMPORTABLE:
        allowed = ", ".join(sorted(status.value for status in IMPORTABLE))
        raise ValidationFailed({f"orders[{index}].status": f"must be one of {allowed}"})
    if past.placed_at is not None and past.placed_at > now:
        raise ValidationFailed({f"orders[{index}].placed_at": "must not be in the future"})
    placed = now if past.placed_at is None else past.placed_at
    if past.status is OrderStatus.EXPIRED and placed + expiry > now:
        raise ValidationFailed({f"orders[{index}].placed_at": "is too recent for the order to have expired"})


def _lines_of(
    index: int, items: Sequence[OrderItem], by_id: dict[str, Product], by_sku: dict[str, Product]
) -> list[Product]:
    found: list[Product] = []
    unknown: list[dict[str, Any]] = []
    for line, item in enumerate(items):
        product = by_id.get(item.product_id) if item.product_id is not None else by_sku.get(item.sku or "")
        if product is None or not product.active:
            ref = {"product_id": item.product_id} if item.product_id is not None else {"sku": item.sku}
            unknown.append({"order": index, "index": line, **ref})
        else:
            found.append(product)
    if unknown:
        raise UnknownProduct(unknown)
    return found


def _check_items(items: Sequence[OrderItem]) -> None:
    check_line_count(len(items))
    for index, item in enumerate(items):
        check_quantity(index, item.quantity)
        named = [ref for ref in (item.product_id, item.sku) if ref is not None]
        if len(named) != 1 or not isinstance(named[0], str) or not named[0]:
            raise ValidationFailed({f"items[{index}]": "name the product by product_id or by sku (one of them)"})
