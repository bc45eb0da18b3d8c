"""The PaymentGateway contract: what every adapter of the port promises, so that the core's
unit tests (which run on a fake) say something true of Stripe.

Each adapter joins with a harness: how to build it, which payment methods succeed, are
declined or require action, and how its provider signs a notification.

Adapters: the Stripe adapter on localstripe, and FakePaymentGateway (tests/fakes.py), the
provider the core's unit tests run on. Error codes may differ between them (the fake says
``payment_method_invalid`` where Stripe's adapter says ``payment_request_invalid``); the
kind of error may not.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any, Protocol

import pytest
import stripe

from adapters.payments.stripe import StripePaymentGateway
from core.domain.errors import Invalid
from core.domain.money import Money
from core.ports.payments import PaymentGateway, ProviderEventKind, ProviderPaymentStatus
from tests.fakes import FakePaymentGateway, FixedClock
from tests.localstripe.fixtures import (  # noqa: F401 - fixtures
    THREE_D_SECURE_CARD,
    WEBHOOK_SECRET,
    create_card_payment_method,
    localstripe_url_fixture,
    make_gateway,
)


class Harness(Protocol):
    gateway: PaymentGateway
    good_card: str
    declined_card: str
    decline_code: str

    async def card_requiring_action(self) -> str: ...

    def signed_event(
        self,
        kind: str,
        *,
        event_id: str,
        reference: str,
        amount: int,
        failure_code: str | None = None,
        metadata: dict[str, str] | None = None,
        age_seconds: int = 0,
    ) -> tuple[bytes, str]:
        """A notification as this provider sends it: (body, signature header), signed
        ``age_seconds`` ago. ``kind`` is a ProviderEventKind value or "other" (a kind the
        port does not handle)."""
        ...


class StripeHarness:
    good_card = "pm_card_visa"
    declined_card = "pm_card_chargeCustomerFail"
    decline_code = "card_declined"

    def __init__(self, api_base: str) -> None:
        self.api_base = api_base
        self.stripe_gateway: StripePaymentGateway = make_gateway(api_base)
        self.gateway: PaymentGateway = self.stripe_gateway

    async def card_requiring_action(self) -> str:
        return await create_card_payment_method(self.api_base, THREE_D_SECURE_CARD)

    def signed_event(
        self,
        kind: str,
        *,
        event_id: str,
        reference: str,
        amount: int,
        failure_code: str | None = None,
        metadata: dict[str, str] | None = None,
        age_seconds: int = 0,
    ) -> tuple[bytes, str]:
        stripe_kind = {
            ProviderEventKind.PAYMENT_SUCCEEDED: "payment_intent.succeeded",
            ProviderEventKind.PAYMENT_FAILED: "payment_intent.payment_failed",
            "other": "customer.created",
        }[kind]
        obj = {
            "id": reference,
            "object": "payment_intent",
            "amount": amount,
            "currency": "usd",
            "metadata": metadata or {},
            "last_payment_error": {"code": failure_code} if failure_code else None,
        }
        body = json.dumps({"id": event_id, "object": "event", "type": stripe_kind, "data": {"object": obj}})
        signed_at = int(time.time()) - age_seconds  # stripe checks the age against the system clock
        return body.encode(), stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET, signed_at)


class FakeHarness:
    good_card = "pm_card_visa"
    declined_card = "pm_card_chargeDeclined"
    decline_code = "generic_decline"

    def __init__(self) -> None:
        self.clock = FixedClock()
        self.fake = FakePaymentGateway(self.clock)
        self.gateway: PaymentGateway = self.fake

    async def card_requiring_action(self) -> str:
        return "pm_card_threeDSecure2Required"

    def signed_event(
        self,
        kind: str,
        *,
        event_id: str,
        reference: str,
        amount: int,
        failure_code: str | None = None,
        metadata: dict[str, str] | None = None,
        age_seconds: int = 0,
    ) -> tuple[bytes, str]:
        body = {
            "id": event_id,
            "type": "customer.created" if kind == "other" else kind,
            "payment_reference": reference,
            "amount": amount,
            "currency": "USD",
            "failure_code": failure_code,
            "metadata": metadata or {},
        }
        payload = json.dumps(body).encode()
        return payload, self.fake.sign(payload, at=self.clock.now() - timedelta(seconds=age_seconds))


@contextlib.asynccontextmanager
async def _stripe(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    harness = StripeHarness(request.getfixturevalue("localstripe_url"))
    try:
        yield harness
    finally:
        await harness.stripe_gateway.close()


@contextlib.asynccontextmanager
async def _fake(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    yield FakeHarness()


ADAPTERS: dict[str, Callable[[pytest.FixtureRequest], contextlib.AbstractAsyncContextManager[Harness]]] = {
    "fake": _fake,
    "stripe": _stripe,
}


@pytest.fixture(params=list(ADAPTERS))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with ADAPTERS[request.param](request) as made:
        yield made


_keys = iter(range(1, 1_000_000))


def key() -> str:
    return f"pay_contract_{next(_keys):06d}"


async def test_it_is_available(harness: Harness) -> None:
    assert harness.gateway.available is True


async def test_a_good_card_succeeds_and_can_be_looked_up(harness: Harness) -> None:
    payment = await harness.gateway.create_card_payment(
        amount=Money(2500, "USD"), payment_method=harness.good_card, idempotency_key=key(), metadata={"p": "1"}
    )

    assert payment.status is ProviderPaymentStatus.SUCCEEDED
    assert payment.amount == Money(2500, "USD")
    assert payment.reference != ""
    assert (payment.client_secret, payment.next_action, payment.failure_code) == (None, None, None)
    assert await harness.gateway.get_payment(payment.reference) == payment


async def test_a_decline_is_a_failed_payment_with_a_code_not_an_exception(harness: Harness) -> None:
    payment = await harness.gateway.create_card_payment(
        amount=Money(900, "USD"), payment_method=harness.declined_card, idempotency_key=key(), metadata={}
    )

    assert payment.status is ProviderPaymentStatus.FAILED
    assert payment.failure_code == harness.decline_code
    assert payment.amount == Money(900, "USD")
    looked_up = await harness.gateway.get_payment(payment.reference)
    assert (looked_up.status, looked_up.failure_code) == (ProviderPaymentStatus.FAILED, harness.decline_code)


async def test_a_card_that_needs_3d_secure_requires_action(harness: Harness) -> None:
    card = await harness.card_requiring_action()

    payment = await harness.gateway.create_card_payment(
        amount=Money(1200, "USD"), payment_method=card, idempotency_key=key(), metadata={}
    )

    assert payment.status is ProviderPaymentStatus.REQUIRES_ACTION
    assert isinstance(payment.client_secret, str) and payment.client_secret != ""
    assert type(payment.next_action) is dict and payment.next_action != {}
    assert payment.failure_code is None


async def test_refunds_are_for_the_amount_asked(harness: Harness) -> None:
    payment = await harness.gateway.create_card_payment(
        amount=Money(4000, "USD"), payment_method=harness.good_card, idempotency_key=key(), metadata={}
    )

    first = await harness.gateway.refund(
        payment_reference=payment.reference, amount=Money(1000, "USD"), idempotency_key=key()
    )
    rest = await harness.gateway.refund(
        payment_reference=payment.reference, amount=Money(3000, "USD"), idempotency_key=key()
    )

    assert (first.payment_reference, first.amount, first.succeeded) == (payment.reference, Money(1000, "USD"), True)
    assert (rest.payment_reference, rest.amount, rest.succeeded) == (payment.reference, Money(3000, "USD"), True)
    assert first.reference != rest.reference


async def test_an_unknown_payment_method_is_invalid(harness: Harness) -> None:
    with pytest.raises(Invalid):
        await harness.gateway.create_card_payment(
            amount=Money(100, "USD"), payment_method="pm_no_such_method", idempotency_key=key(), metadata={}
        )


async def test_an_unknown_payment_is_invalid(harness: Harness) -> None:
    with pytest.raises(Invalid):
        await harness.gateway.get_payment("pi_no_such_payment")


async def test_a_signed_notification_is_verified_and_translated(harness: Harness) -> None:
    body, header = harness.signed_event(
        ProviderEventKind.PAYMENT_SUCCEEDED,
        event_id="evt_c1",
        reference="pi_c1",
        amount=1500,
        metadata={"payment_id": "pay_1"},
    )

    event = harness.gateway.parse_event(body, header)

    assert event is not None
    assert (event.id, event.kind, event.payment_reference, event.amount, event.metadata) == (
        "evt_c1",
        ProviderEventKind.PAYMENT_SUCCEEDED,
        "pi_c1",
        Money(1500, "USD"),
        {"payment_id": "pay_1"},
    )


async def test_a_failure_notification_carries_the_failure_code(harness: Harness) -> None:
    body, header = harness.signed_event(
        ProviderEventKind.PAYMENT_FAILED, event_id="evt_c2", reference="pi_c2", amount=800, failure_code="card_declined"
    )

    event = harness.gateway.parse_event(body, header)

    assert event is not None
    assert (event.kind, event.payment_reference, event.amount, event.failure_code) == (
        ProviderEventKind.PAYMENT_FAILED,
        "pi_c2",
        Money(800, "USD"),
        "card_declined",
    )


async def test_a_well_signed_notification_of_another_kind_is_ignored(harness: Harness) -> None:
    body, header = harness.signed_event("other", event_id="evt_c3", reference="cus_1", amount=0)

    assert harness.gateway.parse_event(body, header) is None


@pytest.mark.parametrize(
    "spoil",
    [
        lambda body, header: (body.replace(b"1500", b"1501"), header),
        lambda body, header: (body, None),
        lambda body, header: (body, ""),
        lambda body, header: (body, header.replace("v1=", "v0=")),
        lambda body, header: (b"{not json", header),
    ],
    ids=["tampered", "no header", "empty header", "no v1 signature", "not json"],
)
async def test_a_notification_that_does_not_verify_is_invalid(harness: Harness, spoil: Any) -> None:
    signed = harness.signed_event(
        ProviderEventKind.PAYMENT_SUCCEEDED, event_id="evt_c4", reference="pi_c4", amount=1500
    )
    body, header = spoil(*signed)

    with pytest.raises(Invalid) as caught:
        harness.gateway.parse_event(body, header)

    assert caught.value.code == "invalid_signature"


async def test_a_notification_signed_more_than_300_seconds_ago_is_invalid(harness: Harness) -> None:
    fresh = harness.signed_event(
        ProviderEventKind.PAYMENT_SUCCEEDED, event_id="evt_c5", reference="pi_c5", amount=1500, age_seconds=290
    )
    stale = harness.signed_event(
        ProviderEventKind.PAYMENT_SUCCEEDED, event_id="evt_c5", reference="pi_c5", amount=1500, age_seconds=301
    )

    assert harness.gateway.parse_event(*fresh) is not None
    with pytest.raises(Invalid) as caught:
        harness.gateway.parse_event(*stale)
    assert caught.value.code == "invalid_signature"
