"""The product entity and the field rules of the catalog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.domain.catalog import (
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_STOCK,
    Product,
    check_description,
    check_name,
    check_price,
    check_sku,
    check_stock,
)
from core.domain.errors import InsufficientStock, ValidationFailed, VersionMismatch
from core.domain.money import MAX_AMOUNT, Money

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def _product(**overrides: object) -> Product:
    fields: dict[str, object] = {
        "id": "prd_1",
        "sku": "MUG-1",
        "name": "Mug",
        "description": "A mug.",
        "price": Money(1200, "USD"),
        "stock": 5,
        "active": True,
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(overrides)
    return Product(**fields)  # type: ignore[arg-type]


def _problems(fn: object, *args: object) -> dict[str, str]:
    """The fields a rule refuses, in the shape the request schema uses for its own."""
    with pytest.raises(ValidationFailed) as caught:
        fn(*args)  # type: ignore[operator]
    assert caught.value.code == "validation_failed"
    return dict(caught.value.details["fields"])


@pytest.mark.parametrize("sku", ["A", "9", "MUG-1", "mug_blue.large", "a" * 64, "X-1_2.3"])
def test_valid_skus(sku: str) -> None:
    assert check_sku(sku) == sku


@pytest.mark.parametrize(
    "sku", ["", "-MUG", ".MUG", "_MUG", "MUG 1", "MUG/1", "a" * 65, "MUG\n", "MUG-1\n", " MUG", "MÜG", "MUG;"]
)
def test_invalid_skus(sku: str) -> None:
    assert _problems(check_sku, sku) == {
        "sku": "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    }


def test_name_is_stripped_and_bounded() -> None:
    assert check_name("  Blue mug \t") == "Blue mug"
    assert check_name("n" * MAX_NAME_LENGTH) == "n" * MAX_NAME_LENGTH
    assert check_name(" " + "n" * MAX_NAME_LENGTH + " ") == "n" * MAX_NAME_LENGTH
    for bad in ("", "   ", "n" * (MAX_NAME_LENGTH + 1)):
        assert _problems(check_name, bad) == {"name": "must have 1 to 200 characters, not only spaces"}


def test_description_is_bounded() -> None:
    assert check_description("") == ""
    assert check_description("d" * MAX_DESCRIPTION_LENGTH) == "d" * MAX_DESCRIPTION_LENGTH
    assert _problems(check_description, "d" * (MAX_DESCRIPTION_LENGTH + 1)) == {
        "description": "must have at most 10000 characters"
    }


def test_price_must_be_whole_minor_units_of_the_store_currency_and_not_negative() -> None:
    assert check_price(0, "USD", "USD") == Money(0, "USD")
    assert check_price(MAX_AMOUNT, "USD", "USD") == Money(MAX_AMOUNT, "USD")
    for bad in (-1, MAX_AMOUNT + 1):
        assert _problems(check_price, bad, "USD", "USD") == {"price": "must be from 0 to 1000000000000000"}
    for bad in (12.5, 12.0, True, "1200", None):
        assert _problems(check_price, bad, "USD", "USD") == {"price": "must be an integer number of minor units"}
    for currency in ("EUR", "usd", "", None):
        assert _problems(check_price, 100, currency, "USD") == {"currency": "must be USD, the store's currency"}


def test_stock_bounds() -> None:
    assert check_stock(0) == 0
    assert check_stock(MAX_STOCK) == MAX_STOCK
    for bad in (-1, MAX_STOCK + 1, 1.0, True, "3"):
        assert _problems(check_stock, bad) == {"stock": "must be an integer from 0 to 1000000000"}


def test_update_reports_only_what_changed_and_leaves_the_version_to_the_repository() -> None:
    product = _product()

    changed = product.update({"name": "Big mug", "price": Money(1500, "USD"), "sku": "MUG-1", "active": True}, at=T1)

    assert changed == {"name": ("Mug", "Big mug"), "price": (Money(1200, "USD"), Money(1500, "USD"))}
    assert (product.name, product.price, product.version, product.updated_at) == (
        "Big mug",
        Money(1500, "USD"),
        1,
        T1,
    )


def test_update_without_a_change_keeps_version_and_timestamp() -> None:
    product = _product()

    assert product.update({"name": "Mug", "price": Money(1200, "USD")}, at=T1) == {}
    assert (product.version, product.updated_at) == (1, T0)


def test_check_version() -> None:
    product = _product(version=3)
    product.check_version(None)
    product.check_version(3)
    with pytest.raises(VersionMismatch) as caught:
        product.check_version(2)
    assert caught.value.code == "version_mismatch"
    assert caught.value.details == {"current_version": 3}


def test_adjust_stock_up_and_down() -> None:
    product = _product(stock=5)

    product.adjust_stock(3, at=T1)
    assert (product.stock, product.version, product.updated_at) == (8, 1, T1)
    product.adjust_stock(-8, at=T1)
    assert (product.stock, product.version) == (0, 1)


def test_adjust_stock_below_zero_is_refused_and_changes_nothing() -> None:
    product = _product(stock=2)

    with pytest.raises(InsufficientStock) as caught:
        product.adjust_stock(-3, at=T1)

    assert caught.value.code == "insufficient_stock"
    assert caught.value.details == {"lines": [{"product_id": "prd_1", "sku": "MUG-1", "requested": 3, "available": 2}]}
    assert (product.stock, product.version, product.updated_at) == (2, 1, T0)


def test_adjust_stock_above_the_maximum_is_refused_and_changes_nothing() -> None:
    product = _product(stock=MAX_STOCK)

    with pytest.raises(ValidationFailed) as caught:
        product.adjust_stock(1, at=T1)
    assert caught.value.details == {"fields": {"delta": "would take the stock above 1000000000"}}
    assert (product.stock, product.version) == (MAX_STOCK, 1)
