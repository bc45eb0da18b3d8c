"""StripePaymentGateway against localstripe: card payments, 3-D Secure, look-ups, refunds and
the errors Stripe answers. Retries and the breaker: test_stripe_resilience.py; webhooks:
test_stripe_webhooks.py."""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp
import pytest

from adapters.payments.breaker import BreakerState
from adapters.payments.stripe import StripePaymentGateway
from core.domain.errors import Invalid
from core.domain.money import Money
from core.ports.payments import ProviderPaymentStatus, ProviderRefund
from tests.localstripe.fixtures import (  # noqa: F401 - fixtures
    SECRET_KEY,
    THREE_D_SECURE_CARD,
    authenticate_payment,
    create_card_payment_method,
    localstripe_gateway_fixture,
    localstripe_url_fixture,
    make_gateway,
)

_keys = itertools.count(1)


def key() -> str:
    return f"pay_test_{next(_keys):06d}"


async def stripe_get(api_base: str, path: str) -> dict[str, Any]:
    """What localstripe itself holds (not through the adapter)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{api_base}{path}", headers={"Authorization": f"Bearer {SECRET_KEY}"}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def test_a_good_card_is_charged(localstripe_gateway: StripePaymentGateway, localstripe_url: str) -> None:
    payment = await localstripe_gateway.create_card_payment(
        amount=Money(1999, "USD"), payment_method="pm_card_visa", idempotency_key=key(), metadata={"payment_id": "p1"}
    )

    assert payment.reference.startswith("pi_")
    assert payment.status is ProviderPaymentStatus.SUCCEEDED
    assert payment.amount == Money(1999, "USD")
    assert (payment.client_secret, payment.next_action, payment.failure_code) == (None, None, None)
    intent = await stripe_get(localstripe_url, f"/v1/payment_intents/{payment.reference}")
    assert (intent["amount"], intent["currency"], intent["metadata"]) == (1999, "usd", {"payment_id": "p1"})
    assert intent["latest_charge"]["captured"] is True


async def test_a_declined_card_is_a_failed_payment_with_the_decline_code(
    localstripe_gateway: StripePaymentGateway,
) -> None:
    payment = await localstripe_gateway.create_card_payment(
        amount=Money(500, "USD"), payment_method="pm_card_chargeCustomerFail", idempotency_key=key(), metadata={}
    )

    assert payment.status is ProviderPaymentStatus.FAILED
    assert payment.failure_code == "card_declined"
    assert payment.failure_message == "Your card was declined."
    assert payment.amount == Money(500, "USD")
    # localstripe names only the charge in its 402; the adapter found the PaymentIntent.
    assert payment.reference.startswith("pi_")
    again = await localstripe_gateway.get_payment(payment.reference)
    assert (again.status, again.failure_code, again.amount) == (
        ProviderPaymentStatus.FAILED,
        "card_declined",
        Money(500, "USD"),
    )


async def test_a_3d_secure_card_requires_action_then_succeeds(
    localstripe_gateway: StripePaymentGateway, localstripe_url: str
) -> None:
    card = await create_card_payment_method(localstripe_url, THREE_D_SECURE_CARD)

    payment = await localstripe_gateway.create_card_payment(
        amount=Money(4200, "USD"), payment_method=card, idempotency_key=key(), metadata={}
    )

    assert payment.status is ProviderPaymentStatus.REQUIRES_ACTION
    assert payment.client_secret is not None and payment.client_secret.startswith(payment.reference + "_secret_")
    assert payment.next_action == {
        "type": "use_stripe_sdk",
        "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": ""},
    }
    assert type(payment.next_action) is dict  # plain data, not a StripeObject
    assert payment.failure_code is None

    await authenticate_payment(localstripe_url, payment.reference, payment.client_secret, success=True)
    after = await localstripe_gateway.get_payment(payment.reference)
    assert (after.status, after.client_secret, after.next_action) == (ProviderPaymentStatus.SUCCEEDED, None, None)


async def test_a_failed_3d_secure_authentication_is_a_failed_payment(
    localstripe_gateway: StripePaymentGateway, localstripe_url: str
) -> None:
    card = await create_card_payment_method(localstripe_url, THREE_D_SECURE_CARD)
    payment = await localstripe_gateway.create_card_payment(
        amount=Money(4200, "USD"), payment_method=card, idempotency_key=key(), metadata={}
    )
    assert payment.client_secret is not None

    await authenticate_payment(localstripe_url, payment.reference, payment.client_secret, success=False)

    after = await localstripe_gateway.get_payment(payment.reference)
    assert (after.status, after.failure_code) == (
        ProviderPaymentStatus.FAILED,
        "payment_intent_authentication_failure",
    )


async def test_get_payment_reports_the_payment_as_created(localstripe_gateway: StripePaymentGateway) -> None:
    created = await localstripe_gateway.create_card_payment(
        amount=Money(1234, "USD"), payment_method="pm_card_visa", idempotency_key=key(), metadata={}
    )

    assert await localstripe_gateway.get_payment(created.reference) == created


async def test_a_full_refund(localstripe_gateway: StripePaymentGateway, localstripe_url: str) -> None:
    payment = await localstripe_gateway.create_card_payment(
        amount=Money(3000, "USD"), payment_method="pm_card_visa", idempotency_key=key(), metadata={}
    )

    refund = await localstripe_gateway.refund(
        payment_reference=payment.reference, amount=Money(3000, "USD"), idempotency_key=key()
    )

    assert refund.reference.startswith("re_")
    assert refund == ProviderRefund(
        reference=refund.reference, payment_reference=payment.reference, amount=Money(3000, "USD"), succeeded=True
    )
    charge = (await stripe_get(localstripe_url, f"/v1/payment_intents/{payment.reference}"))["latest_charge"]
    assert (charge["amount_refunded"], charge["refunded"]) == (3000, True)


async def test_partial_refunds_add_up(localstripe_gateway: StripePaymentGateway, localstripe_url: str) -> None:
    payment = await localstripe_gateway.create_card_payment(
        amount=Money(5000, "USD"), payment_method="pm_card_visa", idempotency_key=key(), metadata={}
    )

    first = await localstripe_gateway.refund(
        payment_reference=payment.reference, amount=Money(1500, "USD"), idempotency_key=key()
    )
    second = await localstripe_gateway.refund(
        payment_reference=payment.reference, amount=Money(2000, "USD"), idempotency_key=key()
    )

    assert (first.amount, second.amount) == (Money(1500, "USD"), Money(2000, "USD"))
    assert first.reference != second.reference
    assert first.succeeded and second.succeeded
    charge = (await stripe_get(localstripe_url, f"/v1/payment_intents/{payment.reference}"))["latest_charge"]
    assert (charge["amount_refunded"], charge["refunded"]) == (3500, False)


async def test_refunding_a_failed_payment_is_invalid(localstripe_gateway: StripePaymentGateway) -> None:
    payment = await localstripe_gateway.create_card_payment(
        amount=Money(500, "USD"), payment_method="pm_card_chargeCustomerFail", idempotency_key=key(), metadata={}
    )

    with pytest.raises(Invalid) as caught:
        await localstripe_gateway.refund(
            payment_reference=payment.reference, amount=Money(500, "USD"), idempotency_key=key()
        )

    assert caught.value.code == "payment_request_invalid"
    assert caught.value.message == "Cannot refund a failed payment."
    assert caught.value.details == {"provider_status": 400}


async def test_an_unknown_payment_method_is_invalid_and_not_a_provider_failure(localstripe_url: str) -> None:
    gateway = make_gateway(localstripe_url, breaker_threshold=2)
    try:
        for _ in range(3):
            with pytest.raises(Invalid) as caught:
                await gateway.create_card_payment(
                    amount=Money(100, "USD"), payment_method="pm_nothing_like_this", idempotency_key=key(), metadata={}
                )
            assert caught.value.code == "payment_request_invalid"
            assert caught.value.details == {"provider_status": 404}
        assert gateway.breaker.state is BreakerState.CLOSED
    finally:
        await gateway.close()


async def test_refused_credentials_are_invalid_and_the_message_holds_no_key(localstripe_url: str) -> None:
    gateway = make_gateway(localstripe_url, secret_key="rk_live_not_a_secret_key", breaker_threshold=1)
    try:
        with pytest.raises(Invalid) as caught:
            await gateway.get_payment("pi_anything")
        assert caught.value.code == "payment_request_invalid"
        assert caught.value.details == {"provider_status": 401}
        assert "rk_live" not in caught.value.message and "rk_live" not in str(caught.value.details)
        assert caught.value.message == (
            "The payment provider refused this store's credentials; check [stripe] secret_key."
        )
        assert gateway.breaker.state is BreakerState.CLOSED
    finally:
        await gateway.close()


async def test_an_unknown_payment_is_invalid(localstripe_gateway: StripePaymentGateway) -> None:
    with pytest.raises(Invalid) as caught:
        await localstripe_gateway.get_payment("pi_doesnotexist")
    assert caught.value.code == "payment_request_invalid"
    assert caught.value.details == {"provider_status": 404}


async def test_another_currency_is_refused_before_any_request() -> None:
    # Port 9 (discard) is closed here: a request would fail as unavailable, not as invalid.
    gateway = make_gateway("http://127.0.0.1:9")
    try:
        with pytest.raises(Invalid) as caught:
            await gateway.create_card_payment(
                amount=Money(100, "EUR"), payment_method="pm_card_visa", idempotency_key=key(), metadata={}
            )
        assert caught.value.code == "currency_mismatch"
        with pytest.raises(Invalid) as caught:
            await gateway.refund(payment_reference="pi_x", amount=Money(100, "EUR"), idempotency_key=key())
        assert caught.value.code == "currency_mismatch"
    finally:
        await gateway.close()


async def test_the_gateway_is_available(localstripe_gateway: StripePaymentGateway) -> None:
    assert localstripe_gateway.available is True
