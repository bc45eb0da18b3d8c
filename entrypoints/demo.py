"""Demo data for ``tillbox db seed``: a catalog and a history of orders, the same on every
machine, made lazily so that a million of either never sits in memory at once."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from core.domain.orders import OrderStatus
from core.services.catalog import NewProduct
from core.services.orders import OrderItem, PastOrder

_ADJECTIVES = [
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Everyday",
    "Handmade",
    "Heavy",
    "Light",
    "Mini",
    "Organic",
    "Pro",
    "Rugged",
    "Smart",
    "Vintage",
    "Wireless",
]
_MATERIALS = [
    "Bamboo",
    "Canvas",
    "Ceramic",
    "Cotton",
    "Copper",
    "Glass",
    "Leather",
    "Linen",
    "Maple",
    "Oak",
    "Steel",
    "Walnut",
    "Wool",
]
_THINGS = [
    "Backpack",
    "Blanket",
    "Bottle",
    "Bowl",
    "Candle",
    "Chair",
    "Desk",
    "Lamp",
    "Headphones",
    "Jacket",
    "Kettle",
    "Knife",
    "Mug",
    "Notebook",
    "Pan",
    "Pen",
    "Pillow",
    "Plate",
    "Scarf",
    "Shelf",
    "Speaker",
    "Table",
    "Teapot",
    "Towel",
    "Tray",
    "Umbrella",
    "Vase",
    "Wallet",
    "Watch",
]

#: The demo customers who place the demo orders: a few accounts, as a small shop has regulars.
DEMO_CUSTOMERS = tuple(f"demo-customer-{n}@example.com" for n in range(1, 6))
#: How far back the demo history reaches.
HISTORY = timedelta(days=365)
#: Orders this recent may still await fulfilment (paid); older ones have come to an end.
RECENT = timedelta(days=3)
# What an order came to, by weight: most were fulfilled, some cancelled or left unpaid
# until they expired, a few refunded in whole or in part. None awaits payment: that is an
# order placed now, which holds stock (see OrderService.import_orders).
_OLDER: dict[OrderStatus, int] = {
    OrderStatus.FULFILLED: 72,
    OrderStatus.CANCELLED: 8,
    OrderStatus.EXPIRED: 12,
    OrderStatus.REFUNDED: 5,
    OrderStatus.PARTIALLY_REFUNDED: 3,
}
_RECENT: dict[OrderStatus, int] = {
    OrderStatus.PAID: 55,
    OrderStatus.FULFILLED: 30,
    OrderStatus.CANCELLED: 5,
    OrderStatus.EXPIRED: 10,
}


_NEED_A_PAYMENT = frozenset({OrderStatus.EXPIRED, OrderStatus.REFUNDED, OrderStatus.PARTIALLY_REFUNDED})


def demo_products(count: int, seed: int = 7) -> Iterator[NewProduct]:
    """A deterministic demo catalog: the same names, skus and prices on every machine."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    for n in range(1, count + 1):
        adjective, material, thing = rng.choice(_ADJECTIVES), rng.choice(_MATERIALS), rng.choice(_THINGS)
        yield NewProduct(
            sku=f"DEMO-{n:05d}",
            name=f"{adjective} {material} {thing}",
            description=f"A {adjective.lower()} {thing.lower()} made of {material.lower()}. Demo item {n}.",
            price=rng.randrange(1, 500) * 100 - 1,  # 0.99 to 498.99
            stock=rng.randrange(0, 500),
        )


def demo_orders(
    count: int, customer_ids: Sequence[str], products: Sequence[tuple[str, int]], *, until: datetime, seed: int = 11
) -> Iterator[PastOrder]:
    """``count`` orders of the past year, oldest first, ending at ``until`` (at least the
    order expiry ago, so that an expired one has had the time to expire): each by one of
    the customers, of 1 to 3 of the ``products`` (id and price), 1 to 3 of each. A partial
    refund gives back one unit of the first line (half the order, if that is all of it)."""
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    older, older_weights = list(_OLDER), list(_OLDER.values())
    recent, recent_weights = list(_RECENT), list(_RECENT.values())
    step = HISTORY / max(count, 1)
    most = min(3, len(products))
    for n in range(count):
        placed_at = until - step * (count - 1 - n)
        if until - placed_at < RECENT:
            status = rng.choices(recent, recent_weights)[0]
        else:
            status = rng.choices(older, older_weights)[0]
        chosen = rng.sample(products, rng.randint(1, most))
        quantities = [rng.choices((1, 2, 3), (6, 3, 1))[0] for _ in chosen]
        total = sum(price * quantity for (_, price), quantity in zip(chosen, quantities, strict=True))
        if total == 0 and status in _NEED_A_PAYMENT:
            status = OrderStatus.FULFILLED  # an order of free products is paid at once: nothing to expire or refund
        refunded = 0
        if status is OrderStatus.PARTIALLY_REFUNDED:
            first = chosen[0][1]
            refunded = first if 0 < first < total else total // 2
            if refunded == 0:  # one cent cannot be split: it all went back
                status = OrderStatus.REFUNDED
        yield PastOrder(
            customer_id=rng.choice(customer_ids),
            items=tuple(
                OrderItem(product_id=product_id, quantity=quantity)
                for (product_id, _), quantity in zip(chosen, quantities, strict=True)
            ),
            status=status,
            placed_at=placed_at,
            refunded=refunded,
        )
