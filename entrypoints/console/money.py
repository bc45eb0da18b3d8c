"""Amounts as staff read and type them: in the currency's major unit (12.50 USD), while the
store and the API keep minor units (1250). ISO 4217 gives each currency its decimals."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# ISO 4217 currencies whose minor unit is not a hundredth (every other has two decimals).
_DECIMALS = {
    **dict.fromkeys(
        (
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    "CLF": 4,
    "UYW": 4,
}


def decimals(currency: str) -> int:
    return _DECIMALS.get(currency.upper(), 2)


def show(amount: int, currency: str) -> str:
    places = decimals(currency)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**places)
    return f"{sign}{major:,}{'.' + str(minor).zfill(places) if places else ''} {currency}"


def parse(text: str, currency: str) -> int:
    """Minor units of what was typed ("12.5" -> 1250 for USD); ValueError, with the reason
    as its message, for anything else (a sign, more decimals than the currency has)."""
    cleaned = text.strip().replace(",", "").removesuffix(currency).strip()
    places = decimals(currency)
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(f"not an amount: type it as 12.50 ({currency})") from None
    if not value.is_finite() or value <= 0:
        raise ValueError("must be more than zero")
    minor = value.scaleb(places)
    if minor != minor.to_integral_value():
        raise ValueError(f"{currency} has {places} decimal places")
    return int(minor)
