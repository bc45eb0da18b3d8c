"""The gateway of a store without a Stripe key: every call is a clear 503, never a crash."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters.payments.unconfigured import UnconfiguredPaymentGateway
from core.domain.errors import Unavailable
from core.domain.money import Money

gateway = UnconfiguredPaymentGateway()

CALLS: dict[str, Callable[[], Awaitable[Any]]] = {
    "create_card_payment": lambda: gateway.create_card_payment(
        amount=Money(100, "USD"), payment_method="pm_card_visa", idempotency_key="k", metadata={}
    ),
    "get_payment": lambda: gateway.get_payment("pi_1"),
    "refund": lambda: gateway.refund(payment_reference="pi_1", amount=Money(100, "USD"), idempotency_key="k"),
}


def test_it_says_it_is_not_available() -> None:
    assert gateway.available is False


@pytest.mark.parametrize("call", list(CALLS))
async def test_every_call_is_unavailable_without_a_retry_hint(call: str) -> None:
    with pytest.raises(Unavailable) as caught:
        await CALLS[call]()

    assert caught.value.code == "payment_provider_unavailable"
    assert caught.value.retry_after is None
    assert caught.value.message == "Card payments are not configured on this store (no Stripe secret key)."


def test_webhooks_are_unavailable_so_that_stripe_retries_them() -> None:
    with pytest.raises(Unavailable) as caught:
        gateway.parse_event(b'{"id": "evt_1"}', "t=1,v1=00")

    assert caught.value.code == "payment_provider_unavailable"


def test_the_stripe_package_is_not_loaded_for_it() -> None:
    import subprocess
    import sys

    code = "import sys, adapters.payments.unconfigured; print('stripe' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "False"
