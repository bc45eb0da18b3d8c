"""parse_event: events that localstripe signs and delivers over HTTP, events signed here with
stripe's own signing helper (what localstripe never sends: charge.refunded), and every way a
signature can be wrong."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import stripe

from adapters.payments.stripe import StripePaymentGateway
from core.domain.errors import Invalid, Unavailable
from core.domain.money import Money
from core.ports.payments import ProviderEvent, ProviderEventKind
from tests.localstripe.fixtures import (  # noqa: F401 - fixtures
    WEBHOOK_SECRET,
    WebhookReceiver,
    localstripe_gateway_fixture,
    localstripe_url_fixture,
    make_gateway,
    webhook_receiver_fixture,
)


def sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, timestamp=timestamp)


def event(type_: str, obj: dict[str, Any], event_id: str = "evt_1") -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": type_, "data": {"object": obj}}).encode()


def gateway(**overrides: Any) -> StripePaymentGateway:
    # parse_event makes no request: the address is never used.
    return make_gateway("http://127.0.0.1:9", **overrides)


INTENT = {
    "id": "pi_123",
    "object": "payment_intent",
    "amount": 2500,
    "currency": "usd",
    "metadata": {"payment_id": "pay_9"},
    "last_payment_error": None,
}


# -- delivered by localstripe ------------------------------------------------------------


async def test_a_delivered_payment_succeeded_event_verifies_and_translates(
    localstripe_gateway: StripePaymentGateway, webhook_receiver: WebhookReceiver
) -> None:
    payment = await localstripe_gateway.create_card_payment(
        amount=Money(2100, "USD"),
        payment_method="pm_card_visa",
        idempotency_key="k-wh-1",
        metadata={"payment_id": "p7"},
    )

    body, signature = await webhook_receiver.next_event("payment_intent.succeeded", payment.reference)
    parsed = localstripe_gateway.parse_event(body, signature)

    assert parsed is not None and parsed.id.startswith("evt_")
    assert parsed == ProviderEvent(
        id=parsed.id,
        kind=ProviderEventKind.PAYMENT_SUCCEEDED,
        payment_reference=payment.reference,
        amount=Money(2100, "USD"),
        metadata={"payment_id": "p7"},
    )
    # The same delivery, one byte changed, does not verify.
    tampered = body.replace(b'"amount": 2100', b'"amount": 2109')
    assert tampered != body
    with pytest.raises(Invalid) as caught:
        localstripe_gateway.parse_event(tampered, signature)
    assert caught.value.code == "invalid_signature"


async def test_a_delivered_payment_failed_event_carries_the_decline_code(
    localstripe_gateway: StripePaymentGateway, webhook_receiver: WebhookReceiver
) -> None:
    payment = await localstripe_gateway.create_card_payment(
        amount=Money(700, "USD"),
        payment_method="pm_card_chargeCustomerFail",
        idempotency_key="k-wh-2",
        metadata={"payment_id": "p8"},
    )

    body, signature = await webhook_receiver.next_event("payment_intent.payment_failed", payment.reference)
    parsed = localstripe_gateway.parse_event(body, signature)

    assert parsed is not None
    assert parsed == ProviderEvent(
        id=parsed.id,
        kind=ProviderEventKind.PAYMENT_FAILED,
        payment_reference=payment.reference,
        amount=Money(700, "USD"),
        failure_code="card_declined",
        metadata={"payment_id": "p8"},
    )
    # Signed with another secret: refused.
    other = gateway(webhook_secret="whsec_another_one")
    with pytest.raises(Invalid) as caught:
        other.parse_event(body, signature)
    assert caught.value.code == "invalid_signature"


# -- signed here ---------------------------------------------------------------------------


def test_payment_failed_prefers_the_decline_code_to_the_error_code() -> None:
    obj = INTENT | {"last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds"}}
    payload = event("payment_intent.payment_failed", obj, "evt_f")

    parsed = gateway().parse_event(payload, sign(payload))

    assert parsed == ProviderEvent(
        id="evt_f",
        kind=ProviderEventKind.PAYMENT_FAILED,
        payment_reference="pi_123",
        amount=Money(2500, "USD"),
        failure_code="insufficient_funds",
        metadata={"payment_id": "pay_9"},
    )


def test_charge_refunded_gives_the_total_refunded_so_far() -> None:
    charge = {
        "id": "ch_1",
        "object": "charge",
        "amount": 2500,
        "amount_refunded": 1000,
        "currency": "usd",
        "payment_intent": "pi_123",
        "metadata": {"payment_id": "pay_9"},
        "refunded": False,
    }
    payload = event("charge.refunded", charge, "evt_r")

    parsed = gateway().parse_event(payload, sign(payload))

    assert parsed == ProviderEvent(
        id="evt_r",
        kind=ProviderEventKind.REFUNDED,
        payment_reference="pi_123",
        amount=Money(1000, "USD"),
        metadata={"payment_id": "pay_9"},
    )


def test_a_refunded_charge_without_a_payment_intent_is_not_ours() -> None:
    charge = {"id": "ch_2", "amount": 100, "amount_refunded": 100, "currency": "usd", "payment_intent": None}
    payload = event("charge.refunded", charge)

    assert gateway().parse_event(payload, sign(payload)) is None


def test_a_well_signed_event_of_another_type_is_ignored() -> None:
    payload = event("customer.created", {"id": "cus_1", "object": "customer"})

    assert gateway().parse_event(payload, sign(payload)) is None


def test_a_signature_just_inside_the_tolerance_verifies() -> None:
    payload = event("payment_intent.succeeded", INTENT)

    parsed = gateway().parse_event(payload, sign(payload, timestamp=int(time.time()) - 290))

    assert parsed is not None and parsed.kind is ProviderEventKind.PAYMENT_SUCCEEDED


@pytest.mark.parametrize(
    ("case", "header"),
    [
        ("stale: 301 s old", lambda p: sign(p, timestamp=int(time.time()) - 301)),
        ("wrong secret", lambda p: sign(p, secret="whsec_someone_else")),
        ("tampered payload", lambda p: sign(p.replace(b"2500", b"2501"))),
        ("missing header", lambda p: None),
        ("empty header", lambda p: ""),
        ("no v1 signature", lambda p: sign(p).replace("v1=", "v0=")),
        ("garbage header", lambda p: "not a signature"),
    ],
)
def test_a_signature_that_does_not_verify_is_invalid(case: str, header: Any) -> None:
    payload = event("payment_intent.succeeded", INTENT)

    with pytest.raises(Invalid) as caught:
        gateway().parse_event(payload, header(payload))

    assert caught.value.code == "invalid_signature"


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"\xff\xfe not utf-8",
        b'{"id": "evt_1", "type": "payment_intent.succeeded"}',  # no data.object
        b'{"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}}',  # no amount
        b"[]",
    ],
)
def test_a_well_signed_payload_that_is_not_an_event_is_invalid(payload: bytes) -> None:
    header = stripe.WebhookSignature.generate_signature_header(
        payload.decode("utf-8", "replace"), WEBHOOK_SECRET
    )  # for the non-UTF-8 case this cannot match: that is the point

    with pytest.raises(Invalid) as caught:
        gateway().parse_event(payload, header)

    assert caught.value.code == "invalid_signature"


def test_without_a_webhook_secret_events_are_refused_as_unavailable() -> None:
    payload = event("payment_intent.succeeded", INTENT)

    with pytest.raises(Unavailable) as caught:
        gateway(webhook_secret=None).parse_event(payload, sign(payload))

    assert caught.value.code == "payment_provider_unavailable"
    assert "webhook_secret" in caught.value.message
