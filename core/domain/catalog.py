"""Products: what the store sells, its price and how many are on hand."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import attrs

from core.domain.errors import InsufficientStock, Invalid, VersionMismatch
from core.domain.money import Money

_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 10_000
MAX_STOCK = 10**9


def check_sku(sku: str) -> str:
    if not _SKU.fullmatch(sku):
        raise Invalid(
            "A sku is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
            code="invalid_sku",
            details={"field": "sku"},
        )
    return sku


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise Invalid(f"A name has 1-{MAX_NAME_LENGTH} characters.", code="invalid_name", details={"field": "name"})
    return name


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise Invalid(
            f"A description has at most {MAX_DESCRIPTION_LENGTH} characters.",
            code="invalid_description",
            details={"field": "description"},
        )
    return description


def check_price(price: Money, currency: str) -> Money:
    if price.currency != currency:
        raise Invalid(
            f"This store sells in {currency}, not {price.currency}.",
            code="currency_mismatch",
            details={"field": "currency"},
        )
    if price.amount < 0:
        raise Invalid("A price cannot be negative.", code="invalid_price", details={"field": "price"})
    return price


def check_stock(stock: int) -> int:
    if type(stock) is not int or not 0 <= stock <= MAX_STOCK:
        raise Invalid(
            f"Stock is a whole number from 0 to {MAX_STOCK}.", code="invalid_stock", details={"field": "stock"}
        )
    return stock


@attrs.define
class Product:
    id: str
    sku: str
    name: str
    description: str
    price: Money
    stock: int
    active: bool
    created_at: datetime
    updated_at: datetime
    version: int = 1

    def check_version(self, expected: int | None) -> None:
        """Optimistic concurrency: a client that read version N may only update version N."""
        if expected is not None and expected != self.version:
            raise VersionMismatch(self.version)

    def _touch(self, at: datetime) -> None:
        self.updated_at = at
        self.version += 1

    def update(self, changes: dict[str, Any], *, at: datetime) -> dict[str, tuple[Any, Any]]:
        """Apply already-validated field changes; return {field: (before, after)} of what changed."""
        changed: dict[str, tuple[Any, Any]] = {}
        for field, value in changes.items():
            before = getattr(self, field)
            if before != value:
                changed[field] = (before, value)
                setattr(self, field, value)
        if changed:
            self._touch(at)
        return changed

    def adjust_stock(self, delta: int, *, at: datetime) -> None:
        """Add (or with a negative delta, remove) units; stock never goes below zero."""
        new_stock = self.stock + delta
        if new_stock < 0:
            raise InsufficientStock(
                [{"product_id": self.id, "sku": self.sku, "requested": -delta, "available": self.stock}]
            )
        check_stock(new_stock)
        self.stock = new_stock
        self._touch(at)

    def restock(self, quantity: int, *, at: datetime) -> None:
        """Units come back from an order that will not be paid. Never refused: they were
        taken from this stock, so giving them back cannot be wrong even where a new delta
        of the same size would be. Stock never passes MAX_STOCK, though: units coming back
        to a product topped up to its ceiling meanwhile stop there (a billion units is
        notional; an invariant that no path can break is not)."""
        self.stock = min(self.stock + quantity, MAX_STOCK)
        self._touch(at)
