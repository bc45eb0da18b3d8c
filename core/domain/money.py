"""Money: an integer amount in minor units and an ISO 4217 currency. Never a float."""

from __future__ import annotations

import re

import attrs

from core.domain.errors import Invalid

_CURRENCY = re.compile(r"^[A-Z]{3}$")

#: The largest amount we accept anywhere: fits in a signed 64-bit column with room for sums.
MAX_AMOUNT = 10**15


def _check_amount(_: object, __: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int:  # bool is an int subclass and floats are never money
        raise Invalid("An amount must be an integer number of minor units.", code="invalid_amount")
    if abs(value) > MAX_AMOUNT:
        raise Invalid("The amount is too large.", code="invalid_amount")


def _check_currency(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise Invalid(f"{value!r} is not an ISO 4217 currency code.", code="invalid_currency")


@attrs.frozen
class Money:
    amount: int = attrs.field(validator=_check_amount)
    currency: str = attrs.field(validator=_check_currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise Invalid(
                f"Cannot combine {self.currency} with {other.currency}.",
                code="currency_mismatch",
            )

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __mul__(self, factor: int) -> Money:
        return Money(self.amount * factor, self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)
