"""The payment provider, as the core sees it: create a card payment, refund, look one up,
and read the provider's signed notifications. Adapters: Stripe; the manual provider
(cash, bank transfer, invoice) needs no gateway, staff record those payments directly."""

from __future__ import annotations

import enum
from typing import Any, Protocol

import attrs

from core.domain.money import Money


class ProviderPaymentStatus(enum.StrEnum):
    """What the provider says of a payment, in our vocabulary."""

    REQUIRES_ACTION = "requires_action"  # the customer must do something (3-D Secure)
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


@attrs.frozen
class ProviderPayment:
    """A payment as the provider reports it (the answer to a create or a look-up)."""

    reference: str  # the provider's id, e.g. Stripe's PaymentIntent id "pi_..."
    status: ProviderPaymentStatus
    amount: Money
    client_secret: str | None = None  # for the client to finish a payment that requires action
    next_action: dict[str, Any] | None = None
    failure_code: str | None = None  # e.g. Stripe's decline code, when status is FAILED
    failure_message: str | None = None


@attrs.frozen
class ProviderRefund:
    reference: str  # e.g. Stripe's refund id "re_..."
    payment_reference: str
    amount: Money
    succeeded: bool
    failure_code: str | None = None  # set when the refund failed; not succeeded and no code: still pending

    @property
    def pending(self) -> bool:
        """Accepted by the provider but not done yet (e.g. Stripe's "pending"): neither
        money back nor a failure. Its notification, or asking again, settles it."""
        return not self.succeeded and self.failure_code is None


class ProviderEventKind(enum.StrEnum):
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    REFUNDED = "refunded"  # one or more refunds of a payment; amount_refunded is the total so far


@attrs.frozen
class ProviderEvent:
    """A verified notification from the provider (a webhook)."""

    id: str  # the provider's event id: each is applied at most once
    kind: ProviderEventKind
    payment_reference: str
    amount: Money | None = None  # the payment's amount (payment events) or total refunded (REFUNDED)
    failure_code: str | None = None
    metadata: dict[str, str] = attrs.Factory(dict)  # what we attached at creation (our payment id)


class PaymentGateway(Protocol):
    """All calls go over the network: callers never hold a database transaction across
    them, and they pass an idempotency key saved before the call, reused on every retry."""

    @property
    def available(self) -> bool:
        """False when the provider is not configured; calls then raise Unavailable."""

    async def create_card_payment(
        self, *, amount: Money, payment_method: str, idempotency_key: str, metadata: dict[str, str]
    ) -> ProviderPayment:
        """Create and confirm a card payment. A decline is a ProviderPayment with status
        FAILED and the decline code, not an exception. Raises Unavailable
        (code payment_provider_unavailable, with retry_after) when the provider cannot be
        reached after retries, or while the circuit breaker is open; Invalid for a request
        the provider refuses as malformed (e.g. an unknown payment method)."""

    async def get_payment(self, reference: str) -> ProviderPayment:
        """The payment's current state at the provider (for reconciliation)."""

    async def refund(self, *, payment_reference: str, amount: Money, idempotency_key: str) -> ProviderRefund:
        """Refund part or all of a captured payment. Raises like create_card_payment."""

    def parse_event(self, payload: bytes, signature_header: str | None) -> ProviderEvent | None:
        """Verify the signature (and its age) of a notification and translate it. Raises
        Invalid (code invalid_signature) if it does not verify; returns None for a
        well-signed event of a kind we do not handle (the caller answers 200 and ignores it)."""
