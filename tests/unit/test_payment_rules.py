"""The payment state machine: every signal, in any order and any number of times."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from core.domain.errors import ValidationFailed
from core.domain.events import order_payload, payment_payload, refund_payload, rfc3339
from core.domain.money import Money
from core.domain.orders import Order, OrderLine
from core.domain.payments import (
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    RefundStatus,
    check_reason,
    check_reference,
)
from tests.unit.helpers import START

LATER = START + timedelta(seconds=2)
S = PaymentStatus


def payment(status: PaymentStatus = S.PROCESSING) -> Payment:
    return Payment(
        id="pay_1",
        order_id="ord_1",
        method=PaymentMethod.CARD,
        provider="stripe",
        status=status,
        amount=Money(2400, "USD"),
        created_at=START,
        updated_at=START,
        payment_method="pm_card_visa",
    )


@pytest.mark.parametrize(
    ("start", "signal", "moves"),
    [
        (S.PROCESSING, S.SUCCEEDED, True),
        (S.PROCESSING, S.FAILED, True),
        (S.PROCESSING, S.CANCELED, True),
        (S.PROCESSING, S.REQUIRES_ACTION, True),
        (S.REQUIRES_ACTION, S.PROCESSING, True),
        (S.REQUIRES_ACTION, S.SUCCEEDED, True),
        (S.FAILED, S.SUCCEEDED, True),  # the customer confirmed again: the provider captured after all
        (S.FAILED, S.PROCESSING, False),
        (S.FAILED, S.REQUIRES_ACTION, False),
        (S.SUCCEEDED, S.FAILED, False),  # an old decline arriving late
        (S.SUCCEEDED, S.PROCESSING, False),
        (S.SUCCEEDED, S.CANCELED, False),
        (S.CANCELED, S.SUCCEEDED, False),
        *((s, s, False) for s in S),  # the same signal again
    ],
)
def test_a_signal_only_moves_a_payment_forward(start: PaymentStatus, signal: PaymentStatus, moves: bool) -> None:
    p = payment(start)
    assert p.apply(signal, at=LATER) is moves
    assert p.status is (signal if moves else start)
    assert p.updated_at == (LATER if moves else START)


@pytest.mark.parametrize(
    "signals", list(itertools.permutations([S.REQUIRES_ACTION, S.SUCCEEDED, S.FAILED, S.SUCCEEDED, S.PROCESSING]))
)
def test_any_order_of_signals_succeeds_exactly_once(signals: tuple[PaymentStatus, ...]) -> None:
    p = payment()
    moved_to_succeeded = [s for s in signals if p.apply(s, at=LATER) and p.status is S.SUCCEEDED]
    assert moved_to_succeeded == [S.SUCCEEDED]
    assert p.status is S.SUCCEEDED


def test_the_details_of_each_signal_are_kept() -> None:
    p = payment()
    p.apply(
        S.REQUIRES_ACTION,
        at=LATER,
        provider_reference="pi_1",
        client_secret="pi_1_secret",
        next_action={"type": "use_stripe_sdk"},
    )
    assert (p.provider_reference, p.client_secret, p.next_action) == ("pi_1", "pi_1_secret", {"type": "use_stripe_sdk"})

    p.apply(S.FAILED, at=LATER, provider_reference="pi_other", failure_code="authentication_required")
    assert (p.status, p.failure_code, p.next_action, p.provider_reference) == (
        S.FAILED,
        "authentication_required",
        None,
        "pi_1",  # the first reference heard is the payment's
    )
    p.apply(S.SUCCEEDED, at=LATER)
    assert (p.status, p.failure_code) == (S.SUCCEEDED, None)


def test_a_reference_heard_with_a_stale_signal_is_still_kept() -> None:
    p = payment(S.SUCCEEDED)
    assert p.apply(S.PROCESSING, at=LATER, provider_reference="pi_1") is False
    assert (p.status, p.provider_reference, p.updated_at) == (S.SUCCEEDED, "pi_1", LATER)


def test_a_refund_settles_once() -> None:
    refund = Refund(
        id="ref_1",
        payment_id="pay_1",
        order_id="ord_1",
        amount=Money(500, "USD"),
        reason="Broken",
        status=RefundStatus.PENDING,
        created_at=START,
        updated_at=START,
    )
    assert refund.counts
    assert refund.settle(True, at=LATER, provider_reference="re_1") is True
    assert refund.settle(False, at=LATER, failure_code="late") is False
    assert (refund.status, refund.provider_reference, refund.failure_code, refund.updated_at) == (
        RefundStatus.SUCCEEDED,
        "re_1",
        None,
        LATER,
    )
    refund.provider_reference = None  # settled by a webhook, which does not name the refund
    assert refund.settle(True, at=LATER, provider_reference="re_1") is False
    assert (refund.status, refund.provider_reference) == (RefundStatus.SUCCEEDED, "re_1")
    failed = Refund("ref_2", "pay_1", "ord_1", Money(1, "USD"), "x", RefundStatus.PENDING, START, START)
    assert failed.settle(False, at=LATER, failure_code="charge_disputed") is True
    assert (failed.status, failed.failure_code, failed.counts) == (RefundStatus.FAILED, "charge_disputed", False)


@pytest.mark.parametrize(("text", "ok"), [("  Till 4, receipt 17 ", "Till 4, receipt 17"), ("x" * 200, "x" * 200)])
def test_manual_references_and_reasons_are_trimmed_text(text: str, ok: str) -> None:
    assert check_reference(text) == ok
    assert check_reason(text) == ok


@pytest.mark.parametrize("text", [None, "", "   ", "x" * 201])
def test_a_manual_reference_has_1_to_200_characters(text: str | None) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_reference(text)
    assert caught.value.details == {"fields": {"reference": "must have 1 to 200 characters"}}


# Event payloads: the shapes of PRODUCT.md, JSON-ready, no secrets.
def test_payloads_are_the_api_shapes() -> None:
    order = Order.place(
        id="ord_1",
        customer_id="usr_1",
        lines=[OrderLine("prd_1", "MUG-1", "Mug", Money(1200, "USD"), 2)],
        currency="USD",
        at=START,
        expires_at=START + timedelta(minutes=30),
    )
    assert order_payload(order) == {
        "id": "ord_1",
        "customer_id": "usr_1",
        "status": "pending_payment",
        "items": [
            {
                "product_id": "prd_1",
                "sku": "MUG-1",
                "name": "Mug",
                "unit_price": 1200,
                "quantity": 2,
                "line_total": 2400,
            }
        ],
        "subtotal": 2400,
        "total": 2400,
        "amount_paid": 0,
        "amount_refunded": 0,
        "currency": "USD",
        "created_at": "2026-01-01T00:00:00.000000Z",
        "updated_at": "2026-01-01T00:00:00.000000Z",
        "expires_at": "2026-01-01T00:30:00.000000Z",
    }
    p = payment(S.REQUIRES_ACTION)
    p.client_secret = "pi_1_secret"
    body = payment_payload(p)
    assert "client_secret" not in body
    assert body["amount"] == 2400
    assert body["currency"] == "USD"
    refund = Refund("ref_1", "pay_1", "ord_1", Money(500, "USD"), "Broken", RefundStatus.SUCCEEDED, START, START)
    assert refund_payload(refund)["status"] == "succeeded"
    assert rfc3339(START) == "2026-01-01T00:00:00.000000Z"
