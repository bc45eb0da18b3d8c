"""Money: integer minor units and an ISO 4217 code; never a float."""

from __future__ import annotations

import attrs
import pytest

from core.domain.errors import Invalid
from core.domain.money import MAX_AMOUNT, Money


def test_holds_integer_minor_units_and_currency() -> None:
    price = Money(1999, "USD")

    assert (price.amount, price.currency) == (1999, "USD")
    assert Money(-5, "EUR").amount == -5  # negative amounts exist (refunds, adjustments)
    assert Money.zero("JPY") == Money(0, "JPY")


@pytest.mark.parametrize("amount", [19.99, 20.0, True, False, "1999", None, 1999j])
def test_refuses_anything_but_an_int_amount(amount: object) -> None:
    with pytest.raises(Invalid) as caught:
        Money(amount, "USD")  # type: ignore[arg-type]

    assert caught.value.code == "invalid_amount"


def test_amount_bounds() -> None:
    assert Money(MAX_AMOUNT, "USD").amount == MAX_AMOUNT
    assert Money(-MAX_AMOUNT, "USD").amount == -MAX_AMOUNT
    for amount in (MAX_AMOUNT + 1, -MAX_AMOUNT - 1):
        with pytest.raises(Invalid) as caught:
            Money(amount, "USD")
        assert caught.value.code == "invalid_amount"


@pytest.mark.parametrize("currency", ["usd", "US", "USDD", "US1", "", " USD", "USD ", "USD\n", "ÉUR", None, 840])
def test_refuses_a_malformed_currency_code(currency: object) -> None:
    with pytest.raises(Invalid) as caught:
        Money(100, currency)  # type: ignore[arg-type]

    assert caught.value.code == "invalid_currency"


def test_is_immutable_and_compared_by_value() -> None:
    price = Money(100, "USD")

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        price.amount = 200  # type: ignore[misc]
    assert price == Money(100, "USD")
    assert price != Money(100, "EUR")
    assert price != Money(101, "USD")
    assert len({Money(100, "USD"), Money(100, "USD")}) == 1


def test_evolve_revalidates() -> None:
    with pytest.raises(Invalid) as caught:
        attrs.evolve(Money(100, "USD"), amount=1.5)  # type: ignore[arg-type]

    assert caught.value.code == "invalid_amount"


def test_arithmetic_in_one_currency() -> None:
    a, b = Money(1050, "USD"), Money(250, "USD")

    assert a + b == Money(1300, "USD")
    assert a - b == Money(800, "USD")
    assert b - a == Money(-800, "USD")
    assert a * 3 == Money(3150, "USD")
    assert a * 0 == Money(0, "USD")


@pytest.mark.parametrize("op", ["add", "sub"])
def test_refuses_to_combine_currencies(op: str) -> None:
    usd, eur = Money(100, "USD"), Money(100, "EUR")

    with pytest.raises(Invalid) as caught:
        _ = usd + eur if op == "add" else usd - eur

    assert caught.value.code == "currency_mismatch"
    assert caught.value.message == "Cannot combine USD with EUR."


def test_multiplying_by_a_fraction_is_refused() -> None:
    with pytest.raises(Invalid) as caught:
        Money(100, "USD") * 1.5  # type: ignore[operator]

    assert caught.value.code == "invalid_amount"


def test_overflowing_arithmetic_is_refused() -> None:
    with pytest.raises(Invalid) as caught:
        Money(MAX_AMOUNT, "USD") + Money(1, "USD")

    assert caught.value.code == "invalid_amount"
