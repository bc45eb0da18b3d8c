"""Products: what the store sells, its price and how many are on hand."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Any

import attrs

from core.domain.errors import InsufficientStock, ValidationFailed, VersionMismatch
from core.domain.money import MAX_AMOUNT, Money

_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
_SKU_FORM = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 10_000
MAX_STOCK = 10**9


def check_sku(sku: str) -> str:
    if not _SKU.fullmatch(sku):
        raise ValidationFailed({"sku": f"must be {_SKU_FORM}"})
    return sku


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValidationFailed({"name": f"must have 1 to {MAX_NAME_LENGTH} characters, not only spaces"})
    if any(unicodedata.category(c) == "Cc" for c in name):
        # A control character (a NUL, a line break) in a name is never meant, breaks lines
        # where names are shown, and sorts differently in different stores.
        raise ValidationFailed({"name": "cannot contain control characters"})
    return name


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise ValidationFailed({"description": f"must have at most {MAX_DESCRIPTION_LENGTH} characters"})
    return description


def check_price(amount: object, currency: object, store_currency: str) -> Money:
    """A price in minor units of the store's currency (``currency``, if the client named one)."""
    if currency != store_currency:
        raise ValidationFailed({"currency": f"must be {store_currency}, the store's currency"})
    if type(amount) is not int:  # bool is an int subclass and floats are never money
        raise ValidationFailed({"price": "must be an integer number of minor units"})
    if not 0 <= amount <= MAX_AMOUNT:
        raise ValidationFailed({"price": f"must be from 0 to {MAX_AMOUNT}"})
    return Money(amount, store_currency)


def check_stock(stock: int) -> int:
    if type(stock) is not int or not 0 <= stock <= MAX_STOCK:
        raise ValidationFailed({"stock": f"must be an integer from 0 to {MAX_STOCK}"})
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
    version: int = 1  # as read; the repository moves it when it saves

    def check_version(self, expected: int | None) -> None:
        """Optimistic concurrency: a client that read version N may only update version N."""
        if expected is not None and expected != self.version:
            raise VersionMismatch(self.version)

    def _touch(self, at: datetime) -> None:
        # The version is the one the product was read at; the repository moves it when it saves.
        self.updated_at = at

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
        if delta > 0 and new_stock > MAX_STOCK:
            raise ValidationFailed({"delta": f"would take the stock above {MAX_STOCK}"})
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
