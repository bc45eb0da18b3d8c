"""How the shop is doing, for staff: the figures of the console's dashboard, read together
in one snapshot of the store."""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from core.domain.catalog import Product
from core.domain.orders import OrderStatus
from core.domain.users import Actor
from core.ports.clock import Clock
from core.ports.repositories import OrderSummary
from core.ports.unit_of_work import UnitOfWorkFactory
from core.services.access import as_staff

#: A product with this many or fewer in stock is running out.
LOW_STOCK_THRESHOLD = 5


@attrs.frozen
class ReadShopFigures:
    actor: Actor
    low_stock_threshold: int = LOW_STOCK_THRESHOLD
    low_stock_named: int = 5  # how many of the products running out are named


@attrs.frozen
class ShopFigures:
    """What the store holds at ``at``. Orders are those that still stand (not cancelled or
    expired) in the shop's currency; a day is a UTC day, the week the last 7 times 24 hours."""

    at: datetime
    currency: str
    today: OrderSummary
    last_7_days: OrderSummary
    awaiting_payment: int  # pending_payment
    awaiting_fulfilment: int  # paid
    pending_refunds: int  # asked of the provider and not settled yet
    low_stock_threshold: int
    low_stock: list[Product]  # the lowest first, at most ``low_stock_named`` of them
    more_low_stock: bool  # others are running out too


class ReportService:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, currency: str):
        self._uow = uow
        self._clock = clock
        self._currency = currency

    async def shop_figures(self, cmd: ReadShopFigures) -> ShopFigures:
        """Staff only. One read-only unit (the figures agree with each other), marked slow: on a
        big store a week of orders is many index entries, and the event loop serves meanwhile."""
        await as_staff(self._uow, cmd.actor)
        now = self._clock.now()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        async with self._uow(readonly=True, slow=True) as uow:
            today = await uow.orders.summary_since(midnight, self._currency)
            week = await uow.orders.summary_since(now - timedelta(days=7), self._currency)
            awaiting_payment = await uow.orders.count_with_status(OrderStatus.PENDING_PAYMENT)
            awaiting_fulfilment = await uow.orders.count_with_status(OrderStatus.PAID)
            pending_refunds = await uow.refunds.count_pending()
            low = await uow.products.low_stock(cmd.low_stock_threshold, cmd.low_stock_named + 1)
        return ShopFigures(
            at=now,
            currency=self._currency,
            today=today,
            last_7_days=week,
            awaiting_payment=awaiting_payment,
            awaiting_fulfilment=awaiting_fulfilment,
            pending_refunds=pending_refunds,
            low_stock_threshold=cmd.low_stock_threshold,
            low_stock=low[: cmd.low_stock_named],
            more_low_stock=len(low) > cmd.low_stock_named,
        )
